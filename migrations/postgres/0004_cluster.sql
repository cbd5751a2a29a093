-- Several nodes on one database (SPEC §7). PostgreSQL only: SQLite serves
-- one node.

-- The cluster's identity: Redis channels and keys are named after it, so
-- that one Redis may serve several clusters (one per database) without any
-- of them seeing another's traffic. One row, made here, never changed.
CREATE TABLE cluster_identity (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    id        TEXT NOT NULL
);
INSERT INTO cluster_identity (id) VALUES (md5(random()::text || clock_timestamp()::text));

-- The nodes serving this database. A node registers at start and beats
-- every few seconds, on the database's clock (never a node's); one whose
-- beat is older than the timeout is dead, and the others drop the
-- awareness and connection counts it had announced. A node that stops
-- gracefully deletes its row.
CREATE TABLE cluster_nodes (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
