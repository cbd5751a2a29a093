//! `DocState`: the one in-memory Yjs document of a room.
//!
//! It validates and applies updates, answers state vectors with diffs, and
//! keeps a cache of the last sync step 2 frame so that a crowd joining at once
//! shares one encoding of the state instead of one copy each.
//!
//! Invariant: an update is either applied whole or rejected with an error and
//! the document unchanged, except for a yrs integration error or panic, after
//! which the caller must discard this `DocState` and reload it from storage.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::protocol;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not a Yjs v1 update. Nothing changed.
    #[error("not a valid Yjs update: {0}")]
    Malformed(String),
    /// Applying would make the encoded document larger than allowed. Nothing changed.
    #[error("the document would grow to about {would_be} bytes, over the limit of {limit}")]
    TooLarge { would_be: usize, limit: usize },
    /// yrs failed or panicked while integrating: the document may be partly
    /// changed and must be reloaded from storage.
    #[error("integrating the update failed: {0}")]
    Poisoned(String),
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The update carried something (it may still wait for missing
    /// dependencies inside yrs); relay and store it.
    Changed,
    /// The update was empty: nothing to relay or store.
    Empty,
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
}

struct Step2Cache {
    version: u64,
    /// Exact size: an idle room keeps its cache, and the encoder's buffer
    /// starts at 1 KiB.
    state_vector: Box<[u8]>,
    frame: Bytes,
}

impl Default for DocState {
    fn default() -> Self {
        Self::new()
    }
}

impl DocState {
    pub fn new() -> Self {
        DocState {
            doc: Doc::new(),
            version: 0,
            size_estimate: 2,
            step2_cache: None,
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

    /// Validates and applies one Yjs v1 update, refusing it when the encoded
    /// document would exceed `max_bytes`.
    pub fn apply_update(&mut self, update: &[u8], max_bytes: usize) -> Result<Applied, ApplyError> {
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
        let applied = self.apply_unchecked(update)?;
        if applied == Applied::Changed {
            self.size_estimate = self.size_estimate.saturating_add(update.len());
        }
        Ok(applied)
    }

    fn apply_unchecked(&mut self, bytes: &[u8]) -> Result<Applied, ApplyError> {
        let decoded = catch_unwind(|| Update::decode_v1(bytes));
        let update = match decoded {
            Ok(Ok(update)) => update,
            Ok(Err(e)) => return Err(ApplyError::Malformed(e.to_string())),
            Err(_) => return Err(ApplyError::Malformed("the decoder panicked".into())),
        };
        if update.is_empty() {
            return Ok(Applied::Empty);
        }
        let doc = &self.doc;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)
        }));
        match result {
            Ok(Ok(())) => {
                self.version += 1;
                self.step2_cache = None;
                Ok(Applied::Changed)
            }
            Ok(Err(e)) => Err(ApplyError::Poisoned(e.to_string())),
            Err(_) => Err(ApplyError::Poisoned("yrs panicked".into())),
        }
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
        if parts.is_empty() {
            return diff;
        }
        parts.insert(0, diff);
        // Every part was produced by yrs itself; merging them cannot meet bad input.
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
        let frame = protocol::encode_sync_step2(&self.diff(sv));
        self.step2_cache = Some(Step2Cache {
            version: self.version,
            state_vector: key.into_boxed_slice(),
            frame: frame.clone(),
        });
        frame
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
    fn updates_waiting_for_dependencies_are_part_of_every_diff() {
        let client = Doc::new();
        let first = edit(&client, 0, "first;");
        let second = edit(&client, 6, "second;");
        let mut state = DocState::new();
        // `second` arrives first: yrs keeps it pending.
        state.apply_update(&second, 1 << 20).expect("accepted");
        let joiner_view = state.diff(&StateVector::default());
        let (compacted, _) = crate::compact(None, [joiner_view.as_slice()]).expect("compacts");
        // The joiner (or the compacted snapshot) then receives `first`.
        let (later, _) = DocState::load(Some(&compacted), [first.as_slice()]).expect("loads");
        assert_eq!(text_of(&later), "first;second;");
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
