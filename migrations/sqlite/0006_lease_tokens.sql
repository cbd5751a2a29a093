-- A lease's token: a sender that leases a message writes a token of its
-- own with the lease, and records its attempt only while the token is still
-- there, so a sender whose lease ran out (and which another sender has
-- leased since) cannot overwrite the newer attempt's result. Mirrors
-- migrations/postgres/0005_lease_tokens.sql.

ALTER TABLE webhook_messages ADD COLUMN lease_token TEXT;
