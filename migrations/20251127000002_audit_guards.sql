-- Append-only enforcement, partition management, retention, roles and the
-- per-kind views. Idempotent where it touches cluster-wide objects (roles),
-- because many databases of one cluster may run this migration.

-- Rejects UPDATE, DELETE and TRUNCATE on audit tables unless the session is
-- the retention job (audit_prune sets warden.audit_retention for its own
-- transaction). Privileges keep the gateway role out in any case; this
-- trigger also stops the owner and administrators from editing by accident.
CREATE FUNCTION audit_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('warden.audit_retention', true) = 'on' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        ELSE
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit table % is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the retention job (audit_prune) may remove audit rows';
END;
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_reject_mutation();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_mutation();
CREATE TRIGGER audit_events_default_no_truncate BEFORE TRUNCATE ON audit_events_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_mutation();

CREATE TRIGGER audit_policies_append_only BEFORE UPDATE OR DELETE ON audit_policies
    FOR EACH ROW EXECUTE FUNCTION audit_reject_mutation();
CREATE TRIGGER audit_policies_no_truncate BEFORE TRUNCATE ON audit_policies
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_mutation();

CREATE TRIGGER audit_streams_append_only BEFORE UPDATE OR DELETE ON audit_streams
    FOR EACH ROW EXECUTE FUNCTION audit_reject_mutation();
CREATE TRIGGER audit_streams_no_truncate BEFORE TRUNCATE ON audit_streams
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_mutation();

CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_reject_mutation();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_mutation();

-- Creates the monthly partitions (UTC months) from the month of `from_ts` up
-- to `months_ahead` months later. Runs as the schema owner so the gateway
-- role can call it without owning the table. Returns how many it created.
CREATE FUNCTION audit_ensure_partitions(from_ts timestamptz, months_ahead integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    month_start timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz;
    part_name   text;
    created     integer := 0;
BEGIN
    FOR i IN 0..greatest(months_ahead, 0) LOOP
        month_end := ((month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part_name := 'audit_events_' || to_char(month_start AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
        IF to_regclass(part_name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                               part_name, month_start, month_end);
                created := created + 1;
            EXCEPTION
                WHEN duplicate_table THEN
                    NULL; -- another instance created it concurrently
                WHEN check_violation THEN
                    -- The default partition already holds rows of this month;
                    -- they stay there (audit_prune cleans the default too).
                    RAISE WARNING 'audit partition % not created: default partition holds rows of that month', part_name;
            END;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END;
$$;

-- Retention: drops every monthly partition that ends at or before the start
-- of the UTC month of `before`, deletes older rows from the default
-- partition, and first records, per stream, the last link of the pruned
-- range in audit_checkpoints so verification can resume from it.
CREATE FUNCTION audit_prune(before timestamptz)
RETURNS TABLE (cutoff timestamptz, partitions_dropped integer, checkpoints_recorded integer, default_rows_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    cut     timestamptz := date_trunc('month', before AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part    record;
    dropped integer := 0;
    cps     integer;
    deleted bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('warden.audit_prune'));
    PERFORM set_config('warden.audit_retention', 'on', true);

    INSERT INTO audit_checkpoints (stream_id, seq, hash, event_id, pruned_before)
    SELECT DISTINCT ON (e.stream_id) e.stream_id, e.seq, e.hash, e.event_id, cut
    FROM audit_events e
    WHERE e.recorded_at < cut
    ORDER BY e.stream_id, e.seq DESC;
    GET DIAGNOSTICS cps = ROW_COUNT;

    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_events'::regclass
          AND c.relname ~ '^audit_events_y[0-9]{4}m[0-9]{2}$'
    LOOP
        IF ((make_timestamp(substr(part.relname, 15, 4)::integer, substr(part.relname, 20, 2)::integer,
                            1, 0, 0, 0) + interval '1 month') AT TIME ZONE 'UTC') <= cut THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;

    DELETE FROM audit_events_default WHERE recorded_at < cut;
    GET DIAGNOSTICS deleted = ROW_COUNT;

    RETURN QUERY SELECT cut, dropped, cps, deleted;
END;
$$;

-- Roles (cluster-wide, so created only when missing). Log-in roles are
-- granted these: GRANT warden_gateway TO <gateway login>.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'warden_gateway') THEN
        BEGIN
            CREATE ROLE warden_gateway NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created concurrently by another database's migration
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'warden_retention') THEN
        BEGIN
            CREATE ROLE warden_retention NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END;
$$;

REVOKE ALL ON audit_events, audit_events_default, audit_policies, audit_streams, audit_checkpoints, api_keys FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events, audit_policies, audit_streams TO warden_gateway;
GRANT SELECT ON audit_checkpoints TO warden_gateway;
GRANT SELECT, INSERT ON api_keys TO warden_gateway;
GRANT UPDATE (revoked_at) ON api_keys TO warden_gateway;

REVOKE ALL ON FUNCTION audit_ensure_partitions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_ensure_partitions(timestamptz, integer) TO warden_gateway, warden_retention;
REVOKE ALL ON FUNCTION audit_prune(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_prune(timestamptz) TO warden_retention;
GRANT SELECT ON audit_events, audit_checkpoints, audit_streams TO warden_retention;

-- Read-only views per event kind, for people querying the log with SQL.
CREATE VIEW audit_requests AS
SELECT event_id, request_id, tenant_id, key_id, model, policy_id, policy_version, trace_id, occurred_at,
       body ->> 'endpoint' AS endpoint,
       (body ->> 'stream')::boolean AS stream,
       body -> 'parameters' AS parameters
FROM audit_events WHERE kind = 'request';

CREATE VIEW audit_messages AS
SELECT event_id, request_id, tenant_id, occurred_at,
       body ->> 'direction' AS direction,
       (body ->> 'index')::integer AS message_index,
       body ->> 'role' AS role,
       body ->> 'name' AS name,
       body -> 'content' ->> 'text' AS content,
       body -> 'content' ->> 'sha256' AS content_sha256
FROM audit_events WHERE kind = 'message';

CREATE VIEW audit_guard_verdicts AS
SELECT event_id, request_id, tenant_id, occurred_at, checkpoint, categories,
       body ->> 'backend' AS backend,
       body ->> 'guard_model' AS guard_model,
       body -> 'result' ->> 'verdict' AS verdict,
       (body ->> 'score')::double precision AS score,
       (body ->> 'latency_us')::bigint AS latency_us,
       body -> 'result' ->> 'message' AS error
FROM audit_events WHERE kind = 'guard_verdict';

CREATE VIEW audit_tool_calls AS
SELECT event_id, request_id, tenant_id, occurred_at,
       body ->> 'tool' AS tool,
       body ->> 'call_id' AS call_id,
       (body ->> 'attempt')::integer AS attempt,
       body -> 'arguments' ->> 'text' AS arguments,
       body -> 'arguments' ->> 'sha256' AS arguments_sha256,
       body -> 'validation' ->> 'status' AS validation,
       body -> 'validation' -> 'errors' AS validation_errors,
       body -> 'outcome' ->> 'status' AS outcome,
       body -> 'outcome' AS outcome_detail,
       (body ->> 'latency_us')::bigint AS latency_us
FROM audit_events WHERE kind = 'tool_call';

CREATE VIEW audit_decisions AS
SELECT event_id, request_id, tenant_id, key_id, model, policy_id, policy_version, occurred_at,
       decision, checkpoint, categories,
       body ->> 'reason' AS reason,
       (body ->> 'http_status')::integer AS http_status,
       body ->> 'finish_reason' AS finish_reason,
       (body -> 'tokens' ->> 'prompt')::integer AS prompt_tokens,
       (body -> 'tokens' ->> 'completion')::integer AS completion_tokens,
       (body -> 'timings' ->> 'total_us')::bigint AS total_us
FROM audit_events WHERE kind = 'decision';

GRANT SELECT ON audit_requests, audit_messages, audit_guard_verdicts, audit_tool_calls, audit_decisions
    TO warden_gateway;
