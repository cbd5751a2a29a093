-- History and versions (SPEC §9). Mirrors migrations/postgres/0007_history.sql.

-- Who wrote each logged update: the writer's token `sub`, or NULL (an API
-- key, the server itself). Versions list their authors from it and a diff
-- says who wrote which span.
ALTER TABLE doc_updates ADD COLUMN user TEXT;

-- Beside the serving snapshot (garbage-collected: deleted content is gone),
-- the full history up to the same row: `history` is a Yjs update of the
-- document with every deleted item kept (what versions are rendered
-- against), `attribution` who inserted and who deleted which ids. Both are
-- written with the snapshot, in its transaction; NULL for a document
-- compacted before history was kept (its snapshot starts its history).
ALTER TABLE doc_snapshots ADD COLUMN history BLOB;
ALTER TABLE doc_snapshots ADD COLUMN attribution BLOB;

-- A version: the document as it was at one point of its log. `upto` is
-- the last update it includes (a row id of doc_updates, or the `upto_id`
-- of a snapshot); `snapshot` (a Yjs snapshot: state vector and delete set)
-- is written when compaction folds that row, after which `upto` alone
-- could no longer say what the version holds.
CREATE TABLE doc_versions (
    id            INTEGER PRIMARY KEY,
    doc_id        INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('auto', 'named', 'restore')),
    name          TEXT,
    created_at    INTEGER NOT NULL, -- unix milliseconds
    created_by    TEXT,
    authors       TEXT    NOT NULL, -- a JSON array of token subs, sorted
    upto          INTEGER NOT NULL,
    snapshot      BLOB,
    restored_from INTEGER
);
CREATE INDEX doc_versions_by_doc ON doc_versions (doc_id, id);

-- The window of the next automatic version: the first change not yet in a
-- version (NULL when none is owed), and whose changes they are.
ALTER TABLE doc_changes ADD COLUMN history_since INTEGER;
ALTER TABLE doc_change_users ADD COLUMN for_report INTEGER NOT NULL DEFAULT 1;
ALTER TABLE doc_change_users ADD COLUMN for_history INTEGER NOT NULL DEFAULT 0;
