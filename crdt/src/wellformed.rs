//! Checks the shape of a Yjs v1 update or state vector before yrs decodes it.
//!
//! yrs trusts two things a sender controls. It reserves memory from the
//! counts an encoding declares (a 7-byte state vector can declare millions
//! of entries), and it decodes nested `Any` values by recursion, so a value
//! nested a million levels deep overflows the thread's stack: an abort that
//! no `catch_unwind` can stop. This module walks the same encoding with
//! yrs' own reader, so it consumes exactly the bytes yrs will, and refuses
//! any count larger than the bytes left could hold and any value nested
//! deeper than `MAX_NESTING`. It recurses nowhere and allocates only the
//! list of shared types the update creates.
//!
//! It also reports the IDs of the items whose content is a shared type
//! (`Y.Map`, `Y.Array`, XML, …): how deeply those nest depends on the
//! document, so `DocState` checks them after integrating (see `doc.rs`).

use yrs::encoding::read::{Cursor, Read};
use yrs::{ClientID, IdSet, Snapshot, StateVector, ID};

/// How deeply `Any` values, and shared types, may nest. Real documents
/// stay within a few levels; each level costs yrs a stack frame when it
/// decodes, drops, deletes or renders the value.
pub const MAX_NESTING: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the encoding ends early or holds an invalid value")]
    Invalid,
    #[error("it declares {declared} {what}, more than its remaining {left} bytes can hold")]
    Overcount {
        what: &'static str,
        declared: u64,
        left: usize,
    },
    #[error("values are nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    #[error("unknown content type {0}")]
    UnknownContent(u8),
    #[error("a client ID is over 53 bits")]
    ClientTooLarge,
    #[error("a clock range runs past 2^32")]
    ClockOverflow,
    #[error("clients or clock ranges are not in ascending order")]
    Unordered,
    #[error("it holds legacy JSON content, which no current Yjs writes")]
    LegacyJson,
    #[error("client {0} has more than one run of blocks")]
    RepeatedClient(u64),
}

impl From<yrs::encoding::read::Error> for ShapeError {
    fn from(_: yrs::encoding::read::Error) -> Self {
        ShapeError::Invalid
    }
}

/// What a well-formed update holds that `DocState` checks after applying it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpdateShape {
    /// Items whose content is a shared type, in the order they appear.
    pub type_items: Vec<ID>,
    /// Each client's run of blocks, in the order they appear.
    pub runs: Vec<ClientRun>,
    /// Whether the delete set is as Yjs writes it: each client's ranges
    /// non-empty and in ascending order, none overlapping the one before.
    /// yrs applies one out of that order to the live document differently
    /// from how it encodes it (found by fuzzing: two characters deleted
    /// live came back on a reload), so clients' updates must be in order;
    /// rows already stored are loaded as they are.
    pub deletes_in_order: bool,
}

/// The clocks one client's blocks cover in an update: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRun {
    pub client: ClientID,
    pub start: u32,
    /// Where its last block that is not a skip ends (`start` if none).
    pub end: u32,
    /// Where the blocks stop covering every clock from `start`: `end`, or
    /// the start of the first skip block (a hole `Y.mergeUpdates` leaves).
    pub covered_to: u32,
}

// Block and content tags, as yrs' `block.rs` numbers them.
pub(crate) const BLOCK_GC: u8 = 0;
const BLOCK_SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_BINARY: u8 = 3;
const CONTENT_STRING: u8 = 4;
const CONTENT_EMBED: u8 = 5;
const CONTENT_FORMAT: u8 = 6;
const CONTENT_TYPE: u8 = 7;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;
const TYPE_XML_ELEMENT: u8 = 3;
const TYPE_WEAK: u8 = 7;

/// Checks a state vector: `varUint(n) • n × [varUint(client) • varUint(clock)]`.
pub fn check_state_vector(bytes: &[u8]) -> Result<(), ShapeError> {
    let mut r = Cursor::new(bytes);
    let n = u64::from(r.read_var::<u32>()?);
    fits(&r, "state vector entries", n, 2)?;
    for _ in 0..n {
        client(&mut r)?;
        r.read_var::<u32>()?;
    }
    Ok(())
}

/// Decodes a state vector after checking its shape.
pub fn decode_state_vector(bytes: &[u8]) -> Result<yrs::StateVector, ShapeError> {
    use yrs::updates::decoder::Decode;
    check_state_vector(bytes)?;
    std::panic::catch_unwind(|| yrs::StateVector::decode_v1(bytes))
        .map_err(|_| ShapeError::Invalid)?
        .map_err(|_| ShapeError::Invalid)
}

/// Decodes an encoded yrs `Snapshot` (a delete set, then a state vector,
/// v1 encoding) with this module's reader instead of yrs' decoder, checking
/// every count against the bytes present. The delete set's clients and
/// ranges must ascend, as yrs writes them: out of order, each insertion
/// would cost a shift of all the ranges before it. Bytes left over are an
/// error too, so that a truncated or padded row never passes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, ShapeError> {
    let mut r = Cursor::new(bytes);
    let delete_set = read_id_set(&mut r)?;
    let state_map = read_state_vector(&mut r)?;
    if r.next != r.buf.len() {
        return Err(ShapeError::Invalid);
    }
    Ok(Snapshot::new(state_map, delete_set))
}

/// Reads one v1-encoded `IdSet` (the delete set format:
/// `varUint(n) • n × [varUint(client) • varUint(m) • m × [clock • len]]`).
pub fn read_id_set(r: &mut Cursor) -> Result<IdSet, ShapeError> {
    let clients = u64::from(r.read_var::<u32>()?);
    fits(r, "id set clients", clients, 2)?;
    let mut set = IdSet::new();
    let mut previous: Option<ClientID> = None;
    for _ in 0..clients {
        let client = client(r)?;
        if previous.is_some_and(|p| p >= client) {
            return Err(ShapeError::Unordered);
        }
        previous = Some(client);
        let ranges = u64::from(r.read_var::<u32>()?);
        fits(r, "id ranges", ranges, 2)?;
        let mut end = 0u32;
        for _ in 0..ranges {
            let start = r.read_var::<u32>()?;
            let len = r.read_var::<u32>()?;
            if start < end {
                return Err(ShapeError::Unordered);
            }
            end = start.checked_add(len).ok_or(ShapeError::ClockOverflow)?;
            set.insert(ID::new(client, start), len);
        }
    }
    Ok(set)
}

/// Reads one v1-encoded state vector.
pub fn read_state_vector(r: &mut Cursor) -> Result<StateVector, ShapeError> {
    let n = u64::from(r.read_var::<u32>()?);
    fits(r, "state vector entries", n, 2)?;
    let mut entries = Vec::new();
    for _ in 0..n {
        let client = client(r)?;
        entries.push((client, r.read_var::<u32>()?));
    }
    Ok(StateVector::from_iter(entries))
}

/// Checks a Yjs v1 update, mirroring `yrs::Update::decode` step for step.
pub fn check_update(bytes: &[u8]) -> Result<UpdateShape, ShapeError> {
    let mut r = Cursor::new(bytes);
    let mut shape = UpdateShape {
        deletes_in_order: true,
        ..UpdateShape::default()
    };
    let mut seen: Option<std::collections::HashSet<ClientID>> = None;
    let clients = u64::from(r.read_var::<u32>()?);
    fits(&r, "clients", clients, 3)?;
    for _ in 0..clients {
        let blocks = u64::from(r.read_var::<u32>()?);
        let client = client(&mut r)?;
        let start: u32 = r.read_var()?;
        let mut clock = start;
        // Where the last block that is not a skip ends: a skip is a hole,
        // and skips at the end of a run reach no clock (found by fuzzing:
        // a run of one skip raised its client's clock past a hole).
        let mut end = start;
        let mut covered_to = None;
        fits(&r, "blocks", blocks, 2)?;
        for _ in 0..blocks {
            let skip = r.buf.get(r.next) == Some(&BLOCK_SKIP);
            if covered_to.is_none() && skip {
                covered_to = Some(clock);
            }
            let Block { len, is_type, .. } = block(&mut r)?;
            if is_type {
                shape.type_items.push(ID::new(client, clock));
            }
            clock = clock.checked_add(len).ok_or(ShapeError::ClockOverflow)?;
            if !skip {
                end = clock;
            }
        }
        // Yjs writes each client's blocks as one run. yrs appends a
        // client's second run to its first, out of clock order, and such an
        // update could apply as something else than it encodes (found by
        // fuzzing). A set, past a few clients: an update may list many.
        let repeated = if shape.runs.len() < 16 {
            shape.runs.iter().any(|run| run.client == client)
        } else {
            let seen = seen.get_or_insert_with(|| shape.runs.iter().map(|r| r.client).collect());
            !seen.insert(client)
        };
        if repeated {
            return Err(ShapeError::RepeatedClient(client.get()));
        }
        shape.runs.push(ClientRun {
            client,
            start,
            end,
            // The first skip is never past the end of the last block that is
            // not a skip.
            covered_to: covered_to.unwrap_or(end),
        });
    }
    // The delete set: `varUint(n) • n × [varUint(client) • varUint(m) • m × [clock • len]]`.
    let clients = u64::from(r.read_var::<u32>()?);
    fits(&r, "delete set clients", clients, 2)?;
    for _ in 0..clients {
        client(&mut r)?;
        let ranges = u64::from(r.read_var::<u32>()?);
        fits(&r, "deleted ranges", ranges, 2)?;
        let mut end = 0u32;
        for _ in 0..ranges {
            // yrs adds these without a check (a panic in debug builds, an
            // inverted range in release ones).
            let start = r.read_var::<u32>()?;
            let len = r.read_var::<u32>()?;
            if start < end || len == 0 {
                shape.deletes_in_order = false;
            }
            end = start.checked_add(len).ok_or(ShapeError::ClockOverflow)?;
        }
    }
    Ok(shape)
}

/// Whether `client`'s blocks in an update (already checked) hold an item
/// that begins below `clock` and ends above it: yrs would integrate it from
/// `clock` on, with the block at `clock - 1` as its left neighbour.
pub fn item_straddles(bytes: &[u8], client: ClientID, clock: u32) -> Result<bool, ShapeError> {
    let mut r = Cursor::new(bytes);
    let clients = r.read_var::<u32>()?;
    for _ in 0..clients {
        let blocks = r.read_var::<u32>()?;
        let this = self::client(&mut r)?;
        let mut start: u32 = r.read_var()?;
        for _ in 0..blocks {
            let info = r.buf.get(r.next).copied().ok_or(ShapeError::Invalid)?;
            let len = block(&mut r)?.len;
            let end = start.checked_add(len).ok_or(ShapeError::ClockOverflow)?;
            let is_item = info != BLOCK_GC && info != BLOCK_SKIP;
            if this == client && is_item && start < clock && clock < end {
                return Ok(true);
            }
            start = end;
        }
    }
    Ok(false)
}

/// An update cut where its blocks stop following on from their clients'
/// clocks in a document (see `split_past_holes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSplit {
    /// What follows on: every client's blocks up to the first one that
    /// starts past a hole, and the whole delete set.
    pub now: Vec<u8>,
    /// From each such block on, every block of its client (no deletions).
    pub later: Vec<u8>,
}

/// Whether an update whose runs are `runs` has a block that starts past
/// `frontier` (its client's clock in the document) or past a skip: only
/// then does `split_past_holes` cut anything. No walk of the bytes.
pub fn may_start_past_a_hole(runs: &[ClientRun], frontier: impl Fn(ClientID) -> u32) -> bool {
    runs.iter().any(|run| {
        run.start < run.end && (run.covered_to != run.end || run.start > frontier(run.client))
    })
}

/// Cuts an update (already checked) in two at each client's first block
/// that starts above `frontier(client)`, the clock up to which the document
/// holds that client's blocks with no hole, as raised by the blocks kept
/// before it. Yjs holds such a block back until the clocks below it
/// arrive; yrs integrates it at once when it depends on nothing missing,
/// and then the live document differs from its own encoding (see
/// `DocState`). `None` when every block follows on. Blocks are copied as
/// they are: a client's blocks carry no clock of their own, only the run's
/// first clock, so a run cut at a block boundary is two valid runs.
pub fn split_past_holes(
    bytes: &[u8],
    frontier: impl Fn(ClientID) -> u32,
) -> Result<Option<HeldSplit>, ShapeError> {
    /// A client's run: how many blocks, whose, from which clock, and where
    /// its blocks lie in `bytes`.
    struct Part {
        blocks: u32,
        client: ClientID,
        clock: u32,
        from: usize,
        to: usize,
    }
    let mut r = Cursor::new(bytes);
    let clients = r.read_var::<u32>()?;
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for _ in 0..clients {
        let blocks = r.read_var::<u32>()?;
        let client = client(&mut r)?;
        let start: u32 = r.read_var()?;
        let body = r.next;
        let mut reached = frontier(client);
        let (mut kept, mut kept_to) = (0u32, body);
        let mut cut: Option<(u32, usize, u32)> = None;
        let mut clock = start;
        for i in 0..blocks {
            let at = r.next;
            let info = r.buf.get(at).copied().ok_or(ShapeError::Invalid)?;
            let len = block(&mut r)?.len;
            let end = clock.checked_add(len).ok_or(ShapeError::ClockOverflow)?;
            if cut.is_none() && info != BLOCK_SKIP {
                if clock > reached {
                    cut = Some((i, at, clock));
                } else {
                    reached = reached.max(end);
                    // A skip is kept only with a block after it.
                    (kept, kept_to) = (i + 1, r.next);
                }
            }
            clock = end;
        }
        if kept > 0 {
            now.push(Part {
                blocks: kept,
                client,
                clock: start,
                from: body,
                to: kept_to,
            });
        }
        if let Some((i, at, clock)) = cut {
            later.push(Part {
                blocks: blocks - i,
                client,
                clock,
                from: at,
                to: r.next,
            });
        }
    }
    if later.is_empty() {
        return Ok(None);
    }
    let write = |parts: &[Part], out: &mut Vec<u8>| {
        use yrs::encoding::write::Write;
        out.write_var(parts.len());
        for part in parts {
            out.write_var(part.blocks);
            out.write_var(part.client.get());
            out.write_var(part.clock);
            out.extend_from_slice(&bytes[part.from..part.to]);
        }
    };
    let mut split = HeldSplit {
        now: Vec::with_capacity(bytes.len()),
        later: Vec::new(),
    };
    write(&now, &mut split.now);
    split.now.extend_from_slice(&bytes[r.next..]);
    write(&later, &mut split.later);
    split.later.push(0); // no deletions
    Ok(Some(split))
}

/// What an item hangs on, which decides its parent: yrs takes the parent
/// of its left origin, or else of its right origin, and reads it from the
/// encoding only for an item with neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// A garbage-collected block or a skip: no parent.
    None,
    /// The item names a root type as its parent.
    Root,
    /// The item names the item of a shared type as its parent.
    Parent(ID),
    /// The item takes its parent from its origins.
    Origins { left: Option<ID>, right: Option<ID> },
}

/// One block as `block` reads it.
struct Block {
    /// Its clock length.
    len: u32,
    /// Whether its content is a shared type.
    is_type: bool,
    anchor: Anchor,
}

/// An item of an update, as far as the nesting of shared types goes: see
/// `items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub id: ID,
    pub len: u32,
    pub is_type: bool,
    pub anchor: Anchor,
}

/// Every item of an update (already checked), each client's in clock
/// order: which item each one hangs on, for measuring how deeply the
/// shared types it creates nest (`nesting.rs`).
pub fn items(bytes: &[u8]) -> Result<Vec<Item>, ShapeError> {
    let mut r = Cursor::new(bytes);
    let clients = r.read_var::<u32>()?;
    let mut items = Vec::new();
    for _ in 0..clients {
        let blocks = r.read_var::<u32>()?;
        let client = client(&mut r)?;
        let mut clock: u32 = r.read_var()?;
        for _ in 0..blocks {
            let block = block(&mut r)?;
            if block.anchor != Anchor::None {
                items.push(Item {
                    id: ID::new(client, clock),
                    len: block.len,
                    is_type: block.is_type,
                    anchor: block.anchor,
                });
            }
            clock = clock
                .checked_add(block.len)
                .ok_or(ShapeError::ClockOverflow)?;
        }
    }
    Ok(items)
}

/// One block: its clock length, whether its content is a shared type, and
/// what it hangs on.
fn block(r: &mut Cursor) -> Result<Block, ShapeError> {
    let info = r.read_u8()?;
    match info {
        BLOCK_SKIP | BLOCK_GC => {
            return Ok(Block {
                len: r.read_var::<u32>()?,
                is_type: false,
                anchor: Anchor::None,
            })
        }
        _ => {}
    }
    let left = if info & HAS_ORIGIN != 0 {
        Some(id(r)?)
    } else {
        None
    };
    let right = if info & HAS_RIGHT_ORIGIN != 0 {
        Some(id(r)?)
    } else {
        None
    };
    let anchor = if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        let parent = if r.read_var::<u32>()? == 1 {
            r.read_string()?; // a root type's name
            Anchor::Root
        } else {
            Anchor::Parent(id(r)?) // the parent type's item
        };
        if info & HAS_PARENT_SUB != 0 {
            r.read_string()?;
        }
        parent
    } else {
        Anchor::Origins { left, right }
    };
    let (len, is_type) = match info & 0b1111 {
        CONTENT_DELETED => (r.read_var::<u32>()?, false),
        // Legacy JSON content (no Yjs since version 13 writes it): yrs 0.28
        // decodes one string more than it encodes, so a document holding
        // it could not load its own encoding (found by fuzzing).
        CONTENT_JSON => return Err(ShapeError::LegacyJson),
        CONTENT_BINARY => {
            r.read_buf()?;
            (1, false)
        }
        CONTENT_STRING => {
            let s = r.read_string()?;
            let units = s.encode_utf16().count();
            (u32::try_from(units).unwrap_or(u32::MAX), false)
        }
        CONTENT_EMBED => {
            r.read_string()?; // JSON, parsed by serde_json, whose depth limit holds
            (1, false)
        }
        CONTENT_FORMAT => {
            r.read_string()?;
            r.read_string()?;
            (1, false)
        }
        CONTENT_TYPE => {
            match r.read_u8()? {
                TYPE_XML_ELEMENT => {
                    r.read_string()?;
                }
                // yrs is built without weak links: it refuses them too.
                TYPE_WEAK => return Err(ShapeError::UnknownContent(CONTENT_TYPE)),
                _ => {}
            }
            (1, true)
        }
        CONTENT_ANY => {
            let n = u64::from(r.read_var::<u32>()?);
            fits(r, "values", n, 1)?;
            for _ in 0..n {
                any(r)?;
            }
            (u32::try_from(n).unwrap_or(u32::MAX), false)
        }
        CONTENT_DOC => {
            r.read_string()?;
            any(r)?;
            (1, false)
        }
        other => return Err(ShapeError::UnknownContent(other)),
    };
    Ok(Block {
        len,
        is_type,
        anchor,
    })
}

fn id(r: &mut Cursor) -> Result<ID, ShapeError> {
    let client = client(r)?;
    Ok(ID::new(client, r.read_var::<u32>()?))
}

/// A client ID. Yjs' are at most 53 bits (a JavaScript integer); yrs
/// asserts as much in debug builds and in release folds the bits above
/// into the same ID, so client 2^53 + 5 would write as client 5.
fn client(r: &mut Cursor) -> Result<ClientID, ShapeError> {
    let id = r.read_var::<u64>()?;
    if id >> 53 != 0 {
        return Err(ShapeError::ClientTooLarge);
    }
    Ok(ClientID::new(id))
}

/// Consumes a signed `varInt` exactly as yrs' `read_var_i64` does, without
/// its arithmetic: yrs shifts the tenth byte past 64 bits, a panic in debug
/// builds (found by the apply_update fuzz target).
fn skip_var_i64(r: &mut Cursor) -> Result<(), ShapeError> {
    if r.read_u8()? < 0x80 {
        return Ok(());
    }
    let mut bits = 6u32;
    loop {
        let byte = r.read_u8()?;
        bits += 7;
        if byte < 0x80 {
            return Ok(());
        }
        if bits > 70 {
            return Err(ShapeError::Invalid);
        }
    }
}

/// One lib0 `Any` value, walked with an explicit stack: each entry counts
/// the values its array or map still holds.
fn any(r: &mut Cursor) -> Result<(), ShapeError> {
    // (values left, whether each is a map entry that starts with a key)
    let mut open: Vec<(u64, bool)> = Vec::new();
    let mut pending = 1u64; // values left at the current level
    let mut keyed = false;
    loop {
        while pending == 0 {
            match open.pop() {
                Some((left, is_map)) => {
                    pending = left;
                    keyed = is_map;
                }
                None => return Ok(()),
            }
        }
        pending -= 1;
        if keyed {
            r.read_string()?;
        }
        match r.read_u8()? {
            127 | 126 | 121 | 120 => {}
            125 => skip_var_i64(r)?,
            124 => {
                r.read_f32()?;
            }
            123 => {
                r.read_f64()?;
            }
            122 => {
                r.read_i64()?;
            }
            119 => {
                r.read_string()?;
            }
            116 => {
                r.read_buf()?;
            }
            tag @ (118 | 117) => {
                let is_map = tag == 118;
                let n = r.read_var::<u64>()?;
                fits(r, "nested values", n, if is_map { 2 } else { 1 })?;
                if open.len() >= MAX_NESTING {
                    return Err(ShapeError::TooDeep);
                }
                open.push((pending, keyed));
                pending = n;
                keyed = is_map;
            }
            _ => return Err(ShapeError::Invalid),
        }
    }
}

/// Refuses a count of items that the bytes left cannot hold, each item
/// taking at least `min_bytes`: yrs reserves memory for the count first.
fn fits(r: &Cursor, what: &'static str, declared: u64, min_bytes: u64) -> Result<(), ShapeError> {
    let left = r.buf.len().saturating_sub(r.next);
    if declared.saturating_mul(min_bytes) > left as u64 {
        return Err(ShapeError::Overcount {
            what,
            declared,
            left,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::encoding::write::Write;
    use yrs::updates::encoder::Encode;
    use yrs::{Any, Array, Doc, Map, MapPrelim, ReadTxn, Text, Transact, WriteTxn, XmlFragment};

    /// An update whose one item is a map entry holding `depth` nested arrays.
    pub fn nested_any_update(depth: usize) -> Vec<u8> {
        let mut u = Vec::new();
        u.write_var(1u32); // one client
        u.write_var(1u32); // one block
        u.write_var(7u64); // client 7
        u.write_var(0u32); // clock 0
        u.write_u8(CONTENT_ANY | HAS_PARENT_SUB);
        u.write_var(1u32); // parent is a root type…
        u.write_string("m"); // …named "m"
        u.write_string("k"); // map key
        u.write_var(1u32); // one value
        for _ in 0..depth {
            u.write_u8(117);
            u.write_var(1u32);
        }
        u.write_u8(126); // null at the bottom
        u.write_var(0u32); // empty delete set
        u
    }

    #[test]
    fn real_updates_pass_and_report_their_types() {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        let text = txn.get_or_insert_text("t");
        // ASCII: yrs 0.28 overflows in `SplittableString::block_offset` (a
        // debug-build panic) when this same transaction removes from a
        // multi-byte string, which is beside the point here.
        text.insert(&mut txn, 0, "hello, world");
        let map = txn.get_or_insert_map("m");
        map.insert(&mut txn, "n", Any::from(vec![Any::from(1), Any::Null]));
        map.insert(&mut txn, "nested", MapPrelim::default());
        let array = txn.get_or_insert_array("a");
        array.push_back(&mut txn, "x");
        let xml = txn.get_or_insert_xml_fragment("x");
        xml.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
        text.remove_range(&mut txn, 0, 2);
        let update = txn.encode_update_v1();
        let shape = check_update(&update).expect("a real update is well formed");
        assert_eq!(shape.type_items.len(), 2, "the nested map and the <p>");
        check_state_vector(&txn.state_vector().encode_v1()).expect("well formed");
    }

    #[test]
    fn items_report_what_each_hangs_on() {
        let doc = Doc::with_client_id(3);
        let mut txn = doc.transact_mut();
        let text = txn.get_or_insert_text("t");
        text.insert(&mut txn, 0, "ab"); // 3#0..2, at the root
        text.insert(&mut txn, 1, "c"); // 3#2, between a and b
        let map = txn.get_or_insert_map("m");
        let nested = map.insert(&mut txn, "k", MapPrelim::default()); // 3#3
        nested.insert(&mut txn, "v", 1); // 3#4, inside 3#3
        let update = txn.encode_update_v1();
        let items = items(&update).expect("a real update");
        let id = |clock| ID::new(ClientID::new(3), clock);
        let anchors: Vec<_> = items
            .iter()
            .map(|i| (i.id, i.len, i.is_type, i.anchor))
            .collect();
        assert_eq!(
            anchors,
            vec![
                (id(0), 1, false, Anchor::Root),
                (
                    id(1),
                    1,
                    false,
                    // "b", split from "ab": it keeps "a" as its origin.
                    Anchor::Origins {
                        left: Some(id(0)),
                        right: None
                    }
                ),
                (
                    id(2),
                    1,
                    false,
                    Anchor::Origins {
                        left: Some(id(0)),
                        right: Some(id(1))
                    }
                ),
                (id(3), 1, true, Anchor::Root),
                (id(4), 1, false, Anchor::Parent(id(3))),
            ]
        );
    }

    #[test]
    fn nesting_is_refused_past_the_limit_without_recursion() {
        assert!(check_update(&nested_any_update(MAX_NESTING)).is_ok());
        assert_eq!(
            check_update(&nested_any_update(MAX_NESTING + 1)),
            Err(ShapeError::TooDeep)
        );
        // Far deeper than any stack could take, checked in constant stack.
        assert_eq!(
            check_update(&nested_any_update(1_000_000)),
            Err(ShapeError::TooDeep)
        );
    }

    #[test]
    fn client_ids_over_53_bits_are_refused() {
        // Found by the apply_update fuzz target: yrs' `ClientID::new`
        // asserts in debug builds, and aliases the ID in release ones.
        let with_client = |client: u64| {
            let mut u = nested_any_update(0);
            // Client 7 is the single byte at offset 2.
            u.splice(2..3, []);
            let mut id = Vec::new();
            id.write_var(client);
            u.splice(2..2, id);
            u
        };
        assert!(check_update(&with_client((1 << 53) - 1)).is_ok());
        for client in [1 << 53, u64::MAX] {
            assert_eq!(
                check_update(&with_client(client)),
                Err(ShapeError::ClientTooLarge)
            );
            let mut sv = Vec::new();
            sv.write_var(1u32);
            sv.write_var(client);
            sv.write_var(1u32);
            assert_eq!(check_state_vector(&sv), Err(ShapeError::ClientTooLarge));
            // A delete set entry of that client.
            let mut ds = vec![0u8];
            ds.write_var(1u32);
            ds.write_var(client);
            ds.write_var(1u32);
            ds.write_var(0u32);
            ds.write_var(1u32);
            assert_eq!(check_update(&ds), Err(ShapeError::ClientTooLarge));
        }
    }

    #[test]
    fn clock_ranges_past_2_pow_32_are_refused() {
        // Found by the apply_update fuzz target: yrs' delete set decoder
        // adds clock and length unchecked.
        let delete = |start: u32, len: u32| {
            let mut ds = vec![0u8];
            ds.write_var(1u32);
            ds.write_var(7u64);
            ds.write_var(1u32);
            ds.write_var(start);
            ds.write_var(len);
            ds
        };
        assert!(check_update(&delete(u32::MAX - 1, 1)).is_ok());
        assert_eq!(
            check_update(&delete(u32::MAX, 1)),
            Err(ShapeError::ClockOverflow)
        );
        // A block's clock past 2^32.
        let mut u = nested_any_update(0);
        // Clock 0 is the single byte at offset 3.
        let mut clock = Vec::new();
        clock.write_var(u32::MAX);
        u.splice(3..4, clock);
        assert_eq!(check_update(&u), Err(ShapeError::ClockOverflow));
    }

    #[test]
    fn an_integer_of_eleven_bytes_is_walked_without_overflow() {
        // A map entry holding an integer of eleven bytes, the last one
        // shifted 69 bits: yrs reads it (wrapping in release builds).
        let mut u = nested_any_update(0);
        let at = u.len() - 2; // before the null and the delete set
        u.truncate(at);
        u.write_u8(125);
        u.extend_from_slice(&[0xff; 10]);
        u.write_u8(0x01);
        u.write_var(0u32);
        assert!(check_update(&u).is_ok());
        // Twelve: yrs refuses it, and so does the check.
        let mut long = u[..at].to_vec();
        long.write_u8(125);
        long.extend_from_slice(&[0xff; 11]);
        long.write_u8(0x01);
        long.write_var(0u32);
        assert_eq!(check_update(&long), Err(ShapeError::Invalid));
    }

    #[test]
    fn a_client_with_two_runs_of_blocks_is_refused() {
        // Each section: one block, client, clock, a GC block of length 1.
        let section = |client: u8, clock: u8| [1u8, client, clock, BLOCK_GC, 1];
        let update = |clients: &[(u8, u8)]| {
            let mut bytes = vec![clients.len() as u8];
            for &(client, clock) in clients {
                bytes.extend_from_slice(&section(client, clock));
            }
            bytes.push(0); // no deletes
            bytes
        };
        assert!(check_update(&update(&[(1, 0), (2, 0)])).is_ok());
        assert_eq!(
            check_update(&update(&[(1, 0), (2, 0), (1, 1)])),
            Err(ShapeError::RepeatedClient(1))
        );
        // Past a few clients the check uses a set.
        let mut many: Vec<(u8, u8)> = (1..=20).map(|c| (c, 0)).collect();
        assert!(check_update(&update(&many)).is_ok());
        many.push((7, 1));
        assert_eq!(
            check_update(&update(&many)),
            Err(ShapeError::RepeatedClient(7))
        );
    }

    #[test]
    fn a_delete_set_out_of_order_is_reported() {
        // No blocks; one client's deleted ranges as (start, len) pairs.
        let deletes = |ranges: &[(u8, u8)]| {
            let mut bytes = vec![0u8, 1, 5, ranges.len() as u8];
            for &(start, len) in ranges {
                bytes.extend_from_slice(&[start, len]);
            }
            bytes
        };
        let in_order = |ranges: &[(u8, u8)]| {
            check_update(&deletes(ranges))
                .expect("well formed")
                .deletes_in_order
        };
        assert!(in_order(&[(0, 2), (2, 1), (9, 3)]));
        for bad in [&[(4, 2), (0, 1)][..], &[(0, 3), (2, 1)], &[(0, 0)]] {
            assert!(!in_order(bad), "{bad:?}");
        }
    }

    #[test]
    fn legacy_json_content_is_refused() {
        // Client 1, clock 0: JSON content (tag 2) in the root "t", one
        // string "1". yrs 0.28 reads two strings for a count of one and
        // writes one, so the document could not load its own encoding.
        let update = [
            0x01, 0x01, 0x01, 0x00, 0x02, 0x01, 0x01, b't', 0x01, 0x01, b'1', 0x01, 0x01, b'2',
            0x00,
        ];
        assert_eq!(check_update(&update), Err(ShapeError::LegacyJson));
    }

    #[test]
    fn declared_counts_are_checked_against_the_bytes_present() {
        // A state vector declaring 100 million entries in 5 bytes.
        let mut sv = Vec::new();
        sv.write_var(100_000_000u32);
        assert!(matches!(
            check_state_vector(&sv),
            Err(ShapeError::Overcount { .. })
        ));
        // An update declaring 2^32 - 1 clients.
        let mut u = Vec::new();
        u.write_var(u32::MAX);
        assert!(matches!(
            check_update(&u),
            Err(ShapeError::Overcount { .. })
        ));
        // An array declaring a billion values.
        let mut a = nested_any_update(0);
        let at = a.len() - 2; // before the null and the delete set
        a.truncate(at);
        a.write_u8(117);
        a.write_var(1_000_000_000u64);
        assert!(matches!(
            check_update(&a),
            Err(ShapeError::Overcount { .. })
        ));
    }

    #[test]
    fn an_update_is_split_where_its_blocks_stop_following_on() {
        let writer = Doc::with_client_id(5);
        let text = writer.get_or_insert_text("t");
        let edit = |f: &dyn Fn(&mut yrs::TransactionMut)| {
            let mut txn = writer.transact_mut();
            f(&mut txn);
            txn.encode_update_v1()
        };
        let first = edit(&|txn| text.insert(txn, 0, "ab"));
        let second = edit(&|txn| text.insert(txn, 2, "c"));
        let third = edit(&|txn| text.insert(txn, 0, "d"));
        let delete = edit(&|txn| text.remove_range(txn, 0, 1));
        // Client 5: clocks 0..2, a skip over 2, then 3; and a deletion.
        let merged = yrs::merge_updates_v1([first.as_slice(), &third, &delete]).expect("merges");
        let runs = |bytes: &[u8]| {
            let shape = check_update(bytes).expect("well formed");
            shape
                .runs
                .iter()
                .map(|run| (run.client.get(), run.start, run.end))
                .collect::<Vec<_>>()
        };
        let deletes = |bytes: &[u8]| {
            use yrs::updates::decoder::Decode;
            yrs::Update::decode_v1(bytes)
                .expect("decodes")
                .delete_set()
                .is_empty()
        };

        let split = split_past_holes(&merged, |_| 0)
            .expect("well formed")
            .expect("clock 3 is past the hole at 2");
        assert_eq!(runs(&split.now), [(5, 0, 2)], "the skip goes with the cut");
        assert_eq!(runs(&split.later), [(5, 3, 4)]);
        assert!(!deletes(&split.now), "the deletions apply now");
        assert!(deletes(&split.later));

        assert_eq!(split_past_holes(&merged, |_| 3).expect("well formed"), None);
        assert!(!may_start_past_a_hole(
            &check_update(&second).expect("ok").runs,
            |_| 2
        ));
        assert!(may_start_past_a_hole(
            &check_update(&third).expect("ok").runs,
            |_| 2
        ));

        let split = split_past_holes(&third, |_| 0)
            .expect("well formed")
            .expect("clock 3 is past the hole at 0");
        assert_eq!(runs(&split.now), [], "nothing of client 5 follows on");
        assert_eq!(runs(&split.later), [(5, 3, 4)]);
    }
}
