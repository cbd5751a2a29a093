-- History and versions (SPEC §9). Mirrors migrations/sqlite/0008_history.sql,
-- where the reasons are given; `user` is a reserved word here, hence
-- `user_name`.

ALTER TABLE doc_updates ADD COLUMN user_name TEXT;

ALTER TABLE doc_snapshots ADD COLUMN history BYTEA;
ALTER TABLE doc_snapshots ADD COLUMN attribution BYTEA;

-- `upto` is a `seq` of the document's log (or a snapshot's `upto_seq`).
CREATE TABLE doc_versions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id        BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    kind          TEXT   NOT NULL CHECK (kind IN ('auto', 'named', 'restore')),
    name          TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT,
    authors       TEXT   NOT NULL,
    upto          BIGINT NOT NULL,
    snapshot      BYTEA,
    restored_from BIGINT
);
CREATE INDEX doc_versions_by_doc ON doc_versions (doc_id, id);

ALTER TABLE doc_changes ADD COLUMN history_since BIGINT;
ALTER TABLE doc_change_users ADD COLUMN for_report BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE doc_change_users ADD COLUMN for_history BOOLEAN NOT NULL DEFAULT FALSE;
