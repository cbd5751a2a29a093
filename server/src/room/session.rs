//! One WebSocket connection: joins its room, reads frames, enforces the
//! message-size and message-rate limits, keeps the connection alive, and
//! leaves the room when it ends.
//!
//! The session owns the socket Tandem took over after the upgrade. Frames
//! are decoded here, on the connection's own task, so the room only sees
//! well-formed messages. A bad frame closes this connection (4400, 4413)
//! and nothing of it reaches the room. Outgoing frames are written by the
//! room straight to the socket (`Outbox`); this task only sends what the
//! socket could not take at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_crdt::protocol;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::actor::{JoinRefused, RoomCmd};
use super::registry::{Registry, RoomHandle};
use super::ConnId;
use crate::doc_name::DocName;
use crate::net::outbox::Outbox;
use crate::net::wire::{FrameReader, Incoming, WireError};
use crate::net::CloseCode;

/// How often a join is retried when the room it was handed is unloading.
const JOIN_ATTEMPTS: usize = 5;

/// How long a closing connection waits for its close frame to go out and
/// for the client to hang up, so that the client reads the close code
/// rather than a reset.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An empty awareness update: a harmless application-level message. The
/// stock client reconnects after 30 s without one (WebSocket pings are
/// invisible to page code), so a connection that heard nothing else for a
/// ping interval gets this.
const KEEPALIVE: &[u8] = &[protocol::MSG_AWARENESS, 1, 0];

pub struct Session {
    pub conn: ConnId,
    pub name: DocName,
    pub read_only: bool,
    /// The token's `sub`, if any.
    pub user: Option<Arc<str>>,
    /// When the connection's token expires (unix seconds): it is closed then with 4401.
    pub expires_at: Option<u64>,
    pub registry: Arc<Registry>,
}

/// Decrements the connection count however the session ends.
struct Counted(Arc<Registry>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
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
    pub async fn run(self, stream: TcpStream, early: BytesMut) {
        if let Err(e) = stream.set_nodelay(true) {
            // Small frames would wait for the previous one's ACK (Nagle).
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let stream = Arc::new(stream);
        let limits = &self.registry.deps.limits;
        let outbox = Outbox::new(Arc::clone(&stream), limits.send_queue_bytes);
        let writer = outbox.run_writer();
        tokio::pin!(writer);

        let open = self.registry.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let counted = Counted(Arc::clone(&self.registry));
        let mut end = End::Closing;
        if open > limits.max_connections {
            tracing::warn!(open, "server full; refusing the connection");
            outbox.close(CloseCode::TryAgainLater, "server full");
        } else if let Some(room) = self.join(&outbox).await {
            end = self
                .serve(&room, &stream, &outbox, early, writer.as_mut())
                .await;
            // The room must hear of every leave (awareness cleanup), so wait
            // for mailbox space; an error means the room is gone already.
            let _ = room
                .tx
                .send(Box::new(RoomCmd::Leave { conn: self.conn }))
                .await;
        }
        // A closing connection no longer counts against the limits.
        drop(counted);
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
        outbox: &Outbox,
        early: BytesMut,
        mut writer: std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    ) -> End {
        let deps = &self.registry.deps;
        let limits = &deps.limits;
        let mut reader = FrameReader::new(early, limits.max_message_bytes);
        let mut rate = RateLimit::new(limits.max_messages_per_second);
        let ping_interval = deps.rooms.ping_interval;
        let ping_timeout = deps.rooms.ping_timeout;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        let mut last_heard = Instant::now();
        let shutdown = deps.shutdown.clone();
        let expiry = token_expiry(self.expires_at);
        tokio::pin!(expiry);
        // Bytes that came with the upgrade request are handled first.
        let mut buffered = true;

        loop {
            if buffered {
                buffered = false;
                if let Err(end) = self
                    .handle_buffered(room, outbox, &mut reader, &mut rate)
                    .await
                {
                    return end;
                }
            }
            // An idle connection holds no read buffer.
            reader.release_idle_buffer();
            tokio::select! {
                ready = stream.readable() => {
                    if ready.is_err() {
                        outbox.gone();
                        return End::Gone;
                    }
                    match stream.try_read_buf(reader.read_buf()) {
                        Ok(0) => {
                            outbox.gone();
                            return End::Gone;
                        }
                        Ok(_) => {
                            last_heard = Instant::now();
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
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_timeout {
                        tracing::info!("no answer to pings; closing");
                        outbox.close(CloseCode::GoingAway, "ping timeout");
                        return End::Closing;
                    }
                    outbox.ping();
                    if !outbox.take_sent() {
                        let _ = outbox.push(Bytes::from_static(KEEPALIVE));
                        // The keepalive itself does not count as traffic.
                        outbox.take_sent();
                    }
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

    /// Handles every whole message in the read buffer.
    async fn handle_buffered(
        &self,
        room: &RoomHandle,
        outbox: &Outbox,
        reader: &mut FrameReader,
        rate: &mut RateLimit,
    ) -> Result<(), End> {
        let limits = &self.registry.deps.limits;
        loop {
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
                    if !rate.admit(Instant::now(), message_cost(&frame)) {
                        tracing::warn!("message rate over the limit; closing");
                        outbox.close(CloseCode::TryAgainLater, "message rate limit exceeded");
                        return Err(End::Closing);
                    }
                    if !self.forward(room, outbox, frame).await {
                        return Err(End::Closing);
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
                Incoming::Ping(payload) => outbox.pong(payload),
                Incoming::Pong => {}
                Incoming::Close => {
                    outbox.close(CloseCode::GoingAway, "");
                    return Err(End::Closing);
                }
            }
        }
    }

    async fn join(&self, outbox: &Arc<Outbox>) -> Option<RoomHandle> {
        for _ in 0..JOIN_ATTEMPTS {
            let room = self.registry.handle(&self.name);
            let (reply, answer) = oneshot::channel();
            let cmd = RoomCmd::Join {
                conn: self.conn,
                user: self.user.clone(),
                read_only: self.read_only,
                outbox: Arc::clone(outbox),
                reply,
            };
            if room.tx.send(Box::new(cmd)).await.is_err() {
                continue; // the room stopped meanwhile: get a fresh one
            }
            match answer.await {
                Ok(Ok(())) => return Some(room),
                Ok(Err(JoinRefused::Full)) => {
                    tracing::warn!("room full; refusing the connection");
                    outbox.close(CloseCode::TryAgainLater, "room full");
                    return None;
                }
                Ok(Err(JoinRefused::Unavailable)) => break,
                Err(_) => continue, // the room unloaded before answering
            }
        }
        outbox.close(
            CloseCode::TryAgainLater,
            "document unavailable, retry later",
        );
        None
    }

    /// Decodes a frame and hands it to the room. Returns false when the
    /// connection must end.
    async fn forward(&self, room: &RoomHandle, outbox: &Outbox, frame: Bytes) -> bool {
        let messages = match protocol::decode_frame(&frame) {
            Ok(m) => m,
            Err(e) => {
                self.registry.deps.metrics.malformed_messages.increment(1);
                tracing::warn!(error = %e, bytes = frame.len(), "malformed message; closing");
                outbox.close(CloseCode::Malformed, "malformed message");
                return false;
            }
        };
        let cmd = RoomCmd::Frame {
            conn: self.conn,
            read_only: self.read_only,
            user: self.user.clone(),
            frame,
            messages,
        };
        if room.tx.send(Box::new(cmd)).await.is_err() {
            outbox.close(CloseCode::InternalError, "room restarted; reconnect");
            return false;
        }
        true
    }
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
            let wall = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
            let left = wall
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// What a frame costs against the rate limit. The stock client re-sends
/// every awareness change it hears (its handler ignores the origin), so in a
/// busy room each client echoes everyone's cursor moves; those echoes change
/// nothing on the server and cost a tenth of a document message.
fn message_cost(frame: &[u8]) -> f64 {
    if frame.first() == Some(&protocol::MSG_AWARENESS) {
        0.1
    } else {
        1.0
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
    use std::time::Duration;

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
