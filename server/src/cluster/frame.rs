//! What nodes say to each other on a document's Redis channel. A frame is
//! binary: a version byte, a kind byte, the sending node's number (u64,
//! little-endian), then the kind's body. Frames come from the network, so
//! decoding checks every length against what is left and never trusts a
//! count to size an allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::store::cluster::NodeId;

const VERSION: u8 = 1;

const UPDATES: u8 = 1;
const DOORBELL: u8 = 2;
const AWARENESS: u8 = 3;
const QUERY: u8 = 4;
const CLIENTS: u8 = 5;
const DELETED: u8 = 6;
const LEAVING: u8 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Committed updates numbered `first_seq`, `first_seq + 1`, ….
    Updates { first_seq: u64, updates: Vec<Bytes> },
    /// Updates up to `last_seq` were committed, too large to carry: read
    /// them from the database.
    Doorbell { last_seq: u64 },
    /// An awareness update (y-protocols' payload, without the message
    /// type) of the sender's clients.
    Awareness(Bytes),
    /// The sender opened the document: others answer with their awareness
    /// and their number of connections.
    Query,
    /// The sender's connections to the document.
    Clients(u32),
    /// The document was deleted.
    Deleted,
    /// The sender is stopping (on the cluster's own channel).
    Leaving,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub node: NodeId,
    pub body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("cluster frame too short")]
    Truncated,
    #[error("cluster frame of unknown version {0}")]
    Version(u8),
    #[error("cluster frame of unknown kind {0}")]
    Kind(u8),
    #[error("cluster frame with bytes after its end")]
    Trailing,
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.body_len());
        out.put_u8(VERSION);
        out.put_u8(match &self.body {
            Body::Updates { .. } => UPDATES,
            Body::Doorbell { .. } => DOORBELL,
            Body::Awareness(_) => AWARENESS,
            Body::Query => QUERY,
            Body::Clients(_) => CLIENTS,
            Body::Deleted => DELETED,
            Body::Leaving => LEAVING,
        });
        out.put_u64_le(self.node);
        match &self.body {
            Body::Updates { first_seq, updates } => {
                out.put_u64_le(*first_seq);
                out.put_u32_le(u32::try_from(updates.len()).unwrap_or(u32::MAX));
                for u in updates {
                    out.put_u32_le(u32::try_from(u.len()).unwrap_or(u32::MAX));
                    out.put_slice(u);
                }
            }
            Body::Doorbell { last_seq } => out.put_u64_le(*last_seq),
            Body::Awareness(payload) => out.put_slice(payload),
            Body::Clients(n) => out.put_u32_le(*n),
            Body::Query | Body::Deleted | Body::Leaving => {}
        }
        out.freeze()
    }

    fn body_len(&self) -> usize {
        match &self.body {
            Body::Updates { updates, .. } => {
                12 + updates.iter().map(|u| 4 + u.len()).sum::<usize>()
            }
            Body::Awareness(p) => p.len(),
            _ => 8,
        }
    }

    /// Decodes a frame; the updates it carries share `bytes`' memory.
    pub fn decode(bytes: &Bytes) -> Result<Frame, FrameError> {
        let mut buf = bytes.clone();
        if buf.remaining() < 10 {
            return Err(FrameError::Truncated);
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = buf.get_u8();
        let node = buf.get_u64_le();
        let need = |buf: &Bytes, n: usize| {
            if buf.remaining() < n {
                Err(FrameError::Truncated)
            } else {
                Ok(())
            }
        };
        let body = match kind {
            UPDATES => {
                need(&buf, 12)?;
                let first_seq = buf.get_u64_le();
                let count = buf.get_u32_le() as usize;
                // Each update takes at least its 4-byte length: a count
                // larger than that allows is a lie.
                if count > buf.remaining() / 4 {
                    return Err(FrameError::Truncated);
                }
                let mut updates = Vec::with_capacity(count);
                for _ in 0..count {
                    need(&buf, 4)?;
                    let len = buf.get_u32_le() as usize;
                    need(&buf, len)?;
                    updates.push(buf.split_to(len));
                }
                Body::Updates { first_seq, updates }
            }
            DOORBELL => {
                need(&buf, 8)?;
                Body::Doorbell {
                    last_seq: buf.get_u64_le(),
                }
            }
            AWARENESS => Body::Awareness(std::mem::take(&mut buf)),
            QUERY => Body::Query,
            CLIENTS => {
                need(&buf, 4)?;
                Body::Clients(buf.get_u32_le())
            }
            DELETED => Body::Deleted,
            LEAVING => Body::Leaving,
            other => return Err(FrameError::Kind(other)),
        };
        if buf.has_remaining() {
            return Err(FrameError::Trailing);
        }
        Ok(Frame { node, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let bodies = [
            Body::Updates {
                first_seq: 7,
                updates: vec![
                    Bytes::from_static(b"ab"),
                    Bytes::new(),
                    Bytes::from_static(b"c"),
                ],
            },
            Body::Doorbell { last_seq: 9 },
            Body::Awareness(Bytes::from_static(b"\x01\x02")),
            Body::Query,
            Body::Clients(3),
            Body::Deleted,
            Body::Leaving,
        ];
        for body in bodies {
            let frame = Frame { node: 42, body };
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn a_count_larger_than_the_frame_is_refused_without_allocating() {
        let mut raw = vec![VERSION, UPDATES];
        raw.extend_from_slice(&1u64.to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
        raw.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Frame::decode(&Bytes::from(raw)), Err(FrameError::Truncated));
    }

    proptest! {
        /// Any bytes decode to a frame or an error, never a panic; a frame
        /// that decodes encodes back to the same bytes.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = Bytes::from(raw);
            if let Ok(frame) = Frame::decode(&bytes) {
                prop_assert_eq!(frame.encode(), bytes);
            }
        }
    }
}
