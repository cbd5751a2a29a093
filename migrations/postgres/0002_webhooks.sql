-- Webhooks (SPEC §5): endpoints, the outbox of messages to deliver, every
-- delivery attempt, and the document changes not yet reported. Mirrors
-- migrations/sqlite/0002_webhooks.sql.

CREATE TABLE webhook_endpoints (
    id               TEXT    PRIMARY KEY,          -- ep_…
    url              TEXT    NOT NULL,
    events           JSONB   NOT NULL,             -- array of event types, or ["*"]
    description      TEXT,
    include_content  BOOLEAN NOT NULL DEFAULT FALSE,
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason  TEXT,
    secret           TEXT    NOT NULL,             -- whsec_…
    previous_secret  TEXT,                         -- signs beside `secret` until it expires
    previous_secret_expires_at BIGINT,             -- unix milliseconds
    last_success_at  BIGINT,                       -- unix milliseconds
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);

-- The outbox: one row per (event, endpoint), written in the transaction of
-- the change that caused it. `next_attempt_at` is also the lease: a sender
-- claims due rows with FOR UPDATE SKIP LOCKED and moves it past its timeout
-- before attempting, so a crash mid-attempt only delays the message and two
-- senders never claim the same row. `seq` is the delivery log's cursor
-- (SQLite's rowid).
CREATE TABLE webhook_messages (
    id               TEXT    PRIMARY KEY,          -- msg_…: the webhook-id header
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,             -- the exact JSON body sent
    status           TEXT    NOT NULL,             -- pending | delivered | failed
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,                       -- unix ms; NULL once delivered or failed
    first_attempt_at BIGINT,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX webhook_messages_due ON webhook_messages (status, next_attempt_at);
CREATE INDEX webhook_messages_due_by_endpoint ON webhook_messages (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_messages_by_endpoint ON webhook_messages (endpoint_id, created_at, seq); -- the delivery log

CREATE TABLE webhook_attempts (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    TEXT    NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
    attempted_at  BIGINT  NOT NULL,
    status_code   BIGINT,
    latency_ms    BIGINT  NOT NULL,
    error         TEXT,
    next_retry_at BIGINT
);
CREATE INDEX webhook_attempts_by_message ON webhook_attempts (message_id, id);

-- Changes accumulated for the next `document.updated` event, written with the
-- updates themselves so that a crash loses no report. (`user` is a reserved
-- word in PostgreSQL, hence `user_name`.)
CREATE TABLE doc_changes (
    doc_id          BIGINT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    updates         BIGINT NOT NULL,
    bytes           BIGINT NOT NULL,
    first_change_at BIGINT NOT NULL,
    last_change_at  BIGINT NOT NULL
);
CREATE TABLE doc_change_users (
    doc_id     BIGINT NOT NULL REFERENCES doc_changes(doc_id) ON DELETE CASCADE,
    user_name  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (doc_id, user_name)
);
