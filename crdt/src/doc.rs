//! `DocState`: the one in-memory Yjs document of a room.
//!
//! It validates and applies updates, answers state vectors with diffs, and
//! keeps a cache of the last sync step 2 frame so that a crowd joining at once
//! shares one encoding of the state instead of one copy each.
//!
//! Invariant: an update is either applied whole or rejected with an error and
//! the document unchanged, except for a yrs integration error or panic, after
//! which the caller must discard this `DocState` and reload it from storage.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, Options, ReadTxn, StateVector, Transact, Update, ID};

use crate::wellformed::{self, MAX_NESTING};
use crate::{nesting, protocol};

/// Shared types from stored rows or other nodes' updates that yrs keeps
/// pending (their dependencies have not arrived), measured once they are
/// integrated (a client's are measured on arrival: `nesting.rs`). More
/// than this many waiting means the document is being abused: the oldest
/// are forgotten (a pending item never integrated costs nothing).
const MAX_UNCHECKED_TYPES: usize = 1 << 16;

/// How many times one update may release held-back blocks that it let
/// follow on (each time integrates at least one block).
const MAX_RELEASE_PASSES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not a Yjs v1 update. Nothing changed.
    #[error("not a valid Yjs update: {0}")]
    Malformed(String),
    /// Applying would make the encoded document larger than allowed. Nothing changed.
    #[error("the document would grow to about {would_be} bytes, over the limit of {limit}")]
    TooLarge { would_be: usize, limit: usize },
    /// yrs failed or panicked while integrating, or the update nested
    /// shared types too deeply: the document holds it and must be reloaded
    /// from storage (which never saw it).
    #[error("integrating the update failed: {0}")]
    Poisoned(String),
    /// The update holds an item whose right origin does not lie to the
    /// right of its left origin, which no Yjs or yrs peer writes. yrs (as
    /// patched, `vendor/README.md`) integrated it as garbage, so the
    /// document holds part of the update and must be reloaded from storage,
    /// which never saw it.
    #[error("item {0} names a right origin that does not follow its left origin")]
    CrossedOrigins(ID),
    /// A client's update would nest shared types too deeply, or create one
    /// under an item the document lacks, so that its depth is unknown
    /// (`nesting.rs`). Measured before applying: nothing changed.
    #[error("{0}")]
    Nesting(#[from] nesting::NestingError),
}

/// What to do with an item that begins below its client's clock in the
/// document and ends above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlaps {
    /// Cut the update down to what the document lacks (a client's update).
    Trim,
    /// Hand it to yrs as it is (a stored row, another node's update).
    Allow,
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The update carried something (it may still wait for missing
    /// dependencies inside yrs); relay and store it.
    Changed,
    /// Part of the update was already in the document, and yrs was given
    /// the rest: relay and store these bytes, not the update.
    Trimmed(Vec<u8>),
    /// The update was empty: nothing to relay or store.
    Empty,
}

/// Decodes a checked update, catching a panic in yrs' decoder.
fn decode(bytes: &[u8]) -> Result<Update, ApplyError> {
    match catch_unwind(|| Update::decode_v1(bytes)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(ApplyError::Malformed(e.to_string())),
        Err(_) => Err(ApplyError::Malformed("the decoder panicked".into())),
    }
}

/// What loading a stored document found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub applied: usize,
    /// Stored rows that could not be decoded (skipped, never fatal).
    pub skipped: usize,
}

/// Builds a `DocState` from stored rows handed in one at a time (the
/// snapshot first, then the log in order), so that a long log can be read
/// and applied a page at a time instead of held in memory whole.
pub struct DocLoader {
    state: DocState,
    report: LoadReport,
}

impl Default for DocLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl DocLoader {
    pub fn new() -> Self {
        DocLoader {
            state: DocState::new(),
            report: LoadReport::default(),
        }
    }

    /// Applies one stored row. A row that does not decode is skipped and
    /// counted; an error is returned only when yrs fails while integrating,
    /// and then the document must not be used.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<(), ApplyError> {
        match self.state.apply_unchecked(bytes) {
            Ok(_) => self.report.applied += 1,
            Err(ApplyError::Malformed(_)) => self.report.skipped += 1,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// What was applied and skipped so far: a caller that hands rows in
    /// one at a time learns which of them did not decode.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The loaded document, with an exact size and version 0.
    pub fn finish(self) -> (DocState, LoadReport) {
        let mut state = self.state;
        state.size_estimate = state.encoded_size();
        state.version = 0;
        (state, self.report)
    }
}

pub struct DocState {
    doc: Doc,
    /// Bumped by every applied change; keys the sync step 2 cache.
    version: u64,
    /// An upper estimate of the encoded size: exact after load, then grown by
    /// each update's length, and recomputed exactly only near the limit.
    size_estimate: usize,
    step2_cache: Option<Step2Cache>,
    /// Shared types from updates yrs holds back, whose nesting is checked
    /// once they are integrated.
    unchecked_types: Vec<ID>,
    /// For each client, the highest clock its blocks reached in an update
    /// applied here: at least the client's clock in the document, so an
    /// update whose blocks start at or above it cannot overlap what the
    /// document holds (see `refuse_out_of_order`). Boxed: every
    /// room's task holds its document inline.
    #[allow(clippy::box_collection)]
    clocks_seen: Box<HashMap<ClientID, u32>>,
    /// Blocks that start past a hole in their client's clocks, held back
    /// as Yjs holds them (one merged v1 update), until the clocks below
    /// them arrive. yrs would integrate such a block at once when it
    /// depends on nothing missing, and the live document would then differ
    /// from its own encoding (found by fuzzing). Durable with no store of
    /// its own: the rows that brought them are stored, every encoding
    /// (joiners, snapshots) carries them, and every path into the document
    /// (a load, another node's update) holds them back again.
    held: Option<Vec<u8>>,
}

struct Step2Cache {
    version: u64,
    /// Exact size: an idle room keeps its cache, and the encoder's buffer
    /// starts at 1 KiB.
    state_vector: Box<[u8]>,
    frame: Bytes,
    /// Length of the update at the end of `frame`.
    update_len: usize,
}

impl Default for DocState {
    fn default() -> Self {
        Self::new()
    }
}

impl DocState {
    pub fn new() -> Self {
        Self::with_options(Options::default())
    }

    /// A document with other yrs options: the history keeps deleted
    /// content (`skip_gc`), a restore edits under a client ID of its own.
    pub(crate) fn with_options(options: Options) -> Self {
        DocState {
            doc: Doc::with_options(options),
            version: 0,
            size_estimate: 2,
            step2_cache: None,
            unchecked_types: Vec::new(),
            clocks_seen: Box::default(),
            held: None,
        }
    }

    /// Builds the document from a snapshot and the update log that follows it.
    /// A stored row that is not a valid update is skipped and counted.
    pub fn load<'a>(
        snapshot: Option<&'a [u8]>,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Self, LoadReport), ApplyError> {
        let mut loader = DocLoader::new();
        for bytes in snapshot.into_iter().chain(updates) {
            loader.apply(bytes)?;
        }
        Ok(loader.finish())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn size_estimate(&self) -> usize {
        self.size_estimate
    }

    /// Validates and applies one Yjs v1 update from a client, refusing it
    /// when the encoded document would exceed `max_bytes`. An update that
    /// overlaps what the document holds is trimmed first
    /// (`Applied::Trimmed`, see `trim_overlaps`).
    pub fn apply_update(&mut self, update: &[u8], max_bytes: usize) -> Result<Applied, ApplyError> {
        self.apply_sized(update, max_bytes, Overlaps::Trim)
    }

    /// Applies an update the database holds (another node committed it):
    /// no size limit, and it is handed to yrs as it is, as a load would.
    pub fn apply_committed(&mut self, update: &[u8]) -> Result<Applied, ApplyError> {
        self.apply_sized(update, usize::MAX, Overlaps::Allow)
    }

    fn apply_sized(
        &mut self,
        update: &[u8],
        max_bytes: usize,
        overlaps: Overlaps,
    ) -> Result<Applied, ApplyError> {
        if self.size_estimate.saturating_add(update.len()) > max_bytes {
            // Near the limit: measure exactly before refusing.
            self.size_estimate = self.encoded_size();
            let would_be = self.size_estimate.saturating_add(update.len());
            if would_be > max_bytes {
                return Err(ApplyError::TooLarge {
                    would_be,
                    limit: max_bytes,
                });
            }
        }
        let applied = self.apply_checked(update, overlaps)?;
        let added = match &applied {
            Applied::Changed => update.len(),
            Applied::Trimmed(bytes) => bytes.len(),
            Applied::Empty => 0,
        };
        self.size_estimate = self.size_estimate.saturating_add(added);
        Ok(applied)
    }

    /// Applies a stored row (a load, the history), as it is.
    pub(crate) fn apply_unchecked(&mut self, bytes: &[u8]) -> Result<Applied, ApplyError> {
        self.apply_checked(bytes, Overlaps::Allow)
    }

    fn apply_checked(&mut self, bytes: &[u8], overlaps: Overlaps) -> Result<Applied, ApplyError> {
        let own = overlaps == Overlaps::Trim;
        let (applied, mut created) = self.apply_one(bytes, overlaps, own)?;
        if self.held.is_some() && applied != Applied::Empty {
            self.release_held(&mut created)?;
        }
        if !created.is_empty() || !self.unchecked_types.is_empty() {
            self.check_type_nesting(created)?;
        }
        Ok(applied)
    }

    /// Checks, trims and applies one update, holding back the blocks that
    /// start past a hole in their client's clocks. Returns what happened
    /// and the shared types it created that were not measured on arrival
    /// (the caller measures them once held-back blocks it let through are
    /// in too).
    /// `own`: whether this is a client's own update, not blocks it
    /// releases. Only then does an item with crossed origins refuse the
    /// update (only its sender deserves that), and only then are its shared
    /// types measured on arrival.
    fn apply_one(
        &mut self,
        bytes: &[u8],
        overlaps: Overlaps,
        own: bool,
    ) -> Result<(Applied, Vec<ID>), ApplyError> {
        // The shape first: yrs must never see a count it would reserve
        // memory for, or values nested deeper than its stack can decode.
        let shape =
            wellformed::check_update(bytes).map_err(|e| ApplyError::Malformed(e.to_string()))?;
        let update = decode(bytes)?;
        if update.is_empty() {
            return Ok((Applied::Empty, Vec::new()));
        }
        self.refuse_content_over_collected(bytes, &shape.runs)?;
        let trimmed = match overlaps {
            Overlaps::Trim => {
                if !shape.deletes_in_order {
                    return Err(ApplyError::Malformed(
                        wellformed::ShapeError::Unordered.to_string(),
                    ));
                }
                self.trim_overlaps(bytes, &shape.runs)?
            }
            Overlaps::Allow => None,
        };
        let (update, shape) = match &trimmed {
            None => (update, shape),
            Some(bytes) => {
                let shape = wellformed::check_update(bytes)
                    .map_err(|e| ApplyError::Malformed(e.to_string()))?;
                let update = decode(bytes)?;
                if update.is_empty() {
                    return Ok((Applied::Empty, Vec::new()));
                }
                (update, shape)
            }
        };
        let bytes = trimmed.as_deref().unwrap_or(bytes);
        // A client's shared types are measured now, the rest once
        // integrated (see `check_type_nesting`).
        let own_types_checked = own && !shape.type_items.is_empty();
        if own_types_checked {
            nesting::check_arrival(&self.doc.transact(), bytes)?;
        }
        let (update, shape, held) = self.hold_back_past_holes(bytes, update, shape)?;
        let doc = &self.doc;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)
                .map(|()| txn.crossed_origins().to_vec())
        }));
        match result {
            Ok(Ok(crossed)) => {
                // A client's own item with crossed origins refuses its
                // update. One that waited (in yrs, or held back here) for
                // another update to arrive is left as the garbage yrs made
                // of it, the same after any reload: the update that let it
                // in is innocent.
                if own {
                    let carried = |id: &&ID| {
                        shape.runs.iter().any(|run| {
                            run.client == id.client && (run.start..run.end).contains(&id.clock)
                        })
                    };
                    if let Some(id) = crossed.iter().find(carried) {
                        return Err(ApplyError::CrossedOrigins(*id));
                    }
                }
                self.version += 1;
                self.step2_cache = None;
                // A run of no blocks (a client listed at some clock with
                // nothing after it) reaches no clock (found by fuzzing: it
                // raised a client's clock here past a hole yrs still had).
                for run in shape.runs.iter().filter(|run| run.start < run.end) {
                    let seen = self.clocks_seen.entry(run.client).or_default();
                    *seen = (*seen).max(run.end);
                }
                if held.is_some() {
                    self.held = held;
                }
                if self.held.is_some() {
                    self.drop_held_clocks_given_to_yrs(&shape.runs);
                }
            }
            Ok(Err(e)) => return Err(ApplyError::Poisoned(e.to_string())),
            Err(_) => return Err(ApplyError::Poisoned("yrs panicked".into())),
        }
        let applied = match trimmed {
            None => Applied::Changed,
            Some(bytes) => Applied::Trimmed(bytes),
        };
        let unchecked = if own_types_checked {
            Vec::new()
        } else {
            shape.type_items
        };
        Ok((applied, unchecked))
    }

    /// For each client, the clock up to which yrs has integrated its
    /// blocks: a block above it would be integrated past a hole. A block
    /// yrs keeps pending counts as a hole too, since yrs would integrate
    /// the blocks after it at once (found by fuzzing). While yrs holds
    /// nothing back, that is the highest clock an applied update reached
    /// (every block handed to yrs follows on), so no lookup is needed.
    fn frontier(&self) -> impl Fn(ClientID) -> u32 + '_ {
        let exact = self
            .holds_back()
            .then(|| self.doc.transact().state_vector());
        move |client| match &exact {
            Some(state) => state.get(&client),
            None => self.clocks_seen.get(&client).copied().unwrap_or(0),
        }
    }

    /// Splits off the blocks of `bytes` that start past a hole in their
    /// client's clocks: returns what yrs is to be given now, and the held
    /// blocks merged with those held before (to keep once it is applied).
    /// The common case, every run following on, costs a look at each run.
    fn hold_back_past_holes(
        &self,
        bytes: &[u8],
        update: Update,
        shape: wellformed::UpdateShape,
    ) -> Result<(Update, wellformed::UpdateShape, Option<Vec<u8>>), ApplyError> {
        let frontier = self.frontier();
        if !wellformed::may_start_past_a_hole(&shape.runs, &frontier) {
            return Ok((update, shape, None));
        }
        let malformed = |e: wellformed::ShapeError| ApplyError::Malformed(e.to_string());
        let Some(split) = wellformed::split_past_holes(bytes, &frontier).map_err(malformed)? else {
            return Ok((update, shape, None));
        };
        let held = match &self.held {
            None => split.later,
            Some(before) => {
                match catch_unwind(|| yrs::merge_updates_v1([before.as_slice(), &split.later])) {
                    Ok(Ok(merged)) => merged,
                    Ok(Err(e)) => return Err(ApplyError::Malformed(e.to_string())),
                    Err(_) => return Err(ApplyError::Malformed("merging panicked".into())),
                }
            }
        };
        let shape = wellformed::check_update(&split.now).map_err(malformed)?;
        let update = decode(&split.now)?;
        Ok((update, shape, Some(held)))
    }

    /// Cuts from the held blocks the clocks yrs has now been given. yrs
    /// keeps the first copy of a clock it sees, so that copy, not the held
    /// one, is the document's; and the held blocks and those yrs keeps
    /// pending must not overlap, or an encoding that merges both would hold
    /// another copy than the live document (found by fuzzing: a crafted
    /// update gave clocks already held other content). Runs only while
    /// blocks are held.
    fn drop_held_clocks_given_to_yrs(&mut self, given: &[wellformed::ClientRun]) {
        let Some(held) = &self.held else {
            return;
        };
        let Ok(shape) = wellformed::check_update(held) else {
            self.held = None;
            return;
        };
        let overlaps = shape.runs.iter().any(|h| {
            given
                .iter()
                .any(|g| g.client == h.client && g.end > h.start)
        });
        if !overlaps {
            return;
        }
        let mut given_to_yrs = StateVector::default();
        for run in &shape.runs {
            given_to_yrs.set_max(
                run.client,
                self.clocks_seen.get(&run.client).copied().unwrap_or(0),
            );
        }
        if let Ok(Ok(rest)) = catch_unwind(|| yrs::diff_updates_v1(held, &given_to_yrs.encode_v1()))
        {
            let empty = wellformed::check_update(&rest).map_or(true, |s| s.runs.is_empty());
            self.held = (!empty).then_some(rest);
        }
    }

    /// Gives yrs the held-back blocks that now follow on (through the same
    /// checks as an update, holding back again what still does not).
    /// Held blocks that no longer pass them (a crafted update Yjs would
    /// throw on) are dropped: a reload drops them the same way.
    fn release_held(&mut self, created: &mut Vec<ID>) -> Result<(), ApplyError> {
        // Each pass integrates at least one held block; the cap keeps one
        // update's cost bounded, and what is left waits for the next one.
        for _ in 0..MAX_RELEASE_PASSES {
            let Some(held) = &self.held else {
                return Ok(());
            };
            let Ok(shape) = wellformed::check_update(held) else {
                self.held = None;
                return Ok(());
            };
            let follows_on = {
                let frontier = self.frontier();
                shape
                    .runs
                    .iter()
                    .any(|run| run.start <= frontier(run.client))
            };
            if !follows_on {
                return Ok(());
            }
            let Some(held) = self.held.take() else {
                return Ok(());
            };
            match self.apply_one(&held, Overlaps::Trim, false) {
                Ok((_, types)) => created.extend(types),
                Err(ApplyError::Malformed(_) | ApplyError::TooLarge { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Cuts a client's update down to what the document lacks when one of
    /// its items begins below its client's clock in the document and ends
    /// above it. A client's sync step 2 does that whenever the document
    /// gained some of what it carries between the server's sync step 1 and
    /// the answer (another node's copy of the same edits, after a node
    /// died, say). Given such an item, yrs integrates the part above the
    /// clock, and when that part's new neighbours do not resolve (its
    /// parent missing) it keeps it under a parent, or as a collected range,
    /// that its encoding does not give it: the live document and its state
    /// vector then differ from what joiners and a reload get (found by
    /// fuzzing). Cut at the clock, the item names the block just below as
    /// its origin, the way Yjs slices it, and lands the same both ways.
    ///
    /// Blocks yrs holds back count as held here when they continue a
    /// client's clock: yrs would integrate an update's copy of their clocks
    /// first, then slice the held-back block over it when it retries,
    /// with the same outcome (found by fuzzing).
    ///
    /// While yrs holds nothing back, each client's clock is the highest one
    /// its applied updates reached, so the common case needs no lookup.
    fn trim_overlaps(
        &self,
        bytes: &[u8],
        runs: &[wellformed::ClientRun],
    ) -> Result<Option<Vec<u8>>, ApplyError> {
        let mut exact = None;
        let mut held = HashMap::new();
        if self.holds_back() {
            let txn = self.doc.transact();
            let state = txn.state_vector();
            if let Some(pending) = txn.store().pending_update() {
                let pending = pending.update.encode_v1();
                let pending_runs = wellformed::check_update(&pending)
                    .map_err(|e| ApplyError::Malformed(e.to_string()))?
                    .runs;
                for run in pending_runs {
                    if run.start <= state.get(&run.client) {
                        held.insert(run.client, run.covered_to);
                    }
                }
            }
            exact = Some(state);
        }
        let mut trim = false;
        for run in runs {
            let clock = match &exact {
                Some(state) => state.get(&run.client),
                None => self.clocks_seen.get(&run.client).copied().unwrap_or(0),
            };
            if let Some(&held_to) = held.get(&run.client) {
                if run.start < held_to && clock < run.end {
                    trim = true;
                    break;
                }
            }
            if run.start < clock && clock < run.end {
                trim = wellformed::item_straddles(bytes, run.client, clock)
                    .map_err(|e| ApplyError::Malformed(e.to_string()))?;
                if trim {
                    break;
                }
            }
        }
        if !trim {
            return Ok(None);
        }
        let mut state = exact.unwrap_or_else(|| self.doc.transact().state_vector());
        for (client, held_to) in held {
            if state.get(&client) < held_to {
                state.set_max(client, held_to);
            }
        }
        match catch_unwind(|| yrs::diff_updates_v1(bytes, &state.encode_v1())) {
            Ok(Ok(trimmed)) => Ok(Some(trimmed)),
            Ok(Err(e)) => Err(ApplyError::Malformed(e.to_string())),
            Err(_) => Err(ApplyError::Malformed("trimming the update panicked".into())),
        }
    }

    /// Refuses an update holding an item that begins below its client's
    /// clock in the document when the block just below that clock was
    /// garbage-collected. yrs integrates such an item from the clock on,
    /// with the collected block as its origin, yet keeps it under the parent
    /// its encoding names: the live document shows it, but its encoding
    /// (what joiners and the compacted snapshot get) makes it a child of
    /// the collected block, so it loads as nothing. Yjs throws on such an
    /// update; no Yjs client sends one. Overlaps are rare (a block that
    /// starts at the client's clock, as every new edit does, is skipped
    /// without a lookup), so the state vector and the encoding that tells
    /// a collected block apart are computed only for them.
    fn refuse_content_over_collected(
        &self,
        bytes: &[u8],
        runs: &[wellformed::ClientRun],
    ) -> Result<(), ApplyError> {
        let mut state: Option<StateVector> = None;
        for run in runs {
            let seen = self.clocks_seen.get(&run.client).copied().unwrap_or(0);
            if run.start >= seen {
                continue;
            }
            let state = state.get_or_insert_with(|| self.doc.transact().state_vector());
            let clock = state.get(&run.client);
            if !(run.start < clock && clock < run.end) {
                continue;
            }
            let straddles = wellformed::item_straddles(bytes, run.client, clock)
                .map_err(|e| ApplyError::Malformed(e.to_string()))?;
            if straddles && self.is_collected(state, run.client, clock - 1) {
                return Err(ApplyError::Malformed(format!(
                    "client {} continues content the document has garbage-collected",
                    run.client
                )));
            }
        }
        Ok(())
    }

    /// Whether the block holding `client`'s `clock` is a GC block: the diff
    /// from a state vector that lacks just that clock starts with it.
    fn is_collected(&self, state: &StateVector, client: ClientID, clock: u32) -> bool {
        let mut from = state.clone();
        from.set_min(client, clock);
        let diff = self.doc.transact().encode_diff_v1(&from);
        let mut r = yrs::encoding::read::Cursor::new(&diff);
        let first_block = (|| -> Result<u8, yrs::encoding::read::Error> {
            use yrs::encoding::read::Read;
            let _clients: u32 = r.read_var()?;
            let _blocks: u32 = r.read_var()?;
            let _client: u64 = r.read_var()?;
            let _clock: u32 = r.read_var()?;
            r.read_u8()
        })();
        matches!(first_block, Ok(wellformed::BLOCK_GC))
    }

    /// Checks how deeply the shared types of stored rows and other nodes'
    /// updates nest, once integrated (`nesting.rs` says why). One over the
    /// limit poisons the document, which the caller reloads from storage;
    /// a current node never admits one, so only rows written before the
    /// check on arrival existed can.
    fn check_type_nesting(&mut self, created: Vec<ID>) -> Result<(), ApplyError> {
        let txn = self.doc.transact();
        let integrated = txn.state_vector();
        let mut depths: HashMap<ID, usize> = HashMap::new();
        let mut waiting = Vec::new();
        let earlier = std::mem::take(&mut self.unchecked_types);
        for id in created.into_iter().chain(earlier) {
            if integrated.get(&id.client) <= id.clock {
                waiting.push(id);
                continue;
            }
            if nesting::depth(&txn, id, &mut depths) > MAX_NESTING {
                return Err(ApplyError::Poisoned(
                    nesting::NestingError::TooDeep.to_string(),
                ));
            }
        }
        let excess = waiting.len().saturating_sub(MAX_UNCHECKED_TYPES);
        waiting.drain(..excess);
        self.unchecked_types = waiting;
        Ok(())
    }

    /// Whether yrs holds back blocks (or deletions) whose dependencies have
    /// not arrived.
    pub fn holds_back(&self) -> bool {
        let txn = self.doc.transact();
        let store = txn.store();
        store.pending_update().is_some() || store.pending_ds().is_some()
    }

    /// The encoded state vector (for sync step 1).
    pub fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// Everything the holder of `sv` lacks, as a Yjs v1 update, including
    /// updates yrs holds back until their dependencies arrive (a client that
    /// gets them keeps them pending too, exactly as the server does).
    pub fn diff(&self, sv: &StateVector) -> Vec<u8> {
        let txn = self.doc.transact();
        let diff = txn.encode_diff_v1(sv);
        let store = txn.store();
        let mut parts = Vec::new();
        if let Some(pending) = store.pending_update() {
            parts.push(pending.update.encode_v1());
        }
        if let Some(deletes) = store.pending_ds() {
            // An update with no blocks (varUint 0) and only this delete set.
            let mut update = vec![0u8];
            update.extend_from_slice(&deletes.encode_v1());
            parts.push(update);
        }
        if let Some(held) = &self.held {
            parts.push(held.clone());
        }
        if parts.is_empty() {
            return diff;
        }
        parts.insert(0, diff);
        // Every part is yrs' own encoding, or blocks that passed the shape
        // check and yrs' decoder: merging them cannot meet bad input. A
        // held-back block never hides integrated ones merged in front of
        // it: yrs integrates no block past a hole (`hold_back_past_holes`),
        // so each client's pending and held blocks start where its
        // integrated ones end, or later.
        yrs::merge_updates_v1(&parts).unwrap_or_else(|_| parts.swap_remove(0))
    }

    /// The whole document as one Yjs v1 update.
    pub fn encode_state(&self) -> Vec<u8> {
        self.diff(&StateVector::default())
    }

    /// The exact encoded size (encodes the whole document: not per message).
    pub fn encoded_size(&self) -> usize {
        self.encode_state().len()
    }

    /// A sync step 2 frame answering `sv`. The last answer is cached until
    /// the document changes, so joiners with the same state vector (every
    /// fresh client sends the empty one) share one encoding.
    pub fn sync_step2_frame(&mut self, sv: &StateVector) -> Bytes {
        let key = sv.encode_v1();
        if let Some(cache) = &self.step2_cache {
            if cache.version == self.version && *cache.state_vector == *key {
                return cache.frame.clone();
            }
        }
        let update = self.diff(sv);
        let frame = protocol::encode_sync_step2(&update);
        self.step2_cache = Some(Step2Cache {
            version: self.version,
            state_vector: key.into_boxed_slice(),
            frame: frame.clone(),
            update_len: update.len(),
        });
        frame
    }

    /// The whole document as one update, shared with the sync step 2 cache:
    /// repeated reads of an unchanged document (joiners, the API) cost one
    /// encoding, not one each.
    pub fn state_update(&mut self) -> Bytes {
        let frame = self.sync_step2_frame(&StateVector::default());
        let len = self.step2_cache.as_ref().map_or(0, |c| c.update_len);
        frame.slice(frame.len().saturating_sub(len)..)
    }

    /// Frees the cached sync step 2 frame (for example when the room goes idle).
    pub fn drop_caches(&mut self) {
        self.step2_cache = None;
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        txn.encode_update_v1()
    }

    fn text_of(state: &DocState) -> String {
        let text = state.doc().get_or_insert_text("t");
        let txn = state.doc().transact();
        text.get_string(&txn)
    }

    /// Client 2, clock 0: an item with both origins (0x80 | 0x40) and a
    /// string (4): left origin 1#6 ("g"), right origin 1#3 ("d"), "X", then
    /// an empty delete set. Its right origin lies left of its left one,
    /// which no Yjs or yrs peer writes.
    const CROSSED: &[u8] = &[1, 1, 2, 0, 0xc4, 1, 6, 1, 3, 1, b'X', 0];

    /// Client 1's "abcdefghij", then "Z" appended.
    fn crossed_base() -> (Vec<u8>, Vec<u8>) {
        let writer = Doc::with_client_id(1);
        let base = edit(&writer, 0, "abcdefghij");
        let appended = edit(&writer, 10, "Z");
        (base, appended)
    }

    #[test]
    fn a_client_update_with_crossed_origins_is_refused() {
        let (base, _) = crossed_base();
        let mut state = DocState::new();
        state.apply_update(&base, 1 << 20).expect("accepted");
        let refused = state.apply_update(CROSSED, 1 << 20);
        let Err(ApplyError::CrossedOrigins(id)) = refused else {
            panic!("not refused: {refused:?}");
        };
        assert_eq!(id, ID::new(ClientID::new(2), 0));
    }

    /// Found by fuzzing. yrs 0.28.1 placed such an item by the blocks
    /// around it when it arrived: live "abcXdefghijZ", reloaded
    /// "abcdefghijZX". Patched (vendor/README.md), it is garbage in every
    /// order, as a stored row from before the fix loads.
    #[test]
    fn an_item_with_crossed_origins_lands_nowhere_in_any_order() {
        let (base, appended) = crossed_base();
        let orders: [[&[u8]; 3]; 3] = [
            [&base, CROSSED, &appended],
            [&base, &appended, CROSSED],
            [CROSSED, &base, &appended],
        ];
        for order in orders {
            let (state, _) = DocState::load(None, order).expect("loads");
            assert_eq!(text_of(&state), "abcdefghijZ", "{order:?}");
            let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
            assert_eq!(text_of(&reloaded), "abcdefghijZ", "{order:?}");
        }
    }

    /// An item with crossed origins that waited in yrs for its origins is
    /// judged when the update bringing them arrives, and that update, which
    /// did nothing wrong, is accepted.
    #[test]
    fn the_update_that_releases_a_waiting_crossed_item_is_accepted() {
        let (base, _) = crossed_base();
        let mut state = DocState::new();
        // It waits: client 1's blocks are missing.
        state.apply_update(CROSSED, 1 << 20).expect("accepted");
        state.apply_update(&base, 1 << 20).expect("accepted");
        assert_eq!(text_of(&state), "abcdefghij");
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(text_of(&reloaded), "abcdefghij");
    }

    /// An item whose origin is such garbage is garbage too, as in Yjs:
    /// yrs placed it as if it had no left neighbour, by the items around it
    /// when it arrived, so an item inserted at the start later went before
    /// it live and after it on a reload (found by fuzzing).
    #[test]
    fn an_item_after_a_crossed_one_is_garbage_too() {
        let (base, _) = crossed_base();
        // Client 2, clock 1: "Y" after its own crossed "X", before "h".
        let after_crossed: &[u8] = &[1, 1, 2, 1, 0xc4, 2, 0, 1, 7, 1, b'Y', 0];
        // Client 97: "#" with no origins, at the start of root "t".
        let at_start: &[u8] = &[1, 1, 97, 0, 0x04, 1, 1, b't', 1, b'#', 0];
        let mut state = DocState::new();
        // Both of client 2's items wait for client 1's, which lets them in.
        for update in [CROSSED, after_crossed, &base, at_start] {
            state.apply_update(update, 1 << 20).expect("accepted");
        }
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(text_of(&reloaded), text_of(&state));
        assert!(!text_of(&state).contains('Y'), "{}", text_of(&state));
    }

    /// The same when Tandem held the item back itself (it starts past a
    /// hole in its client's clocks): the update that fills the hole is
    /// accepted, and a load of the same rows does not fail.
    #[test]
    fn the_update_that_releases_a_held_back_crossed_item_is_accepted() {
        let (base, _) = crossed_base();
        // CROSSED at clock 5 of client 2.
        let crossed_later: &[u8] = &[1, 1, 2, 5, 0xc4, 1, 6, 1, 3, 1, b'X', 0];
        let filler = Doc::with_client_id(2);
        filler
            .transact_mut()
            .apply_update(decode(&base).expect("decodes"))
            .expect("applies");
        let fill = edit(&filler, 10, "12345");
        let mut state = DocState::new();
        for update in [base.as_slice(), crossed_later, &fill] {
            state.apply_update(update, 1 << 20).expect("accepted");
        }
        assert_eq!(text_of(&state), "abcdefghij12345");
        let (loaded, _) =
            DocState::load(None, [base.as_slice(), crossed_later, &fill]).expect("loads");
        assert_eq!(text_of(&loaded), "abcdefghij12345");
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(text_of(&reloaded), "abcdefghij12345");
    }

    #[test]
    fn held_back_blocks_never_hide_integrated_ones_in_the_encoded_state() {
        // Found by the apply_update fuzz target. Client 1's "shared base
        // text" at clocks 38..54 was integrated although 0..38 are missing
        // (it depends on none of them); "A👋" at 16..19 waits for 1#6.
        // Merged in front, the waiting block made a receiver hold back the
        // integrated text, which vanished from joiners and snapshots. Now
        // both wait, as in Yjs, and both are in every encoding.
        let hole: &[u8] = &[
            0x01, 0x01, 0x01, 0x26, 0x04, 0x01, 0x07, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
            0x10, 0x73, 0x68, 0x61, 0x72, 0x65, 0x64, 0x20, 0x62, 0x61, 0x73, 0x65, 0x20, 0x74,
            0x65, 0x78, 0x74, 0x00,
        ];
        let waiting: &[u8] = &[
            0x01, 0x01, 0x01, 0x10, 0xc4, 0x01, 0x06, 0x01, 0x07, 0x05, 0x41, 0xf0, 0x9f, 0x91,
            0x8b, 0x01, 0x01, 0x01, 0x00, 0x02,
        ];
        let mut state = DocState::new();
        for update in [hole, waiting] {
            assert!(state.apply_update(update, 1 << 20).is_ok());
        }
        let expected = serde_json::json!({});
        assert_eq!(state.to_json(), expected);
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(reloaded.to_json(), expected);
        let (compacted, _) = crate::compact(None, [hole, waiting]).expect("compacts");
        let (reloaded, _) = DocState::load(Some(&compacted), []).expect("loads");
        assert_eq!(reloaded.to_json(), expected);
        let runs: Vec<_> = wellformed::check_update(&reloaded.encode_state())
            .expect("well formed")
            .runs
            .iter()
            .map(|run| (run.start, run.covered_to, run.end))
            .collect();
        assert_eq!(runs, [(16, 19, 54)], "both blocks kept, a skip between");
    }

    #[test]
    fn an_update_ahead_of_its_clients_clock_is_held_back_until_the_clocks_below_arrive() {
        // Found by the apply_update fuzz target. "A" is client 103's clock
        // 0; a space at clock 93 after it comes next, then a space at clock
        // 1 and "s" at 2. yrs integrated the space at 93 at once (it
        // depends only on "A"), so the live document read "A s " while its
        // encoding loaded as "A  s". Held back as Yjs holds it, it waits
        // for clocks 3..93 and is in every encoding meanwhile, so the
        // document reads the same live, reloaded and replayed.
        let a: &[u8] = &[
            0x01, 0x01, 0x67, 0x00, 0x04, 0x01, 0x07, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
            0x01, 0x41, 0x00,
        ];
        let ahead: &[u8] = &[0x01, 0x01, 0x67, 0x5d, 0x84, 0x67, 0x00, 0x01, 0x20, 0x00];
        let space: &[u8] = &[0x01, 0x01, 0x67, 0x01, 0x84, 0x67, 0x00, 0x01, 0x20, 0x00];
        let s: &[u8] = &[0x01, 0x01, 0x67, 0x02, 0x84, 0x67, 0x01, 0x01, 0x73, 0x00];
        let content = |d: &DocState| d.to_json()["content"].clone();
        let mut state = DocState::new();
        for update in [a, ahead] {
            assert_eq!(
                state.apply_update(update, 1 << 20).ok(),
                Some(Applied::Changed)
            );
        }
        assert_eq!(content(&state), "A", "the block past the hole waits");
        let (mut reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(content(&reloaded), "A");
        for update in [space, s] {
            assert_eq!(
                state.apply_update(update, 1 << 20).ok(),
                Some(Applied::Changed)
            );
            assert!(reloaded.apply_update(update, 1 << 20).is_ok());
        }
        assert_eq!(content(&state), "A s", "the space at 93 still waits");
        assert_eq!(
            content(&reloaded),
            content(&state),
            "a snapshot taken meanwhile"
        );
        let (log, _) = DocState::load(None, [a, ahead, space, s]).expect("loads");
        assert_eq!(content(&log), content(&state), "the log replayed");
        let (again, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(content(&again), content(&state), "the encoding");
        assert_eq!(again.state_vector(), state.state_vector());
        let held: Vec<_> = wellformed::check_update(&again.encode_state())
            .expect("well formed")
            .runs
            .iter()
            .map(|run| (run.start, run.covered_to, run.end))
            .collect();
        assert_eq!(held, [(0, 3, 94)], "clocks 0..3, a skip, then 93");
    }

    #[test]
    fn a_run_with_no_blocks_past_its_start_raises_no_clock() {
        // Both found by the apply_update fuzz target. A client listed with
        // no blocks, or with only a skip block, counted as having reached
        // the clock the run names, so that client's next block, which
        // depends only on what the document holds, was handed to yrs past
        // the hole below it instead of being held back, and the reload
        // lost it.
        let empty_run: &[u8] = &[1, 0, 1, 0x80, 0x01, 0];
        let skip_run: &[u8] = &[1, 1, 103, 103, 10, 4, 0];
        let cases = [
            // varUint 1 client • 0 blocks • client 1 • clock 128 • no deletions
            (1, empty_run),
            // 1 client • 1 block • client 103 • clock 103 • a skip of 4 • no deletions
            (103, skip_run),
        ];
        for (client, run) in cases {
            let writer = Doc::with_client_id(client);
            let first = edit(&writer, 0, "a");
            let _missing = edit(&writer, 1, "bb");
            // This one depends only on "a".
            let past_the_hole = edit(&writer, 0, "c");
            let mut state = DocState::new();
            for update in [first.as_slice(), run, &past_the_hole] {
                assert!(state.apply_update(update, 1 << 20).is_ok());
            }
            assert_eq!(
                text_of(&state),
                "a",
                "client {client}: the block past the hole waits"
            );
            let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
            assert_eq!(text_of(&reloaded), "a", "client {client}");
            assert_eq!(reloaded.state_vector(), state.state_vector());
        }
    }

    #[test]
    fn a_merged_update_with_a_skip_over_missing_clocks_is_applied_and_completed_later() {
        // `Y.mergeUpdates` of a client's first and third edits: a skip
        // block covers the second, which the document lacks. A Yjs
        // client's sync step 2 merges the updates it holds back like this.
        let writer = Doc::with_client_id(5);
        let first = edit(&writer, 0, "a");
        let second = edit(&writer, 1, "b");
        let third = edit(&writer, 0, "c");
        let merged = yrs::merge_updates_v1([first.as_slice(), third.as_slice()]).expect("merges");
        let mut state = DocState::new();
        assert_eq!(
            state.apply_update(&merged, 1 << 20).ok(),
            Some(Applied::Changed)
        );
        assert!(state.apply_update(&second, 1 << 20).is_ok());
        assert_eq!(text_of(&state), "cab");
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(text_of(&reloaded), "cab");
    }

    #[test]
    fn content_continuing_a_collected_block_is_refused() {
        // Found by the apply_update fuzz target. Client 2's "Bé" waits for
        // client 1 and deletes 1#8..11; a GC block covers client 1's clocks
        // 0..8; then client 1's "shared bs aetext" arrives for clocks
        // 0..16 under the root "content". yrs integrated its clocks 8..16
        // after the GC block and showed "etext", but the encoded state
        // made them children of the collected block and loaded as nothing.
        let waiting: &[u8] = &[
            0x01, 0x01, 0x02, 0x00, 0xc4, 0x01, 0x06, 0x01, 0x07, 0x03, 0x42, 0xc3, 0xa9, 0x01,
            0x01, 0x01, 0x08, 0x03,
        ];
        let collected: &[u8] = &[
            0x01, 0x01, 0x01, 0x00, 0x00, 0x08, 0x00, 0x01, 0x07, 0x05, 0x41, 0x33, 0x9f, 0x91,
            0x8b, 0x01, 0x01, 0x01, 0x00, 0x02,
        ];
        let overlapping: &[u8] = &[
            0x01, 0x01, 0x01, 0x00, 0x04, 0x01, 0x07, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
            0x10, 0x73, 0x68, 0x61, 0x72, 0x65, 0x64, 0x20, 0x62, 0x73, 0x20, 0x61, 0x65, 0x74,
            0x65, 0x78, 0x74, 0x00,
        ];
        let mut state = DocState::new();
        assert!(state.apply_update(waiting, 1 << 20).is_ok());
        assert!(state.apply_update(collected, 1 << 20).is_ok());
        let before = state.state_vector();
        // From a client, a stored row or another node alike.
        assert!(matches!(
            state.apply_update(overlapping, 1 << 20),
            Err(ApplyError::Malformed(_))
        ));
        let refused = state.apply_committed(overlapping);
        assert!(
            matches!(refused, Err(ApplyError::Malformed(_))),
            "{refused:?}"
        );
        assert_eq!(
            state.state_vector(),
            before,
            "a refused update changes nothing"
        );
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(reloaded.to_json(), state.to_json());
    }

    #[test]
    fn an_item_overlapping_a_clients_clock_is_trimmed_to_what_the_document_lacks() {
        // A client's sync step 2 answers the server's sync step 1; when
        // the document gained part of what it carries meanwhile (another
        // node's copy of the same edits, say), an item in it begins below
        // the client's clock and ends above it. Before the fix the whole
        // update was refused, the client's own edits in it with it, and
        // the client never sent them again (a cluster test found it).
        let writer = Doc::with_client_id(7);
        let first = edit(&writer, 0, "ab");
        edit(&writer, 2, "cd");
        let whole = writer
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let mut state = DocState::new();
        assert!(state.apply_update(&first, 1 << 20).is_ok());
        let Ok(Applied::Trimmed(rest)) = state.apply_update(&whole, 1 << 20) else {
            panic!("the overlapping update is trimmed");
        };
        assert_eq!(text_of(&state), "abcd");
        let runs = wellformed::check_update(&rest).expect("well formed").runs;
        assert_eq!((runs[0].start, runs[0].end), (2, 4), "{runs:?}");
        // What is relayed and stored completes a peer that had "ab".
        let peer = Doc::with_client_id(8);
        peer.transact_mut()
            .apply_update(Update::decode_v1(&first).expect("decodes"))
            .expect("applies");
        peer.transact_mut()
            .apply_update(Update::decode_v1(&rest).expect("decodes"))
            .expect("applies");
        let text = peer.get_or_insert_text("t");
        assert_eq!(text.get_string(&peer.transact()), "abcd");
        let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
        assert_eq!(text_of(&reloaded), "abcd");
        // A committed update is handed over as it is.
        let mut committed = DocState::new();
        assert!(committed.apply_committed(&first).is_ok());
        assert_eq!(
            committed.apply_committed(&whole).ok(),
            Some(Applied::Changed)
        );
        assert_eq!(text_of(&committed), "abcd");
    }

    #[test]
    fn an_update_overlapping_blocks_yrs_holds_back_is_trimmed_to_what_follows_them() {
        // Found by the apply_update fuzz target (the input is replayed in
        // its corpus; here each update is applied from a client and the
        // state vector compared with a reload after each). yrs held back
        // client 1's block for clocks 1..113 (its parent was missing); a
        // later update brought client 1's clock 1 under another parent, and
        // the held-back block, sliced over it when yrs retried it, left the
        // live state vector at 113 and the encoding at 2.
        let input = include_bytes!(
            "../../fuzz/corpus/apply_update/regress-overlap-through-a-held-back-block"
        );
        let mut rest = &input[1..];
        let mut state = DocState::new();
        while let [lo, hi, tail @ ..] = rest {
            let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
            let (part, next) = tail.split_at(len);
            rest = next;
            if state.apply_update(part, usize::MAX).is_err() {
                continue;
            }
            let (reloaded, _) = DocState::load(Some(&state.encode_state()), []).expect("loads");
            assert_eq!(reloaded.state_vector(), state.state_vector());
        }
    }

    #[test]
    fn applies_and_diffs() {
        let client = Doc::new();
        let u1 = edit(&client, 0, "hello");
        let mut state = DocState::new();
        assert_eq!(
            state.apply_update(&u1, 1 << 20).ok(),
            Some(Applied::Changed)
        );
        assert_eq!(text_of(&state), "hello");
        let diff = state.diff(&StateVector::default());
        let other = Doc::new();
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&diff).expect("diff decodes"))
            .expect("diff applies");
        assert_eq!(
            other.get_or_insert_text("t").get_string(&other.transact()),
            "hello"
        );
    }

    #[test]
    fn garbage_is_refused_and_changes_nothing() {
        let mut state = DocState::new();
        let before = state.encode_state();
        for garbage in [&[1u8, 2, 3][..], &[0xff; 40][..], &[5, 0, 0, 9, 9][..]] {
            assert!(state.apply_update(garbage, 1 << 20).is_err());
        }
        assert_eq!(state.encode_state(), before);
        assert_eq!(state.version(), 0);
    }

    #[test]
    fn empty_update_is_not_a_change() {
        let mut state = DocState::new();
        let empty = Doc::new()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(
            state.apply_update(&empty, 1 << 20).ok(),
            Some(Applied::Empty)
        );
        assert_eq!(state.version(), 0);
    }

    #[test]
    fn refuses_updates_over_the_size_limit() {
        let client = Doc::new();
        let mut state = DocState::new();
        let small = edit(&client, 0, "a");
        state.apply_update(&small, 200).expect("fits");
        let big = edit(&client, 1, &"x".repeat(500));
        assert!(matches!(
            state.apply_update(&big, 200),
            Err(ApplyError::TooLarge { .. })
        ));
        assert_eq!(text_of(&state), "a");
    }

    #[test]
    fn step2_cache_is_shared_and_invalidated() {
        let client = Doc::new();
        let mut state = DocState::new();
        state
            .apply_update(&edit(&client, 0, "a"), 1 << 20)
            .expect("applies");
        let sv = StateVector::default();
        let f1 = state.sync_step2_frame(&sv);
        let f2 = state.sync_step2_frame(&sv);
        assert_eq!(f1.as_ptr(), f2.as_ptr(), "same allocation is shared");
        state
            .apply_update(&edit(&client, 1, "b"), 1 << 20)
            .expect("applies");
        let f3 = state.sync_step2_frame(&sv);
        assert_ne!(f1, f3);
    }

    #[test]
    fn the_state_update_is_shared_with_the_step2_cache() {
        let client = Doc::new();
        let mut state = DocState::new();
        state
            .apply_update(&edit(&client, 0, "abc"), 1 << 20)
            .expect("applies");
        let update = state.state_update();
        assert_eq!(&update[..], &state.encode_state()[..]);
        let frame = state.sync_step2_frame(&StateVector::default());
        assert_eq!(
            update.as_ptr(),
            frame[frame.len() - update.len()..].as_ptr(),
            "no second encoding"
        );
    }

    #[test]
    fn updates_waiting_for_dependencies_are_part_of_every_diff() {
        let client = Doc::new();
        let first = edit(&client, 0, "first;");
        let second = edit(&client, 6, "second;");
        let mut state = DocState::new();
        // `second` arrives first: it continues `first`, so yrs keeps it
        // pending.
        state.apply_update(&second, 1 << 20).expect("accepted");
        let joiner_view = state.diff(&StateVector::default());
        let (compacted, _) = crate::compact(None, [joiner_view.as_slice()]).expect("compacts");
        // The joiner (or the compacted snapshot) then receives `first`.
        let (later, _) = DocState::load(Some(&compacted), [first.as_slice()]).expect("loads");
        assert_eq!(text_of(&later), "first;second;");
    }

    /// `depth` maps, each inside the one before, as one update.
    fn nested_maps(depth: usize) -> Vec<u8> {
        use yrs::{Map, MapPrelim, MapRef, WriteTxn};
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        let mut map: MapRef = txn.get_or_insert_map("m");
        for _ in 0..depth {
            map = map.insert(&mut txn, "k", MapPrelim::default());
        }
        txn.encode_update_v1()
    }

    #[test]
    fn shared_types_nested_too_deeply_are_refused_on_arrival() {
        let mut state = DocState::new();
        assert!(state
            .apply_update(&nested_maps(MAX_NESTING), 1 << 30)
            .is_ok());
        let mut state = DocState::new();
        assert!(matches!(
            state.apply_update(&nested_maps(MAX_NESTING + 1), 1 << 30),
            Err(ApplyError::Nesting(nesting::NestingError::TooDeep))
        ));
        assert_eq!(state.version(), 0, "nothing was applied");
    }

    /// The depth of a type created inside the document's own types counts
    /// the document's levels; content that is not a type nests anywhere.
    #[test]
    fn a_type_inside_the_deepest_one_is_refused_and_text_there_accepted() {
        use yrs::{Map, MapPrelim, MapRef, TextPrelim, TextRef, WriteTxn};
        let client = Doc::with_client_id(7);
        let mut deepest: MapRef = {
            let mut txn = client.transact_mut();
            txn.get_or_insert_map("m")
        };
        let chain = {
            let mut txn = client.transact_mut();
            for _ in 0..MAX_NESTING {
                deepest = deepest.insert(&mut txn, "k", MapPrelim::default());
            }
            txn.encode_update_v1()
        };
        let mut state = DocState::new();
        state.apply_update(&chain, 1 << 30).expect("at the limit");
        let one_more = {
            let mut txn = client.transact_mut();
            deepest.insert(&mut txn, "k", MapPrelim::default());
            txn.encode_update_v1()
        };
        assert!(matches!(
            state.apply_update(&one_more, 1 << 30),
            Err(ApplyError::Nesting(nesting::NestingError::TooDeep))
        ));
        // A value (not a type) under the same map is fine.
        let client = Doc::with_client_id(8);
        client
            .transact_mut()
            .apply_update(decode(&chain).expect("decodes"))
            .expect("applies");
        let value = {
            let mut txn = client.transact_mut();
            let mut map: MapRef = txn.get_or_insert_map("m");
            for _ in 0..MAX_NESTING {
                map = match map.get(&txn, "k") {
                    Some(yrs::Out::YMap(m)) => m,
                    other => panic!("expected a map, got {other:?}"),
                };
            }
            map.insert(&mut txn, "v", "leaf");
            txn.encode_update_v1()
        };
        assert!(state.apply_update(&value, 1 << 30).is_ok());
        // A type whose left origin is a character of a text at the root.
        let client = Doc::with_client_id(9);
        let embed = {
            let text: TextRef = client.get_or_insert_text("t");
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 0, "ab");
            let inner = text.insert_embed(&mut txn, 1, TextPrelim::new("x"));
            let _ = inner;
            txn.encode_update_v1()
        };
        assert!(state.apply_update(&embed, 1 << 30).is_ok());
    }

    /// A whole document's state from several clients, as a reconnecting
    /// client sends it: types hang on items of other clients in the same
    /// update, in whatever order its runs are listed.
    #[test]
    fn types_hanging_on_other_items_of_the_same_update_are_measured() {
        use yrs::{Array, ArrayPrelim, ArrayRef, Map, MapPrelim, MapRef, WriteTxn};
        let a = Doc::with_client_id(100);
        let b = Doc::with_client_id(5);
        let mut inner: MapRef = {
            let mut txn = a.transact_mut();
            let array: ArrayRef = txn.get_or_insert_array("a");
            array.push_back(&mut txn, ArrayPrelim::default());
            array.push_back(&mut txn, MapPrelim::default())
        };
        let from_a = a
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        b.transact_mut()
            .apply_update(decode(&from_a).expect("decodes"))
            .expect("applies");
        {
            let mut txn = b.transact_mut();
            let array: ArrayRef = txn.get_or_insert_array("a");
            let nested: MapRef = array.insert(&mut txn, 1, MapPrelim::default());
            nested.insert(&mut txn, "deeper", MapPrelim::default());
        }
        {
            let mut txn = a.transact_mut();
            inner = inner.insert(&mut txn, "k", MapPrelim::default());
            let _ = inner;
        }
        let from_b = b
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        a.transact_mut()
            .apply_update(decode(&from_b).expect("decodes"))
            .expect("applies");
        let whole = a
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let mut state = DocState::new();
        assert!(state.apply_update(&whole, 1 << 30).is_ok());
        assert_eq!(state.encode_state(), whole);
    }

    #[test]
    fn deep_types_are_checked_when_their_pending_update_integrates() {
        use yrs::{Map, MapPrelim, MapRef, WriteTxn};
        let doc = Doc::new();
        let first = {
            let mut txn = doc.transact_mut();
            let map = txn.get_or_insert_map("m");
            map.insert(&mut txn, "start", 1);
            txn.encode_update_v1()
        };
        let chain = {
            let mut txn = doc.transact_mut();
            let mut map: MapRef = txn.get_or_insert_map("m");
            for _ in 0..MAX_NESTING + 5 {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
            txn.encode_update_v1()
        };
        let mut state = DocState::new();
        // The chain waits for `first` (it came through another node), so
        // nothing of it is integrated yet.
        assert!(state.apply_committed(&chain).is_ok());
        assert!(matches!(
            state.apply_update(&first, 1 << 30),
            Err(ApplyError::Poisoned(_))
        ));
    }

    /// yrs' item for a sub-document held a strong reference back to the
    /// document holding it: a cycle, so a document with a sub-document was
    /// never freed, whole, on every load (found by the fuzzer's memory
    /// limit: a few kilobytes an execution). Patched (vendor/README.md).
    #[test]
    fn a_document_with_a_subdocument_is_freed() {
        use yrs::{Array, WriteTxn};
        let client = Doc::new();
        {
            let mut txn = client.transact_mut();
            let array = txn.get_or_insert_array("a");
            array.push_back(&mut txn, Doc::new());
        }
        let update = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (state, _) = DocState::load(None, [update.as_slice()]).expect("loads");
        let weak = state.doc().downgrade();
        assert!(weak.upgrade().is_some());
        drop(state);
        assert!(weak.upgrade().is_none(), "the document outlived its owner");
    }

    /// A chain of shared types nested past the limit, waiting in yrs for
    /// another client's next block, was found too deep only when that block
    /// arrived: the update bringing it, which did nothing wrong, poisoned
    /// the document, and was refused each time it was sent. The chain is
    /// now refused on arrival, as hanging on an item the document lacks.
    #[test]
    fn the_update_that_releases_a_waiting_too_deep_chain_is_accepted() {
        use yrs::{Map, MapPrelim, MapRef};
        let victim = Doc::with_client_id(1);
        let base = edit(&victim, 0, "ab");
        let next = edit(&victim, 2, "c");
        // The attacker forges the victim's next block and nests maps after it.
        let attacker = Doc::with_client_id(66);
        let forger = Doc::with_client_id(1);
        for doc in [&attacker, &forger] {
            let update = decode(&base).expect("decodes");
            doc.transact_mut().apply_update(update).expect("applies");
        }
        let forged = decode(&edit(&forger, 2, "z")).expect("decodes");
        attacker
            .transact_mut()
            .apply_update(forged)
            .expect("applies");
        let chain = {
            let text = attacker.get_or_insert_text("t");
            let mut txn = attacker.transact_mut();
            let mut map: MapRef = text.insert_embed(&mut txn, 3, MapPrelim::default());
            for _ in 0..MAX_NESTING + 5 {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
            txn.encode_update_v1()
        };
        let mut state = DocState::new();
        state.apply_update(&base, 1 << 30).expect("accepted");
        assert!(matches!(
            state.apply_update(&chain, 1 << 30),
            Err(ApplyError::Nesting(nesting::NestingError::Unanchored(_)))
        ));
        let released = state.apply_update(&next, 1 << 30);
        assert!(released.is_ok(), "{released:?}");
        assert_eq!(text_of(&state), "abc");
        // Even a chain within the limit is refused while what it hangs on
        // is missing: its depth cannot be known.
        let short = {
            let attacker = Doc::with_client_id(67);
            let update = decode(&state.encode_state()).expect("decodes");
            attacker
                .transact_mut()
                .apply_update(update)
                .expect("applies");
            let forged = Doc::with_client_id(1);
            let update = decode(&state.encode_state()).expect("decodes");
            forged.transact_mut().apply_update(update).expect("applies");
            let ahead = decode(&edit(&forged, 3, "w")).expect("decodes");
            attacker
                .transact_mut()
                .apply_update(ahead)
                .expect("applies");
            let text = attacker.get_or_insert_text("t");
            let mut txn = attacker.transact_mut();
            text.insert_embed(&mut txn, 4, MapPrelim::default());
            txn.encode_update_v1()
        };
        assert!(matches!(
            state.apply_update(&short, 1 << 30),
            Err(ApplyError::Nesting(nesting::NestingError::Unanchored(_)))
        ));
    }

    #[test]
    fn an_update_nesting_values_a_million_deep_is_refused_not_a_crash() {
        let mut u = Vec::new();
        {
            use yrs::encoding::write::Write;
            u.write_var(1u32);
            u.write_var(1u32);
            u.write_var(7u64);
            u.write_var(0u32);
            u.write_u8(8 | 0b0010_0000); // Any content, with a map key
            u.write_var(1u32);
            u.write_string("m");
            u.write_string("k");
            u.write_var(1u32);
            for _ in 0..1_000_000 {
                u.write_u8(117); // an array…
                u.write_var(1u32); // …of one value
            }
            u.write_u8(126);
            u.write_var(0u32);
        }
        let mut state = DocState::new();
        assert!(matches!(
            state.apply_update(&u, 1 << 30),
            Err(ApplyError::Malformed(_))
        ));
        assert_eq!(state.version(), 0);
    }

    #[test]
    fn load_skips_corrupt_rows() {
        let client = Doc::new();
        let u1 = edit(&client, 0, "ab");
        let u2 = edit(&client, 2, "cd");
        let rows: Vec<&[u8]> = vec![&u1, &[9, 9, 9], &u2];
        let (state, report) = DocState::load(None, rows).expect("loads");
        assert_eq!(
            report,
            LoadReport {
                applied: 2,
                skipped: 1
            }
        );
        assert_eq!(text_of(&state), "abcd");
    }
}
