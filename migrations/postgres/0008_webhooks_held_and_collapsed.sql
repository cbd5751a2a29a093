-- Webhooks, second level (SPEC §5). Mirrors
-- migrations/sqlite/0009_webhooks_held_and_collapsed.sql, where the
-- reasons are given.
ALTER TABLE webhook_endpoints ADD COLUMN doc_prefix TEXT;

ALTER TABLE webhook_messages ADD COLUMN doc TEXT;
-- status: pending | delivered | failed | held | collapsed
ALTER TABLE webhook_messages ADD COLUMN collapsed_into TEXT;

CREATE INDEX webhook_messages_collapsible ON webhook_messages (endpoint_id, doc)
    WHERE event_type = 'document.updated' AND status IN ('pending', 'held');
