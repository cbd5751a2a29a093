//! A peer's outgoing side: the socket's write half and its send queue.
//!
//! The room calls `push` without ever waiting. When nothing is queued the
//! frame is written to the socket right there with one non-blocking system
//! call (no task to wake): a `send` of a frame the room encoded once for all
//! peers (`push_frame`), or a `writev` of a header and a payload shared
//! without a copy (`push`, for a large sync step 2 that many joiners
//! share). Whatever the socket does not take at once is queued, and the
//! connection's writer (`run_writer`, on the session's task) sends it as
//! the socket drains. A peer whose backlog would pass the limit
//! is closed with 1013 instead (it resyncs on reconnect), so a slow client
//! never stalls its room and never silently misses an update.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::net::wire::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG};
use crate::net::{clock, send_ring, CloseCode};

/// At most this many frames go into one `writev`.
const MAX_SLICES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

pub struct Outbox {
    stream: Arc<TcpStream>,
    /// `stream`'s descriptor, kept here so that a room handing out the
    /// sockets of a thousand peers reads it without chasing the stream's
    /// pointers (a cache miss or two per peer, seen in `perf`).
    fd: RawFd,
    state: Mutex<State>,
    /// Wakes the writer when frames wait in the queue.
    queued: Notify,
    /// Cancelled when the connection is closing or gone: the session and the
    /// room stop using it.
    closed: CancellationToken,
    limit: usize,
}

struct State {
    /// Frames not yet wholly written, in order; the front may be partly written.
    queue: VecDeque<Pending>,
    /// Payload bytes of the queued frames not yet begun: the backlog the
    /// limit applies to (a large frame being written counts as sent, as
    /// sync step 2 of a big document must not overflow a new peer).
    queued_bytes: usize,
    close: Option<(CloseCode, &'static str)>,
    /// The close frame is queued or written; nothing else may follow it.
    close_queued: bool,
    /// The socket failed: nothing more can be written.
    broken: bool,
    /// When a data frame was last queued or sent (`clock` steps): the
    /// keepalive writes to a connection that has heard nothing for a while.
    last_data: u64,
    /// The room is writing a frame to the socket itself (`begin_direct`):
    /// nothing else may be written until it reports (`end_direct`).
    direct: bool,
}

struct Pending {
    header: [u8; 10],
    /// 0 when `payload` is a whole encoded frame.
    header_len: u8,
    payload: Bytes,
    /// Bytes of header and payload already written.
    written: usize,
}

impl Pending {
    fn new(op: u8, payload: Bytes) -> Self {
        let (header, len) = wire::header(op, payload.len());
        Pending {
            header,
            header_len: len as u8, // at most 10
            payload,
            written: 0,
        }
    }

    /// A frame already encoded by `wire::binary_frame`.
    fn encoded(frame: Bytes) -> Self {
        Pending {
            header: [0; 10],
            header_len: 0,
            payload: frame,
            written: 0,
        }
    }

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    fn len(&self) -> usize {
        self.header().len() + self.payload.len()
    }

    /// The unwritten parts, as at most two slices.
    fn unwritten(&self) -> [&[u8]; 2] {
        let h = self.header();
        if self.written < h.len() {
            [&h[self.written..], &self.payload]
        } else {
            [&[], &self.payload[self.written - h.len()..]]
        }
    }
}

/// What one pass of the writer achieved.
pub enum Flushed {
    /// The queue is empty.
    Empty,
    /// The socket takes no more for now.
    Blocked,
    /// The close frame is out: the connection is done sending.
    CloseSent,
}

impl Outbox {
    pub fn new(stream: Arc<TcpStream>, limit: usize) -> Arc<Self> {
        let fd = stream.as_raw_fd();
        Arc::new(Outbox {
            stream,
            fd,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                close: None,
                close_queued: false,
                broken: false,
                // The clock stands still while the keepalive thread sleeps:
                // moved on here, connections that join during one sleep are
                // stamped apart, and their keepalives fall due apart rather
                // than in one burst.
                last_data: clock::tick(),
                direct: false,
            }),
            queued: Notify::new(),
            closed: CancellationToken::new(),
            limit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Held only to queue or write without blocking; a poisoned queue is still a valid queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `payload` as a binary frame, or queues what the socket does not
    /// take at once. A frame that would take the backlog over the limit
    /// closes the connection with 1013 and returns `Overflow`; a frame of any
    /// size is accepted when the backlog is empty.
    pub fn push(&self, payload: Bytes) -> Result<(), Overflow> {
        self.push_pending(Pending::new(OP_BINARY, payload))
    }

    /// As `push`, for a frame encoded by `wire::binary_frame`.
    pub fn push_frame(&self, frame: Bytes) -> Result<(), Overflow> {
        self.push_pending(Pending::encoded(frame))
    }

    fn push_pending(&self, frame: Pending) -> Result<(), Overflow> {
        let mut s = self.lock();
        self.push_locked(&mut s, frame)
    }

    fn push_locked(&self, s: &mut State, frame: Pending) -> Result<(), Overflow> {
        if s.close.is_some() || s.broken {
            return Err(Overflow);
        }
        s.last_data = clock::now();
        if !s.queue.is_empty() && s.queued_bytes + frame.payload.len() > self.limit {
            self.close_locked(
                s,
                CloseCode::TryAgainLater,
                "too slow to keep up; reconnect to resync",
            );
            return Err(Overflow);
        }
        self.send_locked(s, frame);
        if s.broken {
            Err(Overflow)
        } else {
            Ok(())
        }
    }

    /// The first half of `push_frame` for a room that writes one frame to
    /// many sockets with one system call (`send_ring`). When nothing is
    /// queued, returns the socket for the caller to write `frame` to now,
    /// without waiting, and the outbox holds every other frame back until
    /// `end_direct` reports what the socket took. Otherwise the frame is
    /// queued, or refused, as by `push_frame`.
    pub fn begin_direct(&self, frame: &Bytes) -> Result<Option<RawFd>, Overflow> {
        let mut s = self.lock();
        if s.queue.is_empty() && !s.direct && s.close.is_none() && !s.broken {
            s.last_data = clock::now();
            s.direct = true;
            return Ok(Some(self.fd));
        }
        self.push_locked(&mut s, Pending::encoded(frame.clone()))
            .map(|()| None)
    }

    /// Writes `frame` as `send_ring` would, for a socket that `begin_direct`
    /// handed out when the ring is not there.
    pub fn write_direct(&self, frame: &Bytes) -> io::Result<usize> {
        self.stream.try_write(frame)
    }

    /// The second half of `begin_direct`: `written` is what the socket took
    /// of `frame`. The rest is queued ahead of anything pushed meanwhile.
    pub fn end_direct(&self, frame: &Bytes, written: io::Result<usize>) -> Result<(), Overflow> {
        let mut s = self.lock();
        s.direct = false;
        let n = match written {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                if !s.broken {
                    self.fail_locked(&mut s, &e);
                }
                return Err(Overflow);
            }
        };
        if s.broken {
            return Err(Overflow);
        }
        // A connection closed meanwhile drops a frame it has not begun.
        if n < frame.len() && (n > 0 || s.close.is_none()) {
            let mut rest = Pending::encoded(frame.clone());
            rest.written = n;
            if n == 0 {
                s.queued_bytes += frame.len();
            }
            s.queue.push_front(rest);
        }
        if !s.queue.is_empty() {
            self.queued.notify_one();
        }
        Ok(())
    }

    pub fn ping(&self) {
        self.push_control(OP_PING, Bytes::new());
    }

    pub fn pong(&self, payload: Bytes) {
        self.push_control(OP_PONG, payload);
    }

    /// Queues a control frame. Control frames count against the backlog
    /// like any other, and a pong not yet begun is replaced by the newest
    /// (RFC 6455 allows answering only the last ping), so a client that
    /// pings without reading cannot grow the queue.
    fn push_control(&self, op: u8, payload: Bytes) {
        let mut s = self.lock();
        if s.close.is_some() || s.broken {
            return;
        }
        if op == OP_PONG {
            let unbegun_pong = s
                .queue
                .iter_mut()
                .find(|f| f.written == 0 && f.header_len > 0 && f.header[0] == 0x80 | OP_PONG);
            if let Some(pong) = unbegun_pong {
                let old = pong.payload.len();
                *pong = Pending::new(OP_PONG, payload);
                let new = pong.payload.len();
                s.queued_bytes = s.queued_bytes - old + new;
                return;
            }
        }
        if !s.queue.is_empty() && s.queued_bytes + payload.len() > self.limit {
            self.close_locked(
                &mut s,
                CloseCode::TryAgainLater,
                "too slow to keep up; reconnect to resync",
            );
            return;
        }
        self.send_locked(&mut s, Pending::new(op, payload));
    }

    /// Writes `frame` now if nothing is queued ahead of it; queues the rest.
    fn send_locked(&self, s: &mut State, mut frame: Pending) {
        if s.queue.is_empty() && !s.direct {
            let [a, b] = frame.unwritten();
            let written = if a.is_empty() {
                self.stream.try_write(b)
            } else {
                self.stream
                    .try_write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            };
            match written {
                Ok(n) if n == frame.len() => return,
                Ok(n) => frame.written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.fail_locked(s, &e);
                    return;
                }
            }
        }
        if frame.written == 0 {
            s.queued_bytes += frame.payload.len();
        }
        s.queue.push_back(frame);
        self.queued.notify_one();
    }

    /// Closes the connection with `code`: frames still queued are dropped
    /// (but for one already partly written) and the close frame goes next.
    /// The first close wins.
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        let mut s = self.lock();
        self.close_locked(&mut s, code, reason);
    }

    fn close_locked(&self, s: &mut State, code: CloseCode, reason: &'static str) {
        if s.close.is_none() {
            s.close = Some((code, reason));
            let started = s.queue.front().is_some_and(|f| f.written > 0);
            s.queue.truncate(usize::from(started));
            s.queued_bytes = 0;
            if !s.broken {
                s.close_queued = true;
                let frame = Pending::new(OP_CLOSE, wire::close_payload(code, reason));
                self.send_locked(s, frame);
            }
        }
        self.closed.cancel();
        self.queued.notify_one();
    }

    fn fail_locked(&self, s: &mut State, e: &io::Error) {
        tracing::debug!(error = %e, "writing to the socket failed");
        s.broken = true;
        s.queue.clear();
        s.queued_bytes = 0;
        self.closed.cancel();
        self.queued.notify_one();
    }

    /// Writes as much of the queue as the socket takes now.
    fn flush(&self) -> io::Result<Flushed> {
        let mut s = self.lock();
        loop {
            if s.broken {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if s.direct {
                // `end_direct` wakes the writer if it leaves anything queued.
                return Ok(Flushed::Empty);
            }
            if s.queue.is_empty() {
                return Ok(if s.close_queued {
                    Flushed::CloseSent
                } else {
                    Flushed::Empty
                });
            }
            let mut slices = Vec::with_capacity(2 * MAX_SLICES.min(s.queue.len()));
            for frame in s.queue.iter().take(MAX_SLICES) {
                for part in frame.unwritten() {
                    if !part.is_empty() {
                        slices.push(IoSlice::new(part));
                    }
                }
            }
            let written = self.stream.try_write_vectored(&slices);
            drop(slices);
            let mut n = match written {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) => {
                    self.fail_locked(&mut s, &e);
                    return Err(e);
                }
            };
            let State {
                queue,
                queued_bytes,
                ..
            } = &mut *s;
            while n > 0 {
                let Some(front) = queue.front_mut() else {
                    break;
                };
                if front.written == 0 {
                    *queued_bytes -= front.payload.len();
                }
                let left = front.len() - front.written;
                if n < left {
                    front.written += n;
                    break;
                }
                n -= left;
                queue.pop_front();
            }
        }
    }

    /// The connection's writer: sends what `push` queued whenever the socket
    /// can take it. It returns once the close frame is out, or with the
    /// error that broke the socket.
    pub async fn run_writer(&self) -> io::Result<()> {
        loop {
            match self.flush()? {
                Flushed::Empty => self.queued.notified().await,
                Flushed::Blocked => self.stream.writable().await?,
                Flushed::CloseSent => return Ok(()),
            }
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

    /// Marks the connection gone (the client hung up): the room drops it.
    pub fn gone(&self) {
        let mut s = self.lock();
        s.broken = true;
        s.queue.clear();
        s.queued_bytes = 0;
        self.closed.cancel();
        self.queued.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// When a data frame was last queued or sent, in `clock` steps.
    pub fn last_data(&self) -> u64 {
        self.lock().last_data
    }
}

/// Writes one frame to many outboxes, as `push_frame` would to each, with
/// one system call for all those whose queue is empty (`send_ring`). Its
/// buffers are kept from one use to the next.
#[derive(Default)]
pub struct Fanout {
    targets: Vec<usize>,
    fds: Vec<RawFd>,
    results: Vec<io::Result<usize>>,
}

impl Fanout {
    /// Pushes `frame` to `outbox_of(i)` for each `i` of `targets`, and
    /// reports each outcome as `done(i, outcome)`.
    pub fn push_frame<'a>(
        &mut self,
        frame: &Bytes,
        targets: impl IntoIterator<Item = usize>,
        outbox_of: impl Fn(usize) -> &'a Outbox,
        mut done: impl FnMut(usize, Result<(), Overflow>),
    ) {
        // Left over only if a caller's `done` panicked midway: those
        // descriptors may since belong to other sockets.
        self.targets.clear();
        self.fds.clear();
        for i in targets {
            match outbox_of(i).begin_direct(frame) {
                Ok(Some(fd)) => {
                    self.fds.push(fd);
                    self.targets.push(i);
                }
                Ok(None) => done(i, Ok(())),
                Err(Overflow) => done(i, Err(Overflow)),
            }
        }
        let batched =
            self.fds.len() > 1 && send_ring::send_all(frame, &self.fds, &mut self.results);
        for (k, &i) in self.targets.iter().enumerate() {
            let outbox = outbox_of(i);
            let written = if batched {
                std::mem::replace(&mut self.results[k], Ok(0))
            } else {
                outbox.write_direct(frame)
            };
            done(i, outbox.end_direct(frame, written));
        }
        self.targets.clear();
        self.fds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Frame};
    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;

    /// A connected pair: the server end in an `Outbox`, the client end raw.
    async fn pair(limit: usize) -> (Arc<Outbox>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Outbox::new(Arc::new(server), limit), client)
    }

    /// Runs the connection's writer, as the session does.
    fn spawn_writer(outbox: &Arc<Outbox>) -> tokio::task::JoinHandle<io::Result<()>> {
        let outbox = Arc::clone(outbox);
        tokio::spawn(async move { outbox.run_writer().await })
    }

    fn assert_close(frame: &Frame, code: u16) {
        match frame {
            Frame::Close(Some(reason)) => assert_eq!(u16::from(reason.code), code),
            other => panic!("expected close, got {other:?}"),
        }
    }

    /// Reads frames with actix's client-side codec until `count` arrived.
    async fn read_frames(client: &mut tokio::net::TcpStream, count: usize) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode().max_size(64 << 20);
        let mut wire = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < count {
            while let Some(frame) = codec.decode(&mut wire).expect("valid frames") {
                frames.push(frame);
            }
            if frames.len() < count && client.read_buf(&mut wire).await.expect("read") == 0 {
                break;
            }
        }
        frames
    }

    #[tokio::test]
    async fn frames_of_every_length_class_arrive_in_order() {
        let (outbox, mut client) = pair(1 << 30).await;
        let sizes = [0usize, 125, 126, 1000, 65535, 65536, 3_000_000];
        // Each size twice: as a payload with a header, and encoded whole.
        for n in sizes {
            outbox.push(Bytes::from(vec![7u8; n])).expect("fits");
            let frame = wire::binary_frame(&vec![7u8; n]);
            outbox.push_frame(frame).expect("fits");
        }
        outbox.ping();
        let writer = spawn_writer(&outbox);
        let frames = read_frames(&mut client, 2 * sizes.len() + 1).await;
        let doubled = sizes.iter().flat_map(|&n| [n, n]);
        for (frame, n) in frames.iter().zip(doubled) {
            match frame {
                Frame::Binary(b) => {
                    assert_eq!(b.len(), n);
                    assert!(b.iter().all(|&x| x == 7));
                }
                other => panic!("expected binary, got {other:?}"),
            }
        }
        assert!(matches!(frames[2 * sizes.len()], Frame::Ping(_)));
        writer.abort();
    }

    #[tokio::test]
    async fn close_sends_the_code_after_a_partly_written_frame() {
        let (outbox, mut client) = pair(1 << 30).await;
        // Large enough that the socket cannot take it at once.
        outbox
            .push_frame(wire::binary_frame(&vec![1u8; 8 << 20]))
            .expect("an empty queue takes any frame");
        outbox.push(Bytes::from_static(b"dropped")).expect("fits");
        outbox.close(CloseCode::Malformed, "bad frame");
        assert!(outbox.is_closed());
        let writer = spawn_writer(&outbox);
        let frames = read_frames(&mut client, 2).await;
        assert!(matches!(&frames[0], Frame::Binary(b) if b.len() == 8 << 20));
        assert_close(&frames[1], 4400);
        writer
            .await
            .expect("joins")
            .expect("the close frame went out");
    }

    #[tokio::test]
    async fn a_direct_write_that_falls_short_finishes_before_frames_pushed_meanwhile() {
        let (outbox, mut client) = pair(1 << 30).await;
        let writer = spawn_writer(&outbox);
        let frame = wire::binary_frame(&vec![5u8; 1000]);
        let Ok(Some(_)) = outbox.begin_direct(&frame) else {
            panic!("an idle outbox hands its socket out");
        };
        // While the room writes, the session answers a ping and the room
        // relays another update: both wait for the direct write.
        outbox.pong(Bytes::from_static(b"p"));
        outbox
            .push_frame(wire::binary_frame(b"next"))
            .expect("queued");
        tokio::task::yield_now().await;
        // The socket took only the first 7 bytes.
        let took = outbox.write_direct(&frame.slice(..7)).expect("written");
        assert_eq!(took, 7);
        outbox.end_direct(&frame, Ok(7)).expect("still open");
        let frames = read_frames(&mut client, 3).await;
        assert!(
            matches!(&frames[0], Frame::Binary(b) if b.len() == 1000 && b.iter().all(|&x| x == 5))
        );
        assert!(matches!(&frames[1], Frame::Pong(p) if &p[..] == b"p"));
        assert!(matches!(&frames[2], Frame::Binary(b) if &b[..] == b"next"));
        writer.abort();
    }

    #[tokio::test]
    async fn a_direct_write_the_socket_refused_is_queued_and_sent() {
        let (outbox, mut client) = pair(1 << 30).await;
        let frame = wire::binary_frame(b"later");
        assert!(matches!(outbox.begin_direct(&frame), Ok(Some(_))));
        outbox
            .end_direct(&frame, Err(io::ErrorKind::WouldBlock.into()))
            .expect("queued");
        // The outbox is busy now: the next frame queues behind.
        assert!(matches!(outbox.begin_direct(&frame), Ok(None)));
        let writer = spawn_writer(&outbox);
        let frames = read_frames(&mut client, 2).await;
        for f in &frames {
            assert!(matches!(f, Frame::Binary(b) if &b[..] == b"later"));
        }
        writer.abort();
    }

    #[tokio::test]
    async fn a_close_during_a_direct_write_drops_an_unbegun_frame() {
        let (outbox, mut client) = pair(1 << 30).await;
        let frame = wire::binary_frame(b"unsent");
        assert!(matches!(outbox.begin_direct(&frame), Ok(Some(_))));
        outbox.close(CloseCode::Malformed, "bad frame");
        outbox
            .end_direct(&frame, Err(io::ErrorKind::WouldBlock.into()))
            .expect("not broken");
        let writer = spawn_writer(&outbox);
        let frames = read_frames(&mut client, 1).await;
        assert_close(&frames[0], 4400);
        writer
            .await
            .expect("joins")
            .expect("the close frame went out");
    }

    #[tokio::test]
    async fn a_failed_direct_write_marks_the_peer_gone() {
        let (outbox, _client) = pair(1 << 30).await;
        let frame = wire::binary_frame(b"x");
        assert!(matches!(outbox.begin_direct(&frame), Ok(Some(_))));
        let result = outbox.end_direct(&frame, Err(io::ErrorKind::BrokenPipe.into()));
        assert_eq!(result, Err(Overflow));
        assert!(outbox.is_closed());
        assert_eq!(outbox.begin_direct(&frame), Err(Overflow));
    }

    #[tokio::test]
    async fn pongs_to_a_client_that_never_reads_coalesce_into_one() {
        let (outbox, client) = pair(1 << 30).await;
        // A frame the socket did not take: what follows queues behind it.
        let frame = wire::binary_frame(&vec![0u8; 8 << 20]);
        let Ok(Some(_)) = outbox.begin_direct(&frame) else {
            panic!("idle outbox")
        };
        outbox
            .end_direct(&frame, Err(io::ErrorKind::WouldBlock.into()))
            .expect("queued");
        let before = outbox.lock().queue.len();
        for i in 0..100_000u32 {
            outbox.pong(Bytes::copy_from_slice(&i.to_be_bytes()));
        }
        let s = outbox.lock();
        assert_eq!(s.queue.len(), before + 1, "one pong queued, not 100,000");
        let last = s.queue.back().expect("the pong");
        assert_eq!(&last.payload[..], &99_999u32.to_be_bytes());
        drop(s);
        drop(client);
    }

    #[tokio::test]
    async fn pings_count_against_the_backlog() {
        let (outbox, _client) = pair(64).await;
        // Something queued, so the backlog applies.
        let frame = wire::binary_frame(&vec![0u8; 8 << 20]);
        let Ok(Some(_)) = outbox.begin_direct(&frame) else {
            panic!("idle outbox")
        };
        outbox
            .end_direct(&frame, Err(io::ErrorKind::WouldBlock.into()))
            .expect("queued");
        for _ in 0..10 {
            outbox.ping();
        }
        assert_eq!(outbox.close_code(), Some(CloseCode::TryAgainLater));
    }

    #[tokio::test]
    async fn overflow_closes_with_1013() {
        let (outbox, _client) = pair(100).await;
        // The client never reads: the socket's buffers fill, then the queue.
        let mut result = Ok(());
        for _ in 0..10_000 {
            result = outbox.push(Bytes::from(vec![0u8; 64 << 10]));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Overflow));
        assert_eq!(outbox.close_code(), Some(CloseCode::TryAgainLater));
        assert!(outbox.is_closed());
    }
}
