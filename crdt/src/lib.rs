//! Tandem's CRDT core: the y-protocols message codec, a room's document state,
//! awareness bookkeeping, JSON rendering and update-log compaction.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of HTTP,
//! SQL, tokio or sockets. Every function that takes bytes from outside returns
//! a typed error instead of panicking; callers still guard calls into `yrs`
//! with `catch_unwind`, because yrs itself has open reports of panics on
//! malformed input (y-crdt#415).

pub mod awareness;
pub mod compact;
pub mod doc;
pub mod history;
pub mod json;
pub mod nesting;
pub mod protocol;
pub mod wellformed;

pub use awareness::{
    Awareness, AwarenessApplied, AwarenessEntry, AwarenessError, AwarenessLimits, AwarenessUpdate,
};
pub use compact::compact;
pub use doc::{Applied, ApplyError, DocLoader, DocState, LoadReport};
pub use history::{restore_update, Attribution, HistoryDoc};
pub use protocol::{Incoming, ProtocolError};
