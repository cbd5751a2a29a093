//! Tandem, the collaboration server. See ARCHITECTURE.md for the map:
//! `main.rs` parses `Settings` and runs `app::App`; a WebSocket frame goes
//! `routes/ws.rs -> room/session.rs -> room/task.rs -> room/core.rs`, which
//! applies it with `tandem_crdt` and returns effects; the task fans the frame
//! out through `net/outbox.rs` and hands the update to
//! `persist/ -> store/`. Webhook events go `webhooks/events.rs ->
//! store (the outbox) -> webhooks/dispatcher.rs`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doc_name;
pub mod error;
pub mod history;
pub mod metrics;
pub mod net;
pub mod persist;
pub mod room;
pub mod routes;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod webhooks;
