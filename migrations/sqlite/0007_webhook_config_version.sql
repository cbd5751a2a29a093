-- A counter of webhook endpoint changes: every change to an endpoint
-- (create, change, rotate its secret, delete, disable after failures) adds
-- one in its own transaction, and the server reloads its endpoints when it
-- moved. Mirrors migrations/postgres/0006_webhook_config_version.sql.

CREATE TABLE webhook_config (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO webhook_config (id, version) VALUES (1, 0);
