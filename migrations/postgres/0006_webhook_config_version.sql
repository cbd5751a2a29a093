-- A counter of webhook endpoint changes (SPEC §7: endpoint changes made on
-- one node govern deliveries from all nodes within 1 s). Every change to an
-- endpoint (create, change, rotate its secret, delete, disable after
-- failures) adds one in its own transaction; every node reads this one row
-- a few times a second and reloads its endpoints when it moved. Mirrors
-- migrations/sqlite/0007_webhook_config_version.sql.

CREATE TABLE webhook_config (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO webhook_config (id, version) VALUES (1, 0);
