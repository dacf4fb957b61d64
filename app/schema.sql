-- graphql.client_async_messages: one row per async request. Idempotent; YugabyteDB YSQL compatible (no ctid).
CREATE SCHEMA IF NOT EXISTS graphql;

CREATE TABLE IF NOT EXISTS graphql.client_async_messages (
    request_id    text        PRIMARY KEY,
    client_id     text        NOT NULL,
    handler       text        NOT NULL,
    operation     text        NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    priority      text        NOT NULL DEFAULT 'normal',
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    correlation   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    response      jsonb,
    error         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    completed_at  timestamptz,
    expires_at    timestamptz NOT NULL,
    CONSTRAINT client_async_messages_status_check
        CHECK (status IN ('pending', 'published', 'completed', 'failed')),
    CONSTRAINT client_async_messages_priority_check
        CHECK (priority IN ('low', 'normal', 'high')),
    CONSTRAINT client_async_messages_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 128),
    CONSTRAINT client_async_messages_terminal_has_time
        CHECK (status NOT IN ('completed', 'failed') OR completed_at IS NOT NULL)
);

-- a client's recent rows (Hasura subscriptions filter by client_id, newest first)
CREATE INDEX IF NOT EXISTS client_async_messages_client_recent_idx
    ON graphql.client_async_messages (client_id, created_at DESC);
-- the cleanup's expiry scan
CREATE INDEX IF NOT EXISTS client_async_messages_expires_idx
    ON graphql.client_async_messages (expires_at);
-- the outbox relay's scan of rows not yet on Kafka
CREATE INDEX IF NOT EXISTS client_async_messages_unpublished_idx
    ON graphql.client_async_messages (created_at) WHERE status = 'pending';

-- the cleanup's only privilege: delete expired rows, in a bounded batch, skipping rows another transaction holds.
-- SECURITY DEFINER: its role needs no table privilege (FOR UPDATE would demand an UPDATE grant); search_path pinned.
-- STRICT: NULL deletes nothing (LIMIT NULL means no limit); the cap is CleanupSettings.cleanup_batch_size's maximum.
-- = ANY(ARRAY(...)): the rows go by their primary key whatever plan the function gets. A SQL function plans its
-- body once for a parameter LIMIT; `IN (subquery)` then became a hash join over a sequential scan of the whole
-- table per batch (0.7 s a batch at 11M rows: bench/growth.py). jit off: that estimate also compiled each batch.
CREATE OR REPLACE FUNCTION graphql.delete_expired_messages(batch_size integer) RETURNS integer
    LANGUAGE sql STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
    WITH gone AS (
        DELETE FROM graphql.client_async_messages
         WHERE request_id = ANY (ARRAY(
               SELECT request_id FROM graphql.client_async_messages
                WHERE expires_at < now()
                ORDER BY expires_at
                LIMIT least(batch_size, 100000)
                FOR UPDATE SKIP LOCKED))
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
REVOKE ALL ON FUNCTION graphql.delete_expired_messages(integer) FROM PUBLIC;

-- status moves forward only (pending -> published -> completed|failed, or pending -> completed|failed) and a
-- terminal row never changes, whatever a service role's column grants allow. The whole rule is the trigger's
-- WHEN clause, so an allowed update (the writer's thousands of rows/s) never calls the function: it only raises.
CREATE OR REPLACE FUNCTION graphql.refuse_status_transition() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'request %: status % -> % refused', OLD.request_id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END
$$;
REVOKE ALL ON FUNCTION graphql.refuse_status_transition() FROM PUBLIC;

-- created only if absent (YSQL is PostgreSQL 11: no CREATE OR REPLACE TRIGGER), so a changed rule needs a new name
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'graphql.client_async_messages'::regclass
                      AND tgname = 'client_async_messages_status_transitions_v1') THEN
        CREATE TRIGGER client_async_messages_status_transitions_v1
            BEFORE UPDATE ON graphql.client_async_messages FOR EACH ROW
            WHEN (OLD.status IN ('completed', 'failed')
                  OR (NEW.status IS DISTINCT FROM OLD.status
                      AND NOT (OLD.status = 'pending' AND NEW.status IN ('published', 'completed', 'failed'))
                      AND NOT (OLD.status = 'published' AND NEW.status IN ('completed', 'failed'))))
            EXECUTE PROCEDURE graphql.refuse_status_transition();
    END IF;
END
$$;
