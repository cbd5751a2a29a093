//! Rendering root types as JSON (see SPEC §4 `GET /api/docs/{id}/json`).
