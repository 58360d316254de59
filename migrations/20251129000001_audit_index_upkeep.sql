-- Cheaper index upkeep for the audit log, which is written on every turn and
-- read rarely. Measured with bench/gateway.sh (README, "Gateway overhead"):
-- B-tree inserts were about 40% of PostgreSQL's CPU per audited request.
--
-- * Time keys ascend. With `occurred_at DESC` every new event landed at the
--   left edge of its tenant's range, so each insert descended the tree and
--   every full page split in half; ascending keys append at the right edge.
--   Scans read the index backwards for newest-first pages at the same cost.
-- * Keys that are unique in practice skip deduplication, a pass over every
--   full page that could never merge anything.
-- * Model and key are facts of the whole request: they are indexed on each
--   request's `request` event only (the gateway writes it first), and the
--   model and key filters find their requests there (audit/src/query.rs).
-- * The categories index holds only the rows that name a category.

DROP INDEX audit_events_tenant_time;
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, occurred_at, event_id)
    WITH (deduplicate_items = off);

DROP INDEX audit_events_tenant_decision;
CREATE INDEX audit_events_tenant_decision ON audit_events (tenant_id, decision, occurred_at)
    WITH (deduplicate_items = off) WHERE decision IS NOT NULL;

DROP INDEX audit_events_tenant_model;
CREATE INDEX audit_events_request_model ON audit_events (tenant_id, model, occurred_at)
    WITH (deduplicate_items = off) WHERE kind = 'request';

DROP INDEX audit_events_tenant_key;
CREATE INDEX audit_events_request_key ON audit_events (tenant_id, key_id, occurred_at)
    WITH (deduplicate_items = off) WHERE kind = 'request';

DROP INDEX audit_events_categories;
CREATE INDEX audit_events_categories ON audit_events USING gin (categories)
    WHERE categories <> '{}';
