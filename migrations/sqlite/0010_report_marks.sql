-- Reports split at what their content holds. Mirrors
-- migrations/postgres/0009_report_marks.sql.
--
-- `last_mark` is the document's count of unreported updates just after this
-- user's latest write was counted. A report that counts only the first N
-- updates (those its content was rendered with) keeps, for the next report,
-- the users with a mark above N, and takes N off the marks it keeps.
ALTER TABLE doc_change_users ADD COLUMN last_mark INTEGER NOT NULL DEFAULT 0;
