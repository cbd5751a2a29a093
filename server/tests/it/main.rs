//! Tandem's integration tests, one module per subject, in one test binary:
//! linking the server into a single binary instead of one per file keeps
//! the release build of the test command short. A test that needs a
//! process-wide setting of its own lives in a binary of its own beside
//! this one (`relay_per_socket.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

mod api;
mod cli;
mod cluster;
mod cluster_webhooks;
mod compaction;
mod durability;
mod fuzz_corpus;
mod history;
mod hostile;
mod limits;
mod openapi_conformance;
mod outbox;
mod postgres;
mod process;
mod readme;
mod storage;
mod upgrade;
mod ws_malformed;
mod ws_protocol;
