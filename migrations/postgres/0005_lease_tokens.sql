-- A lease's token (SPEC §7: each message delivered once per endpoint across
-- the cluster). A sender that leases a message writes a token of its own
-- with the lease, and records its attempt only while the token is still
-- there: a sender whose lease ran out (and which another sender has leased
-- since) cannot overwrite the newer attempt's result. Mirrors
-- migrations/sqlite/0006_lease_tokens.sql.

ALTER TABLE webhook_messages ADD COLUMN lease_token TEXT;
