-- Webhooks, second level (SPEC §5). Mirrors
-- migrations/postgres/0008_webhooks_held_and_collapsed.sql.
--
-- `doc_prefix` limits an endpoint to the documents whose names start with
-- it (NULL: every document).
ALTER TABLE webhook_endpoints ADD COLUMN doc_prefix TEXT;

-- The document a message is about (NULL for events about no document): the
-- key under which undelivered `document.updated` messages collapse.
ALTER TABLE webhook_messages ADD COLUMN doc TEXT;
-- Two new states beside pending | delivered | failed:
--   held      written while its endpoint was disabled; `recover` queues it
--   collapsed merged into the newer message `collapsed_into` names, which
--             was sent in its place (kept for the delivery log)
ALTER TABLE webhook_messages ADD COLUMN collapsed_into TEXT;

-- Where a new `document.updated` looks for the undelivered one to merge
-- into: one lookup per endpoint and report.
CREATE INDEX webhook_messages_collapsible ON webhook_messages (endpoint_id, doc)
    WHERE event_type = 'document.updated' AND status IN ('pending', 'held');
-- The sender reads each enabled endpoint's due messages through this, so
-- the pending backlog of a disabled endpoint is never scanned.
CREATE INDEX webhook_messages_due_by_endpoint ON webhook_messages (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
