-- Cheaper appends: a commit of one update writes the log's table and index
-- pages only.
--
-- 1. Row ids drop AUTOINCREMENT, which rewrote its sequence table on every
--    commit. A plain INTEGER PRIMARY KEY takes the largest id plus one, and
--    that is enough: a snapshot's `upto_id` only names the rows the
--    compactor read, which it deletes in the same transaction as it writes
--    the snapshot, and while they exist every new row gets a larger id.
--    Within a document ids still follow the order updates were accepted in.
--
-- 2. The documents' counters (`log_count`, `size_bytes`, `updated_at`) are
--    no longer kept by a trigger on every insert. The update log's writer
--    adds what it appended when it syncs (at most `TANDEM_SYNC_INTERVAL`
--    later, and before an HTTP API update is answered); the compactor
--    subtracts what it folds. Both are deltas, so their order does not
--    matter. `counts_pending` is set, in the transaction of a document's
--    first append since the last sync, until the writer has added its
--    counts: a start after a crash recounts those documents.
CREATE TABLE doc_updates_new (
    id      INTEGER PRIMARY KEY,
    doc_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data    BLOB    NOT NULL
);
INSERT INTO doc_updates_new (id, doc_id, data) SELECT id, doc_id, data FROM doc_updates;
DROP TABLE doc_updates; -- and with it the trigger of migration 0003
ALTER TABLE doc_updates_new RENAME TO doc_updates;
CREATE INDEX doc_updates_by_doc ON doc_updates (doc_id, id);
DELETE FROM sqlite_sequence WHERE name IN ('doc_updates', 'doc_updates_new');

ALTER TABLE documents ADD COLUMN counts_pending INTEGER NOT NULL DEFAULT 0;
