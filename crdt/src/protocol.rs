//! y-websocket frames <-> messages (yjs/y-protocols, v1 encoding).
//!
//! A frame holds one or more messages: `varUint(type)` followed by its body.
//! Decoding never copies an update: each one is a `Bytes` slice of the frame,
//! so the room can relay and persist it without another allocation. Every
//! length is checked against the bytes that are actually there before it is
//! used, so a hostile length prefix causes an error, not an allocation.

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::StateVector;

use crate::awareness::AwarenessUpdate;

pub const MSG_SYNC: u8 = 0;
pub const MSG_AWARENESS: u8 = 1;
pub const MSG_AUTH: u8 = 2;
pub const MSG_QUERY_AWARENESS: u8 = 3;
pub const SYNC_STEP_1: u8 = 0;
pub const SYNC_STEP_2: u8 = 1;
pub const SYNC_UPDATE: u8 = 2;

/// One message a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The client's state vector; the server answers with sync step 2.
    SyncStep1(StateVector),
    /// What the client has that the server lacks (a Yjs v1 update).
    SyncStep2(Bytes),
    /// A live change (a Yjs v1 update).
    Update(Bytes),
    /// Presence. `raw` is the encoded awareness update exactly as received,
    /// so it can be relayed without re-encoding.
    Awareness { update: AwarenessUpdate, raw: Bytes },
    /// "Send me every awareness state."
    QueryAwareness,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("empty frame")]
    Empty,
    #[error("frame ends in the middle of a message")]
    Truncated,
    #[error("a variable-length integer is too long")]
    VarIntOverflow,
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("invalid state vector")]
    InvalidStateVector,
    #[error("invalid awareness update: {0}")]
    InvalidAwareness(String),
    #[error("the frame holds more than {0} messages")]
    TooManyMessages(usize),
}

/// Splits a binary frame into messages. Any error means the whole frame is
/// rejected: nothing of it may be applied.
pub fn decode_frame(frame: &Bytes) -> Result<Vec<Incoming>, ProtocolError> {
    decode_frame_limited(frame, usize::MAX)
}

/// As `decode_frame`, refusing a frame that holds more than `max_messages`
/// messages before decoding the one past the limit: a frame of a few
/// megabytes can hold hundreds of thousands of messages, and limits count
/// messages, not frames.
pub fn decode_frame_limited(
    frame: &Bytes,
    max_messages: usize,
) -> Result<Vec<Incoming>, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let mut reader = FrameReader {
        frame,
        cursor: Cursor::new(frame),
    };
    let mut messages = Vec::with_capacity(1);
    while reader.cursor.has_content() {
        if messages.len() >= max_messages {
            return Err(ProtocolError::TooManyMessages(max_messages));
        }
        messages.push(reader.message()?);
    }
    Ok(messages)
}

struct FrameReader<'a> {
    frame: &'a Bytes,
    cursor: Cursor<'a>,
}

impl FrameReader<'_> {
    /// A LEB128 `varUint`, refusing any value that does not fit 64 bits
    /// (yrs' reader wraps silently).
    fn var(&mut self) -> Result<u64, ProtocolError> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self
                .cursor
                .buf
                .get(self.cursor.next)
                .ok_or(ProtocolError::Truncated)?;
            self.cursor.next += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 || shift > 63 {
                return Err(ProtocolError::VarIntOverflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A `varUint(len) • bytes` field, as a zero-copy slice of the frame.
    fn buf(&mut self) -> Result<Bytes, ProtocolError> {
        let len = self.var()?;
        let start = self.cursor.next;
        let remaining = self.frame.len().saturating_sub(start);
        let len = usize::try_from(len).map_err(|_| ProtocolError::Truncated)?;
        if len > remaining {
            return Err(ProtocolError::Truncated);
        }
        self.cursor.next = start + len;
        Ok(self.frame.slice(start..start + len))
    }

    fn message(&mut self) -> Result<Incoming, ProtocolError> {
        match self.var()? {
            t if t == u64::from(MSG_SYNC) => match self.var()? {
                s if s == u64::from(SYNC_STEP_1) => {
                    let sv = self.buf()?;
                    let sv = crate::wellformed::decode_state_vector(&sv)
                        .map_err(|_| ProtocolError::InvalidStateVector)?;
                    Ok(Incoming::SyncStep1(sv))
                }
                s if s == u64::from(SYNC_STEP_2) => Ok(Incoming::SyncStep2(self.buf()?)),
                s if s == u64::from(SYNC_UPDATE) => Ok(Incoming::Update(self.buf()?)),
                other => Err(ProtocolError::UnknownSyncType(other)),
            },
            t if t == u64::from(MSG_AWARENESS) => {
                let raw = self.buf()?;
                let update = decode_awareness(&raw)?;
                Ok(Incoming::Awareness { update, raw })
            }
            t if t == u64::from(MSG_QUERY_AWARENESS) => Ok(Incoming::QueryAwareness),
            other => Err(ProtocolError::UnknownMessageType(other)),
        }
    }
}

/// Decodes an awareness update:
/// `varUint(n) • n × [varUint(client) • varUint(clock) • varString(JSON or "null")]`,
/// checking that client IDs fit Yjs' 53 bits and that every state is JSON.
pub fn decode_awareness(raw: &[u8]) -> Result<AwarenessUpdate, ProtocolError> {
    let invalid = |what: &str| ProtocolError::InvalidAwareness(what.to_string());
    let mut cursor = Cursor::new(raw);
    let count: u64 = cursor.read_var().map_err(|_| invalid("bad client count"))?;
    // Each entry takes at least 3 bytes: a hostile count cannot reserve much.
    let capacity = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(raw.len() / 3);
    let mut entries = Vec::with_capacity(capacity);
    for _ in 0..count {
        let client: u64 = cursor.read_var().map_err(|_| invalid("bad client id"))?;
        if client >= 1 << 53 {
            return Err(invalid("client id over 53 bits"));
        }
        let clock: u32 = cursor.read_var().map_err(|_| invalid("bad clock"))?;
        let json = cursor
            .read_string()
            .map_err(|_| invalid("bad state string"))?;
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Err(ProtocolError::InvalidAwareness(format!(
                "the state of client {client} is not JSON"
            )));
        }
        entries.push(crate::awareness::AwarenessEntry {
            client,
            clock,
            json: json.into(),
        });
    }
    if cursor.has_content() {
        return Err(invalid("trailing bytes"));
    }
    Ok(AwarenessUpdate { entries })
}

fn frame(tag: u8, sub: Option<u8>, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.write_u8(tag);
    if let Some(sub) = sub {
        out.write_u8(sub);
    }
    out.write_buf(payload);
    Bytes::from(out)
}

/// `0 • 0 • varByteArray(state vector)`
pub fn encode_sync_step1(state_vector: &[u8]) -> Bytes {
    frame(MSG_SYNC, Some(SYNC_STEP_1), state_vector)
}

/// `0 • 1 • varByteArray(update)`
pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    frame(MSG_SYNC, Some(SYNC_STEP_2), update)
}

/// `0 • 2 • varByteArray(update)`
pub fn encode_update(update: &[u8]) -> Bytes {
    frame(MSG_SYNC, Some(SYNC_UPDATE), update)
}

/// `1 • varByteArray(awareness update)`
pub fn encode_awareness(update: &[u8]) -> Bytes {
    frame(MSG_AWARENESS, None, update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, Text, Transact};

    fn text_update() -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello");
        txn.encode_update_v1()
    }

    #[test]
    fn round_trips_every_message_type() {
        let update = text_update();
        let sv = StateVector::default().encode_v1();
        let awareness = {
            let mut v = Vec::new();
            v.write_var(1u32); // one client
            v.write_var(7u64); // client id
            v.write_var(3u32); // clock
            v.write_string(r#"{"user":{"name":"a"}}"#);
            v
        };
        let mut frame = Vec::new();
        frame.extend_from_slice(&encode_sync_step1(&sv));
        frame.extend_from_slice(&encode_sync_step2(&update));
        frame.extend_from_slice(&encode_update(&update));
        frame.extend_from_slice(&encode_awareness(&awareness));
        frame.push(MSG_QUERY_AWARENESS);
        let msgs = decode_frame(&Bytes::from(frame)).expect("valid frame");
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[0], Incoming::SyncStep1(StateVector::default()));
        assert_eq!(msgs[1], Incoming::SyncStep2(Bytes::from(update.clone())));
        assert_eq!(msgs[2], Incoming::Update(Bytes::from(update)));
        match &msgs[3] {
            Incoming::Awareness { update, raw } => {
                assert_eq!(raw.as_ref(), awareness.as_slice());
                assert_eq!(update.entries.len(), 1);
            }
            other => panic!("expected awareness, got {other:?}"),
        }
        assert_eq!(msgs[4], Incoming::QueryAwareness);
    }

    #[test]
    fn rejects_exact_malformed_inputs() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (&[], ProtocolError::Empty),
            (&[0x00, 0x02, 0xff], ProtocolError::Truncated),
            (&[0x00, 0x02, 0x05, 1, 2], ProtocolError::Truncated),
            (&[0x00, 0x07, 0x00], ProtocolError::UnknownSyncType(7)),
            (&[0x09], ProtocolError::UnknownMessageType(9)),
            (&[0x02, 0x00], ProtocolError::UnknownMessageType(2)),
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                ProtocolError::VarIntOverflow,
            ),
        ];
        for (bytes, expected) in cases {
            let got = decode_frame(&Bytes::copy_from_slice(bytes));
            assert_eq!(got.as_ref().err(), Some(expected), "input {bytes:?}");
        }
    }

    #[test]
    fn a_frame_packed_with_messages_is_refused_past_the_limit() {
        let mut frame = Vec::new();
        for _ in 0..1001 {
            frame.extend_from_slice(&encode_sync_step1(&[0]));
        }
        let frame = Bytes::from(frame);
        assert_eq!(
            decode_frame_limited(&frame, 1000),
            Err(ProtocolError::TooManyMessages(1000))
        );
        assert_eq!(
            decode_frame_limited(&frame, 1001).map(|m| m.len()),
            Ok(1001)
        );
    }

    #[test]
    fn rejects_awareness_whose_state_is_not_json() {
        let mut body = Vec::new();
        body.write_var(1u32);
        body.write_var(1u64);
        body.write_var(1u32);
        body.write_string("{not json");
        let frame = encode_awareness(&body);
        assert!(matches!(
            decode_frame(&frame),
            Err(ProtocolError::InvalidAwareness(_))
        ));
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        // Claims 2^62 bytes of update.
        let mut frame = vec![0u8, 2];
        frame.write_var(1u64 << 62);
        assert_eq!(
            decode_frame(&Bytes::from(frame)),
            Err(ProtocolError::Truncated)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&Bytes::from(bytes));
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            idx in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = encode_update(&text_update()).to_vec();
            let i = idx.index(frame.len());
            frame[i] = byte;
            let end = cut.index(frame.len() + 1);
            frame.truncate(end);
            let _ = decode_frame(&Bytes::from(frame));
        }

        #[test]
        fn any_update_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let frame = encode_update(&payload);
            let msgs = decode_frame(&frame).expect("well-formed frame");
            prop_assert_eq!(msgs, vec![Incoming::Update(Bytes::from(payload))]);
        }
    }
}
