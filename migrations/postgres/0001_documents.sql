-- Documents and their update logs (mirrors migrations/sqlite 0001, 0003 and
-- 0004 as they stand after 0004: PostgreSQL starts from the final shape).
--
-- A document row is one incarnation of a name: deleting a document and
-- creating it again under the same name gives a new id, so writes still in
-- flight for the old one can never leak into the new one. Names compare
-- byte by byte (COLLATE "C"), as SQLite compares them, so listing order and
-- keyset pagination are the same on both backends.
CREATE TABLE documents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,           -- unix milliseconds
    updated_at  BIGINT NOT NULL,           -- unix milliseconds
    size_bytes  BIGINT NOT NULL DEFAULT 0, -- stored bytes: snapshot + log
    log_count   BIGINT NOT NULL DEFAULT 0, -- updates in the log since the snapshot
    -- The sequence number of the last update appended. An appender locks
    -- this row (SELECT … FOR UPDATE), numbers its updates from here and
    -- raises it in the same transaction, so a document's `seq` is gap-free
    -- and follows commit order whatever number of writers append to it.
    last_seq    BIGINT NOT NULL DEFAULT 0
);

-- The append-only log: each row a Yjs v1 update the server accepted, numbered
-- per document. Unlike SQLite there is no counts_pending flag: the appender
-- holds the document's row anyway and updates its counters in the same
-- transaction.
CREATE TABLE doc_updates (
    doc_id  BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    data    BYTEA  NOT NULL,
    PRIMARY KEY (doc_id, seq)
);
-- Stored as written, out of line when large, never compressed (as SQLite
-- stores them): compressing every large update on the append path costs
-- CPU on the hot path for rows that compaction soon deletes.
ALTER TABLE doc_updates ALTER COLUMN data SET STORAGE EXTERNAL;

-- The compacted state: every update of the document up to `upto_seq`. It
-- only ever moves forward (see the store's write_snapshot).
CREATE TABLE doc_snapshots (
    doc_id    BIGINT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    data      BYTEA  NOT NULL,
    upto_seq  BIGINT NOT NULL
);
