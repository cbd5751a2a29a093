//! Per-peer send queues and the WebSocket response body that drains them.
//!
//! The room pushes frames into a peer's `Outbox` without waiting: `push`
//! takes a short lock and never blocks. A peer whose backlog would pass the
//! limit is closed with 1013 instead (it resyncs on reconnect), so a slow
//! client never stalls its room and never silently misses an update.
//!
//! `OutboxBody` is the HTTP response body of the upgraded connection: it
//! turns queued payloads into WebSocket frames itself. Server frames are not
//! masked, so a payload goes out as the very `Bytes` the room shared between
//! all peers (no copy per peer), in slices of `CHUNK` bytes so that the HTTP
//! layer never buffers a whole large frame per connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::error::CloseCode;

/// Largest slice of a payload handed to the HTTP layer at once.
const CHUNK: usize = 64 * 1024;
/// Payloads up to this size are copied next to their header (one write).
const INLINE: usize = 1024;

const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

pub struct Outbox {
    state: Mutex<State>,
    /// Cancelled when the connection is closing or gone: the session and the
    /// room stop using it.
    closed: CancellationToken,
    limit: usize,
}

struct State {
    frames: VecDeque<(u8, Bytes)>,
    /// Control frames (ping, pong) jump the queue.
    control: VecDeque<(u8, Bytes)>,
    queued_bytes: usize,
    close: Option<(CloseCode, &'static str)>,
    waker: Option<Waker>,
    last_push: Instant,
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                control: VecDeque::new(),
                queued_bytes: 0,
                close: None,
                waker: None,
                last_push: Instant::now(),
            }),
            closed: CancellationToken::new(),
            limit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Held only to push or pop; a poisoned queue is still a valid queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a binary frame. A frame that would take the backlog over the
    /// limit closes the connection with 1013 and returns `Overflow`; a frame
    /// of any size is accepted when the backlog is empty.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        let waker = {
            let mut s = self.lock();
            if s.close.is_some() {
                return Err(Overflow);
            }
            if !s.frames.is_empty() && s.queued_bytes + frame.len() > self.limit {
                s.frames.clear();
                s.queued_bytes = 0;
                s.close = Some((
                    CloseCode::TryAgainLater,
                    "too slow to keep up; reconnect to resync",
                ));
                self.closed.cancel();
                s.waker.take()
            } else {
                s.queued_bytes += frame.len();
                s.frames.push_back((OP_BINARY, frame));
                s.last_push = Instant::now();
                s.waker.take()
            }
        };
        let overflowed = self.closed.is_cancelled();
        if let Some(w) = waker {
            w.wake();
        }
        if overflowed {
            Err(Overflow)
        } else {
            Ok(())
        }
    }

    pub fn ping(&self) {
        self.push_control(OP_PING, Bytes::new());
    }

    pub fn pong(&self, payload: Bytes) {
        self.push_control(OP_PONG, payload);
    }

    fn push_control(&self, op: u8, payload: Bytes) {
        let waker = {
            let mut s = self.lock();
            if s.close.is_some() {
                return;
            }
            s.control.push_back((op, payload));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Closes the connection with `code`: frames still queued are dropped and
    /// the close frame goes out next. The first close wins.
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        let waker = {
            let mut s = self.lock();
            if s.close.is_none() {
                s.close = Some((code, reason));
                s.frames.clear();
                s.control.clear();
                s.queued_bytes = 0;
            }
            s.waker.take()
        };
        self.closed.cancel();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The close code chosen so far, if any.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.lock().close.map(|(c, _)| c)
    }

    /// Resolves when the connection is closing or gone.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Time since a data frame was last queued.
    pub fn idle_for(&self) -> std::time::Duration {
        self.lock().last_push.elapsed()
    }

    fn pop(&self, waker: &Waker) -> Next {
        let mut s = self.lock();
        if let Some((op, payload)) = s.control.pop_front() {
            return Next::Frame(op, payload);
        }
        if let Some((op, payload)) = s.frames.pop_front() {
            s.queued_bytes -= payload.len();
            return Next::Frame(op, payload);
        }
        if let Some((code, reason)) = s.close {
            return Next::Close(code, reason);
        }
        s.waker = Some(waker.clone());
        Next::Empty
    }
}

enum Next {
    Frame(u8, Bytes),
    Close(CloseCode, &'static str),
    Empty,
}

/// The response body of an upgraded WebSocket connection.
pub struct OutboxBody {
    outbox: Arc<Outbox>,
    /// The rest of a large payload being sent in slices.
    rest: Bytes,
    done: bool,
}

impl OutboxBody {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        OutboxBody {
            outbox,
            rest: Bytes::new(),
            done: false,
        }
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        // The connection is gone: let the session and the room know.
        self.outbox.closed.cancel();
    }
}

impl MessageBody for OutboxBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            let n = this.rest.len().min(CHUNK);
            return Poll::Ready(Some(Ok(this.rest.split_to(n))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.outbox.pop(cx.waker()) {
            Next::Frame(op, payload) => {
                let mut out = BytesMut::with_capacity(10 + payload.len().min(INLINE));
                put_header(&mut out, op, payload.len());
                if payload.len() <= INLINE {
                    out.put_slice(&payload);
                } else {
                    this.rest = payload;
                }
                Poll::Ready(Some(Ok(out.freeze())))
            }
            Next::Close(code, reason) => {
                this.done = true;
                Poll::Ready(Some(Ok(close_frame(code, reason))))
            }
            Next::Empty => Poll::Pending,
        }
    }
}

/// An unmasked server frame header (RFC 6455 §5.2) with FIN set.
fn put_header(out: &mut BytesMut, op: u8, len: usize) {
    out.put_u8(0x80 | op);
    if len < 126 {
        out.put_u8(len as u8); // lossless: len < 126
    } else if let Ok(len16) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64); // usize fits u64 on every supported target
    }
}

fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    // Control frames carry at most 125 bytes: 2 for the code, 123 for the reason.
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut out = BytesMut::with_capacity(4 + reason.len());
    put_header(&mut out, OP_CLOSE, 2 + reason.len());
    out.put_u16(code.code());
    out.put_slice(reason);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Frame};
    use actix_web::web::BytesMut as ActixBytesMut;
    use tokio_util::codec::Decoder;

    /// Drains the body the way the HTTP layer would, then decodes what it
    /// wrote with actix's own client-side WebSocket codec.
    fn drain(body: &mut OutboxBody) -> Vec<Frame> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wire = ActixBytesMut::new();
        loop {
            match Pin::new(&mut *body).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => wire.extend_from_slice(&chunk),
                Poll::Ready(None) | Poll::Pending => break,
                Poll::Ready(Some(Err(never))) => match never {},
            }
        }
        let mut codec = Codec::new().client_mode().max_size(64 << 20);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut wire).expect("valid frames") {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn frames_of_every_length_class_decode() {
        let outbox = Outbox::new(1 << 30);
        let sizes = [0usize, 125, 126, 1000, 65535, 65536, 300_000];
        for n in sizes {
            outbox.push(Bytes::from(vec![7u8; n])).expect("fits");
        }
        outbox.ping();
        let mut body = OutboxBody::new(outbox.clone());
        let frames = drain(&mut body);
        assert!(
            matches!(frames[0], Frame::Ping(_)),
            "control frames go first"
        );
        for (frame, n) in frames[1..].iter().zip(sizes) {
            match frame {
                Frame::Binary(b) => assert_eq!(b.len(), n),
                other => panic!("expected binary, got {other:?}"),
            }
        }
    }

    #[test]
    fn close_sends_the_code_and_ends_the_body() {
        let outbox = Outbox::new(1 << 20);
        outbox.push(Bytes::from_static(b"dropped")).expect("fits");
        outbox.close(CloseCode::Malformed, "bad frame");
        let mut body = OutboxBody::new(outbox.clone());
        let frames = drain(&mut body);
        assert_eq!(frames.len(), 1);
        match &frames[0] {
            Frame::Close(Some(reason)) => assert_eq!(u16::from(reason.code), 4400),
            other => panic!("expected close, got {other:?}"),
        }
        assert!(outbox.is_closed());
    }

    #[test]
    fn overflow_closes_with_1013() {
        let outbox = Outbox::new(100);
        outbox
            .push(Bytes::from(vec![0u8; 500]))
            .expect("an empty queue takes any frame");
        assert_eq!(outbox.push(Bytes::from(vec![0u8; 10])), Err(Overflow));
        assert_eq!(outbox.close_code(), Some(CloseCode::TryAgainLater));
        assert!(outbox.is_closed());
    }
}
