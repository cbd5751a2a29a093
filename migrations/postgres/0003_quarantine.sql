-- Failing storage (SPEC §6). Mirrors migrations/sqlite/0005_quarantine.sql.
--
-- A stored row is never deleted because it cannot be read: the compactor
-- moves a row (or a snapshot) that does not decode here, in the
-- transaction that writes the snapshot it could not be folded into, and
-- reports it. An operator may inspect, repair or drop these rows; Tandem
-- only ever inserts them. They go with their document when it is deleted.
CREATE TABLE doc_updates_quarantine (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id          BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    row_id          BIGINT,           -- its seq in doc_updates; NULL for a snapshot
    data            BYTEA  NOT NULL,
    reason          TEXT   NOT NULL,
    quarantined_at  BIGINT NOT NULL   -- unix milliseconds
);
CREATE INDEX doc_updates_quarantine_by_doc ON doc_updates_quarantine (doc_id, id);

-- The target of the update log writer's probe: after a write failed for
-- storage reasons, one small write here tells whether the database takes
-- writes again. One row, rewritten.
CREATE TABLE storage_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  BIGINT  NOT NULL
);
