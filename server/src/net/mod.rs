//! The socket side of a connection, which knows nothing of Yjs: the
//! WebSocket wire format (`wire`), each peer's outgoing queue (`outbox`),
//! one frame to many sockets in one system call (`send_ring`), keeping idle
//! connections alive and finding dead ones (`keepalive`, on a coarse
//! `clock`), and the close codes (`close`).
//!
//! Architecture invariant: nothing here blocks. An outbox writes to its
//! socket with a non-blocking call and queues, up to a bound, what the
//! socket does not take; a peer over the bound is closed with 1013.

pub mod clock;
pub mod close;
pub mod keepalive;
pub mod outbox;
pub mod send_ring;
pub mod wire;

pub use close::CloseCode;
