//! The WebSocket wire format (RFC 6455 §5) on a socket Tandem owns after the
//! upgrade.
//!
//! Reading: `FrameReader` turns the bytes a client sent into messages. A
//! frame whose header declares a payload over the limit is refused from its
//! header, before any of the payload is buffered; fragmented messages are
//! joined under the same limit; control frames may come between fragments.
//! actix-http's `Parser` checks the masking rule and the opcodes and
//! unmasks complete frames.
//!
//! Writing: server frames are not masked, so a frame is a header of at most
//! ten bytes followed by the payload as it is: the room shares one `Bytes`
//! between every peer and each socket writes it from there.

use std::io;

use actix_http::ws::{OpCode, Parser, ProtocolError};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::net::CloseCode;

pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    Text,
    Ping(Bytes),
    Pong,
    Close,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message over the size limit")]
    TooLarge,
    #[error("WebSocket protocol error: {0}")]
    Protocol(String),
}

impl From<ProtocolError> for WireError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Overflow => WireError::TooLarge,
            other => WireError::Protocol(other.to_string()),
        }
    }
}

pub struct FrameReader {
    buf: BytesMut,
    max_message: usize,
    /// A fragmented message being joined, and whether it is text.
    partial: Option<(BytesMut, bool)>,
}

impl FrameReader {
    /// `initial` holds bytes read with the upgrade request, if any.
    pub fn new(initial: BytesMut, max_message: usize) -> Self {
        FrameReader {
            buf: initial,
            max_message,
            partial: None,
        }
    }

    /// The buffer to read into, with room for at least one chunk.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Reads what the socket holds, up to a chunk, without waiting: the
    /// byte count (0 at the end of the stream), or `WouldBlock` when there
    /// was nothing. A read that leaves part of the buffer unfilled has
    /// emptied the socket, so the socket's readiness is cleared with it, as
    /// tokio's own `AsyncRead` does; otherwise every read (each pong, each
    /// update) would be followed by another system call that finds nothing.
    /// Readiness that a new arrival set meanwhile is kept (tokio clears only
    /// the event it saw before the read).
    pub fn read_from(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let buf = self.read_buf();
        let mut emptied = None;
        let read = stream.try_io(Interest::READABLE, || {
            let room = buf.capacity() - buf.len();
            let n = stream.try_read_buf(buf)?;
            if n > 0 && n < room {
                emptied = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match emptied {
            Some(n) => Ok(n),
            None => read,
        }
    }

    /// The next whole message, or `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, WireError> {
        loop {
            if let Some(declared) = declared_len(&self.buf) {
                if declared > self.max_message as u64 {
                    return Err(WireError::TooLarge);
                }
            }
            let Some((fin, op, payload)) = Parser::parse(&mut self.buf, true, self.max_message)?
            else {
                return Ok(None);
            };
            let payload = payload.unwrap_or_default();
            match op {
                OpCode::Binary | OpCode::Text => {
                    if self.partial.is_some() {
                        return Err(WireError::Protocol(
                            "a new message began inside a fragmented one".into(),
                        ));
                    }
                    let text = op == OpCode::Text;
                    if fin {
                        return Ok(Some(whole(payload, text)));
                    }
                    self.partial = Some((payload, text));
                }
                OpCode::Continue => {
                    let Some((joined, _)) = self.partial.as_mut() else {
                        return Err(WireError::Protocol(
                            "a continuation frame without a message to continue".into(),
                        ));
                    };
                    if joined.len() + payload.len() > self.max_message {
                        return Err(WireError::TooLarge);
                    }
                    joined.extend_from_slice(&payload);
                    if fin {
                        if let Some((joined, text)) = self.partial.take() {
                            return Ok(Some(whole(joined, text)));
                        }
                    }
                }
                OpCode::Ping => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => return Ok(Some(Incoming::Close)),
                OpCode::Bad => return Err(WireError::Protocol("unknown opcode".into())),
            }
        }
    }

    /// Gives the read buffer's memory back when nothing is buffered, so an
    /// idle connection holds none.
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

fn whole(payload: BytesMut, text: bool) -> Incoming {
    if text {
        Incoming::Text
    } else {
        Incoming::Binary(payload.freeze())
    }
}

/// The payload length a frame header declares, once its length bytes are in.
fn declared_len(h: &[u8]) -> Option<u64> {
    let first = *h.get(1)? & 0x7f;
    match first {
        126 => h
            .get(2..4)
            .map(|b| b.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))),
        127 => h
            .get(2..10)
            .map(|b| b.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))),
        n => Some(u64::from(n)),
    }
}

/// An unmasked server frame header with FIN set: the bytes and their count.
pub fn header(op: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | op;
    if let Ok(small) = u8::try_from(len) {
        if small < 126 {
            h[1] = small;
            return (h, 2);
        }
    }
    if let Ok(len16) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len16.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        // usize fits u64 on every supported target.
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A whole binary frame, header and payload in one buffer: the room encodes
/// a relayed message once and every peer's socket gets it with one `send`
/// (cheaper in the kernel than a `writev` of two parts).
pub fn binary_frame(payload: &[u8]) -> Bytes {
    let (h, len) = header(OP_BINARY, payload.len());
    let mut out = BytesMut::with_capacity(len + payload.len());
    out.put_slice(&h[..len]);
    out.put_slice(payload);
    out.freeze()
}

/// The payload of a close frame: the code, then at most 123 bytes of reason
/// (control frames carry at most 125 bytes).
pub fn close_payload(code: CloseCode, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut out = BytesMut::with_capacity(2 + reason.len());
    out.put_u16(code.code());
    out.put_slice(reason);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// A connected pair: a plain client socket and the server's tokio one.
    async fn socket_pair() -> (std::net::TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("has an address");
        let client = std::net::TcpStream::connect(addr).expect("connects");
        let (server, _) = listener.accept().await.expect("accepts");
        (client, server)
    }

    /// Whether the socket counts as readable within a short while.
    async fn readable_soon(stream: &TcpStream) -> bool {
        tokio::time::timeout(Duration::from_millis(100), stream.readable())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_read_that_empties_the_socket_clears_its_readiness() {
        let (mut client, server) = socket_pair().await;
        let mut reader = FrameReader::new(BytesMut::new(), 1 << 20);

        client.write_all(b"pong!").expect("writes");
        server.readable().await.expect("readable");
        assert_eq!(reader.read_from(&server).expect("reads"), 5);
        // Emptied: the next wait sleeps until more arrives, and asking
        // again costs no read.
        assert!(
            !readable_soon(&server).await,
            "still ready after the socket was emptied"
        );
        let again = reader.read_from(&server).expect_err("nothing to read");
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);

        // More bytes make it ready again, and they are read.
        client.write_all(b"more").expect("writes");
        assert!(
            readable_soon(&server).await,
            "new bytes did not make it ready"
        );
        assert_eq!(reader.read_from(&server).expect("reads"), 4);
        assert_eq!(&reader.buf[..], b"pong!more");

        // The end of the stream is a read of 0, not a wait.
        drop(client);
        assert!(
            readable_soon(&server).await,
            "the end of the stream did not make it ready"
        );
        assert_eq!(reader.read_from(&server).expect("reads"), 0);
    }

    #[tokio::test]
    async fn a_hang_up_that_came_with_the_last_bytes_is_still_seen() {
        // The bytes and the end of the stream are in before the first read:
        // clearing the readiness after the bytes must not hide the end.
        let (mut client, server) = socket_pair().await;
        let mut reader = FrameReader::new(BytesMut::new(), 1 << 20);
        client.write_all(b"bye").expect("writes");
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.readable().await.expect("readable");
        assert_eq!(reader.read_from(&server).expect("reads"), 3);
        assert!(readable_soon(&server).await, "the hang-up was lost");
        assert_eq!(reader.read_from(&server).expect("reads"), 0);
    }

    #[tokio::test]
    async fn a_read_that_fills_the_buffer_keeps_the_socket_ready() {
        let (mut client, server) = socket_pair().await;
        let mut reader = FrameReader::new(BytesMut::new(), 1 << 20);
        let sent = vec![7u8; 3 * READ_CHUNK];
        client.write_all(&sent).expect("writes");
        // Everything has arrived when a read takes it all.
        let mut got = 0;
        while got < sent.len() {
            assert!(
                readable_soon(&server).await,
                "bytes are left, but it is not ready"
            );
            match reader.read_from(&server) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        assert_eq!(reader.buf.len(), sent.len());
    }
    use actix_http::ws::{Codec, Frame, Item, Message};
    use tokio_util::codec::Encoder;

    /// Frames as a browser would send them: masked, via actix's client codec.
    fn client_wire(messages: Vec<Message>) -> BytesMut {
        let mut codec = Codec::new().client_mode().max_size(usize::MAX);
        let mut out = BytesMut::new();
        for m in messages {
            codec.encode(m, &mut out).expect("encodes");
        }
        out
    }

    fn read_all(wire: BytesMut, max: usize) -> Vec<Result<Incoming, String>> {
        let mut reader = FrameReader::new(BytesMut::new(), max);
        let mut out = Vec::new();
        // Byte by byte: the reader must cope with any split.
        for b in wire.iter() {
            reader.read_buf().put_u8(*b);
            loop {
                match reader.next_message() {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn messages_of_every_kind_and_split_are_read() {
        let big = Bytes::from(vec![9u8; 70_000]);
        let wire = client_wire(vec![
            Message::Binary(Bytes::from_static(b"\x00\x00\x01\x00")),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Binary(big.clone()),
            Message::Continuation(Item::FirstBinary(Bytes::from_static(b"ab"))),
            Message::Pong(Bytes::new()),
            Message::Continuation(Item::Continue(Bytes::from_static(b"cd"))),
            Message::Continuation(Item::Last(Bytes::from_static(b"e"))),
            Message::Text("hi".into()),
            Message::Close(None),
        ]);
        let got = read_all(wire, 100_000);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Binary(Bytes::from_static(b"\x00\x00\x01\x00"))),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Binary(big)),
                Ok(Incoming::Pong),
                Ok(Incoming::Binary(Bytes::from_static(b"abcde"))),
                Ok(Incoming::Text),
                Ok(Incoming::Close),
            ]
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        let wire = client_wire(vec![Message::Binary(Bytes::from(vec![0u8; 5000]))]);
        let mut reader = FrameReader::new(BytesMut::new(), 1000);
        // Only the header (4 bytes for this length) and the mask are in.
        reader.read_buf().put_slice(&wire[..4]);
        assert!(matches!(reader.next_message(), Err(WireError::TooLarge)));
    }

    #[test]
    fn fragments_are_held_to_the_limit_together() {
        let wire = client_wire(vec![
            Message::Continuation(Item::FirstBinary(Bytes::from(vec![1u8; 600]))),
            Message::Continuation(Item::Last(Bytes::from(vec![1u8; 600]))),
        ]);
        let got = read_all(wire, 1000);
        assert_eq!(got, vec![Err("message over the size limit".to_string())]);
    }

    #[test]
    fn unmasked_and_unknown_frames_are_protocol_errors() {
        // An unmasked binary frame, as only a server may send.
        let got = read_all(BytesMut::from(&[0x82u8, 1, 7][..]), 1000);
        assert!(matches!(got.as_slice(), [Err(_)]), "{got:?}");
        // Opcode 0x3 is reserved.
        let got = read_all(BytesMut::from(&[0x83u8, 0x80, 1, 2, 3, 4][..]), 1000);
        assert!(matches!(got.as_slice(), [Err(_)]), "{got:?}");
        // A final continuation frame with nothing to continue.
        let got = read_all(BytesMut::from(&[0x80u8, 0x80, 1, 2, 3, 4][..]), 1000);
        assert!(matches!(got.as_slice(), [Err(_)]), "{got:?}");
    }

    #[test]
    fn headers_decode_with_actix_client_codec() {
        for n in [0usize, 125, 126, 65_535, 65_536, 300_000] {
            let payload = vec![3u8; n];
            let (h, len) = header(OP_BINARY, n);
            let mut wire = BytesMut::from(&h[..len]);
            wire.extend_from_slice(&payload);
            let mut codec = Codec::new().client_mode().max_size(1 << 20);
            match tokio_util::codec::Decoder::decode(&mut codec, &mut wire) {
                Ok(Some(Frame::Binary(b))) => assert_eq!(b.len(), n),
                other => panic!("length {n}: {other:?}"),
            }
        }
    }
}
