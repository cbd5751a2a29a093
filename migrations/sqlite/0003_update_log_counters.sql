-- The update log keeps its document's counters itself, so that appending a
-- batch of updates is one INSERT: one round trip to the database and one
-- implicit transaction, instead of BEGIN, INSERT, UPDATE and COMMIT.
CREATE TRIGGER doc_updates_counters AFTER INSERT ON doc_updates
BEGIN
    UPDATE documents
       SET log_count  = log_count + 1,
           size_bytes = size_bytes + LENGTH(NEW.data),
           updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
     WHERE id = NEW.doc_id;
END;
