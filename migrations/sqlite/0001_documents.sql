-- Documents and their update logs.
-- A document row is one incarnation of a name: deleting a document and
-- creating it again under the same name gives a new id, so writes still in
-- flight for the old one can never leak into the new one.
CREATE TABLE documents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL, -- unix milliseconds
    updated_at  INTEGER NOT NULL, -- unix milliseconds
    size_bytes  INTEGER NOT NULL DEFAULT 0, -- stored bytes: snapshot + log
    log_count   INTEGER NOT NULL DEFAULT 0  -- updates in the log since the snapshot
);

-- The append-only log: each row a Yjs v1 update the server accepted.
CREATE TABLE doc_updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data    BLOB    NOT NULL
);
CREATE INDEX doc_updates_by_doc ON doc_updates (doc_id, id);

-- The compacted state: every update of the document up to `upto_id`.
CREATE TABLE doc_snapshots (
    doc_id   INTEGER PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    data     BLOB    NOT NULL,
    upto_id  INTEGER NOT NULL
);
