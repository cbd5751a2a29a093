//! Rooms: one task per loaded document (`task`) drives a `core` that owns
//! its `DocState`, its awareness and its peers; the `registry` finds or
//! loads rooms; each socket runs a `session` on the TCP stream it took over
//! at the upgrade (the socket side itself is `crate::net`); `crate::persist`
//! writes accepted updates to the store with group commit, and `load`
//! builds a document from the store a page at a time.
//!
//! Architecture invariant: a room never awaits storage, a peer or the
//! network while relaying; it hands updates to the persister and frames to
//! outboxes, both without blocking (an outbox writes to its socket with a
//! non-blocking `writev` and queues what the socket does not take).

pub mod core;
pub mod load;
pub mod registry;
pub mod session;
pub mod task;

use std::sync::atomic::{AtomicU64, Ordering};

/// A connection's identity within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}
