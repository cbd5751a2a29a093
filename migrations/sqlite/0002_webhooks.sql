-- Webhooks (SPEC §5): endpoints, the outbox of messages to deliver, every
-- delivery attempt, and the document changes not yet reported.

CREATE TABLE webhook_endpoints (
    id               TEXT    PRIMARY KEY,          -- ep_…
    url              TEXT    NOT NULL,
    events           TEXT    NOT NULL,             -- JSON array of event types, or ["*"]
    description      TEXT,
    include_content  INTEGER NOT NULL DEFAULT 0,
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    secret           TEXT    NOT NULL,             -- whsec_…
    previous_secret  TEXT,                         -- signs beside `secret` until it expires
    previous_secret_expires_at INTEGER,            -- unix milliseconds
    last_success_at  INTEGER,                      -- unix milliseconds
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- The outbox: one row per (event, endpoint), written in the transaction of
-- the change that caused it. `next_attempt_at` is also the lease: a sender
-- moves it past its timeout before attempting, so a crash mid-attempt only
-- delays the message.
CREATE TABLE webhook_messages (
    id               TEXT    PRIMARY KEY,          -- msg_…: the webhook-id header
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,             -- the exact JSON body sent
    status           TEXT    NOT NULL,             -- pending | delivered | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,                      -- unix ms; NULL once delivered or failed
    first_attempt_at INTEGER,
    created_at       INTEGER NOT NULL
);
CREATE INDEX webhook_messages_due ON webhook_messages (status, next_attempt_at);
CREATE INDEX webhook_messages_by_endpoint ON webhook_messages (endpoint_id, created_at); -- the delivery log

CREATE TABLE webhook_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT    NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    error         TEXT,
    next_retry_at INTEGER
);
CREATE INDEX webhook_attempts_by_message ON webhook_attempts (message_id, id);

-- Changes accumulated for the next `document.updated` event, written with the
-- updates themselves so that a crash loses no report.
CREATE TABLE doc_changes (
    doc_id          INTEGER PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    updates         INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    first_change_at INTEGER NOT NULL,
    last_change_at  INTEGER NOT NULL
);
CREATE TABLE doc_change_users (
    doc_id  INTEGER NOT NULL REFERENCES doc_changes(doc_id) ON DELETE CASCADE,
    user    TEXT    NOT NULL,
    PRIMARY KEY (doc_id, user)
);
