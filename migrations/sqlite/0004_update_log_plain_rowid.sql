-- The update log's row ids drop AUTOINCREMENT, which rewrote its sequence
-- table (one more page in the write-ahead log) on every commit. A plain
-- INTEGER PRIMARY KEY takes the largest id plus one, and that is enough: a
-- snapshot's `upto_id` only names the rows the compactor read, which it
-- deletes in the same transaction as it writes the snapshot, and while they
-- exist every new row gets a larger id. Within a document ids still follow
-- the order in which updates were accepted.
CREATE TABLE doc_updates_new (
    id      INTEGER PRIMARY KEY,
    doc_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data    BLOB    NOT NULL
);
INSERT INTO doc_updates_new (id, doc_id, data) SELECT id, doc_id, data FROM doc_updates;
DROP TABLE doc_updates;
ALTER TABLE doc_updates_new RENAME TO doc_updates;
CREATE INDEX doc_updates_by_doc ON doc_updates (doc_id, id);
DELETE FROM sqlite_sequence WHERE name IN ('doc_updates', 'doc_updates_new');

-- As in migration 0003 (dropped with the old table).
CREATE TRIGGER doc_updates_counters AFTER INSERT ON doc_updates
BEGIN
    UPDATE documents
       SET log_count  = log_count + 1,
           size_bytes = size_bytes + LENGTH(NEW.data),
           updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
     WHERE id = NEW.doc_id;
END;
