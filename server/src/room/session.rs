//! One WebSocket connection: joins its room, reads frames, enforces the
//! message-size and message-rate limits, tells the keepalive when the
//! client was heard from, and leaves the room when it ends, however it ends.
//!
//! The session owns the socket Tandem took over after the upgrade. Frames
//! are decoded here, on the connection's own task, so the room only sees
//! well-formed messages; the rate limit counts messages (a frame may hold
//! many) and pings. A bad frame closes this connection (4400, 4413) and
//! nothing of it reaches the room. Outgoing frames are written by the room
//! straight to the socket (`Outbox`); this task only sends what the socket
//! could not take at once. While the room's mailbox is full the session
//! stops reading (TCP pushes back on the client) but keeps serving its
//! socket: the close handshake, its token's expiry, shutdown. Pings and
//! keepalives come from the server's keepalive thread (`net::keepalive`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_crdt::protocol::{self, ProtocolError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::registry::{Registry, RoomHandle};
use super::task::{JoinRefused, Open, RoomCmd};
use super::ConnId;
use crate::doc_name::DocName;
use crate::net::outbox::Outbox;
use crate::net::wire::{FrameReader, Incoming, WireError};
use crate::net::CloseCode;

/// How often a join is retried when the room it was handed is unloading.
const JOIN_ATTEMPTS: usize = 5;

/// How long a joiner waits for its room at least (a room loading a long
/// log, or a full mailbox) before it is told to come back later.
const JOIN_DEADLINE: Duration = Duration::from_secs(25);

/// How long a closing connection waits for its close frame to go out and
/// for the client to hang up, so that the client reads the close code
/// rather than a reset.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An empty awareness update: a harmless application-level message, which
/// the keepalive sends to a connection the room has sent nothing for a ping
/// interval (the stock client reconnects after 30 s without a message, and
/// WebSocket pings are invisible to page code).
pub const KEEPALIVE: &[u8] = &[protocol::MSG_AWARENESS, 1, 0];

pub struct Session {
    pub conn: ConnId,
    pub name: DocName,
    pub read_only: bool,
    /// The token's `sub`, if any.
    pub user: Option<Arc<str>>,
    /// When the connection's token expires (unix seconds): it is closed then with 4401.
    pub expires_at: Option<u64>,
    pub registry: Arc<Registry>,
    /// The connection's place in `TANDEM_MAX_CONNECTIONS`.
    pub seat: Seat,
}

/// A connection counted against `TANDEM_MAX_CONNECTIONS` from the moment
/// its upgrade is answered (so connections are counted in the order they
/// were admitted, not in the order their sessions start) until it ends.
pub struct Seat {
    connections: Arc<AtomicUsize>,
    /// Whether the server was full when this one was admitted: it is then
    /// closed with 1013 right after the upgrade.
    over_limit: bool,
    released: bool,
}

impl Seat {
    pub fn take(connections: &Arc<AtomicUsize>, limit: usize) -> Seat {
        let open = connections.fetch_add(1, Ordering::Relaxed) + 1;
        Seat {
            connections: Arc::clone(connections),
            over_limit: open > limit,
            released: false,
        }
    }

    /// Gives the seat up (once): a closing connection no longer counts.
    fn release(&mut self) {
        if !std::mem::replace(&mut self.released, true) {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.release();
    }
}

/// The session's membership of its room: dropping it tells the room the
/// connection left, also when the session ends by a panic.
struct Membership {
    tx: mpsc::Sender<Box<RoomCmd>>,
    conn: ConnId,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let leave = Box::new(RoomCmd::Leave { conn: self.conn });
        if let Err(mpsc::error::TrySendError::Full(leave)) = self.tx.try_send(leave) {
            // The room must hear of every leave (awareness cleanup), so wait
            // for mailbox space on a task of its own.
            let tx = self.tx.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn(async move {
                    let _ = tx.send(leave).await;
                }));
            }
        }
    }
}

/// Why the read loop ended.
enum End {
    /// A close was requested (by either side, the room or a limit).
    Closing,
    /// The close frame is out already.
    CloseSent,
    /// The socket is gone.
    Gone,
}

impl Session {
    /// Runs the connection to its end. `early` holds bytes the client sent
    /// right behind its upgrade request, if any.
    pub async fn run(mut self, stream: TcpStream, early: BytesMut) {
        if let Err(e) = stream.set_nodelay(true) {
            // Small frames would wait for the previous one's ACK (Nagle).
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let stream = Arc::new(stream);
        let limits = &self.registry.deps.limits;
        let outbox = Outbox::new(Arc::clone(&stream), limits.send_queue_bytes);
        let writer = outbox.run_writer();
        tokio::pin!(writer);

        let mut end = End::Closing;
        if self.seat.over_limit {
            tracing::warn!(
                limit = limits.max_connections,
                "server full; refusing the connection"
            );
            outbox.close(CloseCode::TryAgainLater, "server full");
        } else if let Some(room) = self.join(&outbox).await {
            let membership = Membership {
                tx: room.tx.clone(),
                conn: self.conn,
            };
            end = self
                .serve(&room, &stream, &outbox, early, writer.as_mut())
                .await;
            drop(membership);
        }
        // A closing connection no longer counts against the limits.
        self.seat.release();
        match end {
            End::Gone => {
                tracing::debug!("connection lost");
                return;
            }
            End::CloseSent => linger(&stream, tokio::time::Instant::now() + CLOSE_GRACE).await,
            End::Closing => finish(&stream, &outbox, writer).await,
        }
        tracing::debug!(close = ?outbox.close_code(), "connection ended");
    }

    async fn serve(
        &self,
        room: &RoomHandle,
        stream: &TcpStream,
        outbox: &Arc<Outbox>,
        early: BytesMut,
        mut writer: std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    ) -> End {
        let deps = &self.registry.deps;
        let limits = &deps.limits;
        let mut reader = FrameReader::new(early, limits.max_message_bytes);
        let mut rate = RateLimit::new(limits.max_messages_per_second);
        // Pings and keepalives come from the server's keepalive thread; it
        // learns here when the client was last heard from.
        let liveness = deps.keepalive.watch(self.conn.0, outbox);
        let mut waiting = false;
        let shutdown = deps.shutdown.clone();
        let expiry = token_expiry(self.expires_at);
        tokio::pin!(expiry);
        // Bytes that came with the upgrade request are handled first.
        let mut buffered = true;
        // A frame waiting for the connection's in-flight budget or for room
        // in the mailbox: nothing more is read until it is delivered.
        let mut pending: Option<Pending> = None;
        // Bytes of frames handed to the room and not yet handled by it: a
        // connection can make the server hold at most this much of what it
        // sent, however slow its room is.
        let capacity = in_flight_bytes(limits.max_message_bytes);
        let budget = Arc::new(Semaphore::new(capacity));

        loop {
            if buffered && pending.is_none() {
                buffered = false;
                if let Err(end) = self.handle_buffered(
                    room,
                    outbox,
                    &mut reader,
                    &mut rate,
                    &budget,
                    &mut pending,
                ) {
                    return end;
                }
            }
            if pending.is_none() {
                // An idle connection holds no read buffer.
                reader.release_idle_buffer();
            }
            if waiting != pending.is_some() {
                waiting = pending.is_some();
                liveness.set_waiting(waiting);
            }
            tokio::select! {
                ready = wait_for_room(room, &budget, pending.as_ref().map_or(0, |p| p.cost)), if pending.is_some() => {
                    match (ready, pending.take()) {
                        (Some((permit, slot)), Some(Pending { mut cmd, .. })) => {
                            if let RoomCmd::Frame { budget, .. } = cmd.as_mut() {
                                *budget = Some(permit);
                            }
                            slot.send(cmd);
                            buffered = true; // what was read behind it
                        }
                        _ => {
                            outbox.close(CloseCode::InternalError, "room restarted; reconnect");
                            return End::Closing;
                        }
                    }
                }
                ready = stream.readable(), if pending.is_none() => {
                    if ready.is_err() {
                        outbox.gone();
                        return End::Gone;
                    }
                    match reader.read_from(stream) {
                        Ok(0) => {
                            outbox.gone();
                            return End::Gone;
                        }
                        Ok(_) => {
                            liveness.heard();
                            buffered = true;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "reading failed");
                            outbox.gone();
                            return End::Gone;
                        }
                    }
                }
                written = &mut writer => {
                    return match written {
                        Ok(()) => End::CloseSent,
                        Err(_) => End::Gone,
                    };
                }
                _ = &mut expiry => {
                    tracing::info!("token expired; closing");
                    outbox.close(CloseCode::Unauthorized, "token expired");
                    return End::Closing;
                }
                _ = outbox.closed() => return End::Closing,
                _ = shutdown.cancelled() => {
                    outbox.close(CloseCode::GoingAway, "server shutting down");
                    return End::Closing;
                }
            }
        }
    }

    /// Handles every whole message in the read buffer, until one must wait
    /// for the connection's budget or the room's mailbox (left in `pending`).
    fn handle_buffered(
        &self,
        room: &RoomHandle,
        outbox: &Outbox,
        reader: &mut FrameReader,
        rate: &mut RateLimit,
        budget: &Arc<Semaphore>,
        pending: &mut Option<Pending>,
    ) -> Result<(), End> {
        let limits = &self.registry.deps.limits;
        let rate_limited = |outbox: &Outbox| {
            tracing::warn!("message rate over the limit; closing");
            outbox.close(CloseCode::TryAgainLater, "message rate limit exceeded");
            Err(End::Closing)
        };
        while pending.is_none() {
            let message = match reader.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(WireError::TooLarge) => {
                    tracing::warn!(
                        limit = limits.max_message_bytes,
                        "message over the size limit; closing"
                    );
                    outbox.close(CloseCode::TooLarge, "message too large");
                    return Err(End::Closing);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing");
                    outbox.close(CloseCode::Malformed, "WebSocket protocol error");
                    return Err(End::Closing);
                }
            };
            match message {
                Incoming::Binary(frame) => {
                    let capacity = in_flight_bytes(limits.max_message_bytes);
                    let cost = frame_cost(frame.len(), capacity);
                    let Some(mut cmd) = self.decode(room, outbox, rate, frame)? else {
                        return rate_limited(outbox);
                    };
                    let Ok(permit) = Arc::clone(budget).try_acquire_many_owned(cost) else {
                        *pending = Some(Pending { cmd, cost });
                        continue;
                    };
                    if let RoomCmd::Frame { budget, .. } = cmd.as_mut() {
                        *budget = Some(permit);
                    }
                    match room.tx.try_send(cmd) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(mut cmd)) => {
                            // The permit goes back while the frame waits for room.
                            if let RoomCmd::Frame { budget, .. } = cmd.as_mut() {
                                *budget = None;
                            }
                            *pending = Some(Pending { cmd, cost });
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            outbox.close(CloseCode::InternalError, "room restarted; reconnect");
                            return Err(End::Closing);
                        }
                    }
                }
                Incoming::Text => {
                    tracing::warn!("text frame; closing");
                    outbox.close(
                        CloseCode::Malformed,
                        "text frames are not part of the protocol",
                    );
                    return Err(End::Closing);
                }
                Incoming::Ping(payload) => {
                    if !rate.admit(Instant::now(), PING_COST) {
                        return rate_limited(outbox);
                    }
                    outbox.pong(payload);
                }
                Incoming::Pong => {}
                Incoming::Close => {
                    outbox.close(CloseCode::GoingAway, "");
                    return Err(End::Closing);
                }
            }
        }
        Ok(())
    }

    async fn join(&self, outbox: &Arc<Outbox>) -> Option<RoomHandle> {
        let wait = self.registry.deps.rooms.shutdown_timeout.max(JOIN_DEADLINE);
        for _ in 0..JOIN_ATTEMPTS {
            let room = self.registry.handle(&self.name, Open::OrCreate);
            let (reply, answer) = oneshot::channel();
            let cmd = RoomCmd::Join {
                conn: self.conn,
                user: self.user.clone(),
                read_only: self.read_only,
                outbox: Arc::clone(outbox),
                reply,
            };
            let sent = tokio::time::timeout(wait, room.tx.send(Box::new(cmd))).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => continue, // the room stopped meanwhile: get a fresh one
                Err(_) => break,
            }
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(Ok(()))) => return Some(room),
                Ok(Ok(Err(JoinRefused::Full))) => {
                    tracing::warn!("room full; refusing the connection");
                    outbox.close(CloseCode::TryAgainLater, "room full");
                    return None;
                }
                Ok(Ok(Err(JoinRefused::Unavailable))) | Err(_) => break,
                // An API call's room found no document: open one that creates it.
                Ok(Ok(Err(JoinRefused::Absent))) => continue,
                Ok(Err(_)) => continue, // the room unloaded before answering
            }
        }
        if self.registry.deps.shutdown.is_cancelled() {
            // The room stopped because the server is stopping, before it
            // answered the join: the same close as every joined peer gets.
            outbox.close(CloseCode::GoingAway, "server shutting down");
        } else {
            outbox.close(
                CloseCode::TryAgainLater,
                "document unavailable, retry later",
            );
        }
        None
    }

    /// Decodes a frame and charges its messages to the rate limit. `None`
    /// when the limit refuses them; `Err` when the connection must end.
    fn decode(
        &self,
        room: &RoomHandle,
        outbox: &Outbox,
        rate: &mut RateLimit,
        frame: Bytes,
    ) -> Result<Option<Box<RoomCmd>>, End> {
        let messages = match protocol::decode_frame_limited(&frame, rate.burst()) {
            Ok(m) => m,
            Err(ProtocolError::TooManyMessages(_)) => return Ok(None),
            Err(e) => {
                self.registry.deps.metrics.malformed_messages.increment(1);
                tracing::warn!(error = %e, bytes = frame.len(), "malformed message; closing");
                outbox.close(CloseCode::Malformed, "malformed message");
                return Err(End::Closing);
            }
        };
        let doc_bytes = room.doc_bytes.load(Ordering::Relaxed);
        let cost: f64 = messages.iter().map(|m| message_cost(m, doc_bytes)).sum();
        if !rate.admit(Instant::now(), cost) {
            return Ok(None);
        }
        Ok(Some(Box::new(RoomCmd::Frame {
            conn: self.conn,
            frame,
            messages,
            budget: None,
        })))
    }
}

/// A decoded frame the room cannot take yet, and what it costs of the
/// connection's in-flight budget.
struct Pending {
    cmd: Box<RoomCmd>,
    cost: u32,
}

/// A connection may have this many bytes of frames waiting in its room:
/// enough for a message of the largest size allowed, or a few megabytes of
/// small ones (permits are counted in `u32`).
fn in_flight_bytes(max_message_bytes: usize) -> usize {
    let most = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
    max_message_bytes
        .max(4 << 20)
        .min(most)
        .min(Semaphore::MAX_PERMITS)
}

/// A frame's share of the budget: its length, and at most the whole budget
/// (a frame as large as is allowed waits until nothing else is in flight).
fn frame_cost(len: usize, capacity: usize) -> u32 {
    u32::try_from(len.clamp(1, capacity)).unwrap_or(u32::MAX)
}

/// Resolves when `cost` of the budget and a mailbox slot are both free;
/// `None` when the room is gone. Cancel-safe: what it took is given back.
async fn wait_for_room<'a>(
    room: &'a RoomHandle,
    budget: &Arc<Semaphore>,
    cost: u32,
) -> Option<(OwnedSemaphorePermit, mpsc::Permit<'a, Box<RoomCmd>>)> {
    let permit = Arc::clone(budget).acquire_many_owned(cost).await.ok()?;
    let slot = room.tx.reserve().await.ok()?;
    Some((permit, slot))
}

/// Sends the close frame, then waits (briefly) for the client to hang up:
/// closing a socket with unread bytes in it would reset the connection, and
/// the client could lose the close code.
async fn finish(
    stream: &TcpStream,
    outbox: &Outbox,
    writer: std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) {
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    if tokio::time::timeout_at(deadline, writer).await.is_err() {
        tracing::debug!("the close frame did not go out in time");
        outbox.gone();
        return;
    }
    linger(stream, deadline).await;
}

/// Reads and drops what the client still sends until it hangs up or `deadline`.
async fn linger(stream: &TcpStream, deadline: tokio::time::Instant) {
    // On the heap: a closing connection's buffer need not live in every session.
    let mut scratch = vec![0u8; 1024];
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Resolves when the token expires (never, without one).
async fn token_expiry(expires_at: Option<u64>) {
    match expires_at {
        Some(exp) => {
            // A claim past what the clock can hold never expires (and must
            // not overflow: `exp` is whatever the token says).
            let Some(wall) = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(exp)) else {
                return std::future::pending().await;
            };
            let left = wall
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// What a ping costs against the rate limit: a ping makes the server
/// write a pong, so a flood of them is a flood like any other.
const PING_COST: f64 = 1.0;

/// What a message costs against the rate limit. The stock client re-sends
/// every awareness change it hears (its handler ignores the origin), so in
/// a busy room each client echoes everyone's cursor moves; those echoes
/// change nothing on the server and cost a tenth of a document message. A
/// sync step 1 costs the room a diff of the whole document (unless it is
/// the state vector another joiner just sent), so it costs one more
/// message per 64 KiB of document: a client sends one when it connects.
fn message_cost(message: &protocol::Incoming, doc_bytes: usize) -> f64 {
    match message {
        protocol::Incoming::Awareness { .. } => 0.1,
        protocol::Incoming::SyncStep1(_) => 1.0 + (doc_bytes >> 16) as f64,
        _ => 1.0,
    }
}

/// A token bucket: `per_second` sustained, bursts of `max(2 × rate, 1000)`.
struct RateLimit {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// The most messages one frame may hold: a burst's worth (none with
    /// the limit off, but for what any frame can hold).
    fn burst(&self) -> usize {
        if self.per_second == 0.0 {
            usize::MAX
        } else {
            self.capacity as usize
        }
    }

    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        let capacity = (per_second * 2.0).max(1000.0);
        RateLimit {
            per_second,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn admit(&mut self, now: Instant, cost: f64) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut r = RateLimit::new(100);
        let burst = (0..5000).take_while(|_| r.admit(start, 1.0)).count();
        assert_eq!(burst, 1000);
        assert!(!r.admit(start, 1.0));
        let later = start + Duration::from_millis(100);
        let refill = (0..100).take_while(|_| r.admit(later, 1.0)).count();
        assert_eq!(refill, 10);
        let much_later = later + Duration::from_millis(100);
        let echoes = (0..1000).take_while(|_| r.admit(much_later, 0.1)).count();
        assert_eq!(echoes, 100);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let now = Instant::now();
        let mut r = RateLimit::new(0);
        assert!((0..100_000).all(|_| r.admit(now, 1.0)));
    }
}
