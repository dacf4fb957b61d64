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
CREATE OR REPLACE FUNCTION graphql.delete_expired_messages(batch_size integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM graphql.client_async_messages
         WHERE request_id IN (
               SELECT request_id FROM graphql.client_async_messages
                WHERE expires_at < now()
                ORDER BY expires_at
                LIMIT batch_size
                FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
REVOKE ALL ON FUNCTION graphql.delete_expired_messages(integer) FROM PUBLIC;
