-- Warden audit schema: the hash-chained event log (partitioned by month),
-- policy texts stored once per version, writer streams, retention
-- checkpoints, and the API keys the gateway authenticates against.
-- See audit/README.md for the model and the canonical form.

-- Policy documents, once per (id, version); events refer to them by id and version.
CREATE TABLE audit_policies (
    policy_id   text        NOT NULL,
    version     text        NOT NULL,
    body        text        NOT NULL,
    body_sha256 bytea       NOT NULL CHECK (octet_length(body_sha256) = 32),
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, version)
);

-- One row per writer stream (a gateway instance's writer from start to stop).
CREATE TABLE audit_streams (
    stream_id   uuid        PRIMARY KEY,
    instance_id text        NOT NULL,
    started_at  timestamptz NOT NULL
);

-- The event log. Every row is one link of its stream's hash chain.
-- `kind`, `checkpoint`, `decision` and `categories` are derived from `body`
-- for indexing; verification checks that they still agree with it.
CREATE TABLE audit_events (
    event_id       uuid        NOT NULL,
    stream_id      uuid        NOT NULL,
    seq            bigint      NOT NULL CHECK (seq > 0),
    recorded_at    timestamptz NOT NULL,
    occurred_at    timestamptz NOT NULL,
    tenant_id      text        NOT NULL,
    key_id         text,
    request_id     text        NOT NULL,
    model          text,
    policy_id      text,
    policy_version text,
    trace_id       text,
    kind           text        NOT NULL
        CHECK (kind IN ('request', 'message', 'guard_verdict', 'tool_call', 'decision')),
    checkpoint     text
        CHECK (checkpoint IN ('input', 'output', 'tool_call', 'tool_result')),
    decision       text
        CHECK (decision IN ('allowed', 'flagged', 'blocked', 'unguarded', 'error')),
    categories     text[]      NOT NULL DEFAULT '{}',
    body           jsonb       NOT NULL,
    prev_hash      bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           bytea       NOT NULL CHECK (octet_length(hash) = 32),
    CHECK ((policy_id IS NULL) = (policy_version IS NULL)),
    -- The partition key must be part of every unique constraint; a replayed
    -- event carries the same recorded_at, so (stream, seq) stays idempotent.
    PRIMARY KEY (stream_id, seq, recorded_at)
) PARTITION BY RANGE (recorded_at);

CREATE INDEX audit_events_tenant_time    ON audit_events (tenant_id, occurred_at DESC, event_id DESC);
CREATE INDEX audit_events_tenant_request ON audit_events (tenant_id, request_id);
CREATE INDEX audit_events_tenant_decision ON audit_events (tenant_id, decision, occurred_at DESC)
    WHERE decision IS NOT NULL;
CREATE INDEX audit_events_tenant_model   ON audit_events (tenant_id, model, occurred_at DESC);
CREATE INDEX audit_events_tenant_key     ON audit_events (tenant_id, key_id, occurred_at DESC);
CREATE INDEX audit_events_categories     ON audit_events USING gin (categories);
-- Chain walks use the primary key (stream_id, seq, …); no further index
-- is kept, so each insert maintains as few as the queries need.

-- Catches rows outside every monthly partition so an insert never fails.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- Retention checkpoints: the last link of each stream's pruned range, so the
-- remaining chain can be verified from there.
CREATE TABLE audit_checkpoints (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id     uuid        NOT NULL,
    seq           bigint      NOT NULL,
    hash          bytea       NOT NULL CHECK (octet_length(hash) = 32),
    event_id      uuid        NOT NULL,
    pruned_before timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_checkpoints_stream ON audit_checkpoints (stream_id, seq DESC);

-- API keys: only the SHA-256 of a key is stored.
CREATE TABLE api_keys (
    key_id     text        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    key_sha256 bytea       NOT NULL UNIQUE CHECK (octet_length(key_sha256) = 32),
    admin      boolean     NOT NULL DEFAULT false,
    label      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
