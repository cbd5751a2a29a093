//! One WebSocket connection: joins its room, reads frames, enforces the
//! message-size and message-rate limits, keeps the connection alive, and
//! leaves the room when it ends.
//!
//! Frames are decoded here, on the connection's own task, so the room only
//! sees well-formed messages. A bad frame closes this connection (4400,
//! 4413) and nothing of it reaches the room. Outgoing frames never pass
//! through this task: the room writes to the `Outbox`, which the response
//! body drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, ProtocolError};
use bytes::Bytes;
use tandem_crdt::protocol;
use tokio::sync::oneshot;

use super::actor::{JoinRefused, RoomCmd};
use super::fanout::Outbox;
use super::registry::{Registry, RoomHandle};
use super::ConnId;
use crate::doc_name::DocName;
use crate::error::CloseCode;

/// How often a join is retried when the room it was handed is unloading.
const JOIN_ATTEMPTS: usize = 5;

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
    /// Set by the connection's `FrameGuard` when a frame was over the limit.
    pub oversize: Arc<AtomicBool>,
    pub outbox: Arc<Outbox>,
    pub registry: Arc<Registry>,
}

/// Decrements the connection count however the session ends.
struct Counted(Arc<Registry>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// Runs the connection to its end. `keep` holds whatever must live as
    /// long as the connection (the upgrade's unused original body).
    pub async fn run<K>(self, mut stream: AggregatedMessageStream, keep: K) {
        let _keep = keep;
        let _counted = Counted(Arc::clone(&self.registry));
        let Some(room) = self.join().await else {
            return;
        };
        let deps = &self.registry.deps;
        let limits = &deps.limits;
        let mut rate = RateLimit::new(limits.max_messages_per_second);
        let ping_interval = deps.rooms.ping_interval;
        let ping_timeout = deps.rooms.ping_timeout;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        let mut last_heard = Instant::now();
        let shutdown = deps.shutdown.clone();
        let expiry = token_expiry(self.expires_at);
        tokio::pin!(expiry);

        loop {
            tokio::select! {
                msg = stream.recv() => {
                    let Some(msg) = msg else { break };
                    last_heard = Instant::now();
                    match msg {
                        Ok(AggregatedMessage::Binary(frame)) => {
                            if !rate.admit(Instant::now(), message_cost(&frame)) {
                                tracing::warn!("message rate over the limit; closing");
                                self.outbox.close(CloseCode::TryAgainLater, "message rate limit exceeded");
                                break;
                            }
                            if !self.forward(&room, frame).await {
                                break;
                            }
                        }
                        Ok(AggregatedMessage::Text(_)) => {
                            tracing::warn!("text frame; closing");
                            self.outbox.close(CloseCode::Malformed, "text frames are not part of the protocol");
                            break;
                        }
                        Ok(AggregatedMessage::Ping(payload)) => self.outbox.pong(payload),
                        Ok(AggregatedMessage::Pong(_)) => {}
                        Ok(AggregatedMessage::Close(_)) => {
                            self.outbox.close(CloseCode::GoingAway, "");
                            break;
                        }
                        Err(_) if self.oversize.load(Ordering::Relaxed) => {
                            tracing::warn!(limit = limits.max_message_bytes, "message over the size limit; closing");
                            self.outbox.close(CloseCode::TooLarge, "message too large");
                            break;
                        }
                        Err(ProtocolError::Overflow) => {
                            tracing::warn!(limit = limits.max_message_bytes, "message over the size limit; closing");
                            self.outbox.close(CloseCode::TooLarge, "message too large");
                            break;
                        }
                        Err(ProtocolError::Io(e)) => {
                            tracing::debug!(error = %e, "connection lost");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "WebSocket protocol error; closing");
                            self.outbox.close(CloseCode::Malformed, "WebSocket protocol error");
                            break;
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_timeout {
                        tracing::info!("no answer to pings; closing");
                        self.outbox.close(CloseCode::GoingAway, "ping timeout");
                        break;
                    }
                    self.outbox.ping();
                    if self.outbox.idle_for() >= ping_interval {
                        let _ = self.outbox.push(Bytes::from_static(KEEPALIVE));
                    }
                }
                _ = &mut expiry => {
                    tracing::info!("token expired; closing");
                    self.outbox.close(CloseCode::Unauthorized, "token expired");
                    break;
                }
                _ = self.outbox.closed() => break,
                _ = shutdown.cancelled() => {
                    self.outbox.close(CloseCode::GoingAway, "server shutting down");
                    break;
                }
            }
        }
        // The room must hear of every leave (awareness cleanup), so wait for
        // mailbox space; an error means the room is gone already.
        let _ = room.tx.send(RoomCmd::Leave { conn: self.conn }).await;
        tracing::debug!(close = ?self.outbox.close_code(), "connection ended");
    }

    async fn join(&self) -> Option<RoomHandle> {
        for _ in 0..JOIN_ATTEMPTS {
            let room = self.registry.handle(&self.name);
            let (reply, answer) = oneshot::channel();
            let cmd = RoomCmd::Join {
                conn: self.conn,
                user: self.user.clone(),
                read_only: self.read_only,
                outbox: Arc::clone(&self.outbox),
                reply,
            };
            if room.tx.send(cmd).await.is_err() {
                continue; // the room stopped meanwhile: get a fresh one
            }
            match answer.await {
                Ok(Ok(())) => return Some(room),
                Ok(Err(JoinRefused::Full)) => {
                    tracing::warn!("room full; refusing the connection");
                    self.outbox.close(CloseCode::TryAgainLater, "room full");
                    return None;
                }
                Ok(Err(JoinRefused::Unavailable)) => break,
                Err(_) => continue, // the room unloaded before answering
            }
        }
        self.outbox.close(
            CloseCode::TryAgainLater,
            "document unavailable, retry later",
        );
        None
    }

    /// Decodes a frame and hands it to the room. Returns false when the
    /// connection must end.
    async fn forward(&self, room: &RoomHandle, frame: Bytes) -> bool {
        let messages = match protocol::decode_frame(&frame) {
            Ok(m) => m,
            Err(e) => {
                self.registry.deps.metrics.malformed_messages.increment(1);
                tracing::warn!(error = %e, bytes = frame.len(), "malformed message; closing");
                self.outbox.close(CloseCode::Malformed, "malformed message");
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
        if room.tx.send(cmd).await.is_err() {
            self.outbox
                .close(CloseCode::InternalError, "room restarted; reconnect");
            return false;
        }
        true
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
