//! `FrameGuard` wraps a connection's raw request payload and reads each
//! incoming WebSocket frame header (RFC 6455 §5.2) as the bytes pass by. A
//! frame that declares a payload over the limit ends the stream at once,
//! before any of that payload is buffered: actix-http's parser would
//! otherwise read the whole frame into memory before checking its size.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

pub struct FrameGuard<S> {
    inner: S,
    max_payload: u64,
    /// Header bytes seen so far for the frame being read (at most 14).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes still to pass before the next header.
    payload_left: u64,
    tripped: Arc<AtomicBool>,
}

impl<S> FrameGuard<S> {
    /// `tripped` is set when a frame over `max_payload` was refused.
    pub fn new(inner: S, max_payload: usize, tripped: Arc<AtomicBool>) -> Self {
        FrameGuard {
            inner,
            max_payload: max_payload as u64, // usize fits u64 on supported targets
            header: [0; 14],
            header_len: 0,
            payload_left: 0,
            tripped,
        }
    }

    /// Advances over `chunk`; returns false when a frame is over the limit.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(chunk.len() as u64);
                self.payload_left -= n;
                chunk = &chunk[n as usize..]; // n <= chunk.len()
                continue;
            }
            self.header[self.header_len] = chunk[0];
            self.header_len += 1;
            chunk = &chunk[1..];
            if let Some((payload, header_size)) = self.declared() {
                if payload > self.max_payload {
                    return false;
                }
                if self.header_len == header_size {
                    self.payload_left = payload;
                    self.header_len = 0;
                }
            }
        }
        true
    }

    /// The declared payload length and the header's full size, as soon as
    /// the length bytes are in (before the mask).
    fn declared(&self) -> Option<(u64, usize)> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let ext = match h[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if h.len() < 2 + ext {
            return None;
        }
        let len = if ext == 0 {
            u64::from(h[1] & 0x7f)
        } else {
            h[2..2 + ext]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        Some((len, 2 + ext + mask))
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.tripped.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if this.scan(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    this.tripped.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(
            futures_util::stream::empty(),
            max,
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn frames_under_the_limit_pass_byte_by_byte() {
        let mut g = guard(70_000);
        let wire: Vec<u8> = [frame(5), frame(300), frame(70_000), frame(0)].concat();
        for b in wire.chunks(1) {
            assert!(g.scan(b));
        }
        assert_eq!((g.header_len, g.payload_left), (0, 0));
    }

    #[test]
    fn a_frame_over_the_limit_trips_on_its_header() {
        let mut g = guard(1000);
        assert!(g.scan(&frame(1000)));
        let big = frame(1001);
        assert!(!g.scan(&big[..4]), "the header alone is enough");
        let mut g = guard(1 << 20);
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(100u64 << 20).to_be_bytes());
        assert!(!g.scan(&huge));
    }
}
