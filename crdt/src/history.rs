//! Document history: versions, time travel, retention, diffs, attribution
//! and restore.
//!
//! The server keeps, per document, a "base" holding the whole history (a
//! Yjs v1 update from a document that garbage-collects nothing) and the
//! update log after it. A version is an encoded yrs `Snapshot`: the state
//! vector and the delete set at that moment. Because nothing was collected,
//! the blocks a version names are all still in the base, and yrs can encode
//! the document exactly as it was.
//!
//! Snapshots and attribution rows come back from the database, so they are
//! read as hostile bytes: with `wellformed`'s reader, never with yrs'
//! decoders, and clipped to what this document holds before yrs sees them
//! (yrs unwraps lookups of the clients and clocks a snapshot names).
//!
//! A restore is not the old update replayed: yrs refuses to merge an update
//! built from a past snapshot back into the present (its blocks are already
//! there, its deletions cannot be undone). It is a set of new operations on
//! top of the current state that make the content equal to the version's,
//! touching only what differs, so that clients' cursors in untouched text
//! and their concurrent edits survive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde_json::{json, Value};
use yrs::branch::{Branch, BranchPtr};
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::types::text::{Diff, YChange};
use yrs::types::xml::XmlIn;
use yrs::types::{AsPrelim, Attrs, Delta, ToJson};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{
    Any, Array as _, ArrayRef, Doc, GetString, IdSet, Map as _, MapRef, OffsetKind, Options, Out,
    ReadTxn, Snapshot, StateVector, Text as _, TextRef, Transact, TransactionMut, Update, WriteTxn,
    Xml as _, XmlElementPrelim, XmlFragment, XmlFragmentRef, XmlOut, ID,
};

use crate::doc::{ApplyError, DocState};
use crate::wellformed;

/// The yrs options of a history document: those of `DocState`, except that
/// deleted content is kept.
fn history_options() -> Options {
    Options {
        skip_gc: true,
        ..Options::default()
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Malformed(format!("{what}: {e}"))
}

/// A document's whole history in memory: the base and the log applied in
/// order, with nothing garbage-collected.
pub struct HistoryDoc {
    state: DocState,
}

impl Default for HistoryDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryDoc {
    pub fn new() -> Self {
        HistoryDoc {
            state: DocState::with_options(history_options()),
        }
    }

    /// Applies one stored row (the history base, or a log row, in log
    /// order). A row that is not a valid update is refused with
    /// `ApplyError::Malformed` and the document unchanged; the caller skips
    /// and counts it. `Poisoned` means yrs failed while integrating: the
    /// document must be discarded.
    pub fn apply(&mut self, update: &[u8]) -> Result<(), ApplyError> {
        self.state.apply_unchecked(update).map(|_| ())
    }

    /// The document's current state as an encoded yrs `Snapshot` (v1).
    pub fn snapshot(&self) -> Vec<u8> {
        self.state.doc().transact().snapshot().encode_v1()
    }

    /// The whole history (nothing garbage-collected, except what
    /// `forget_before` let go) as one Yjs v1 update.
    pub fn encode(&self) -> Vec<u8> {
        self.state.encode_state()
    }

    /// The document as it was at `snapshot`: one ordinary Yjs v1 update,
    /// compacted the way a garbage-collecting document holds it (deleted
    /// content left out), which any yrs or Yjs document can load.
    ///
    /// A snapshot taken before the last `forget_before` renders without the
    /// content that was forgotten: the caller drops such versions.
    pub fn encode_at(&self, snapshot: &[u8]) -> Result<Vec<u8>, ApplyError> {
        let snapshot = self.read_snapshot(snapshot)?;
        Ok(self.state_at(&snapshot)?.encode_state())
    }

    /// Retention: garbage-collects every item deleted as of `snapshot`. No
    /// version at or after it can show them (a deletion is never undone), so
    /// those versions still render exactly, while `encode()` shrinks.
    pub fn forget_before(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        let snapshot = self.read_snapshot(snapshot)?;
        if snapshot.delete_set.is_empty() {
            return Ok(());
        }
        let doc = self.state.doc();
        let collected = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            // yrs' collector frees whole blocks: a block deleted only in
            // part at the snapshot, and merged since with its neighbour
            // deleted later, would be freed whole. Split at the delete
            // set's edges first.
            let edges = Snapshot::new(txn.state_vector(), snapshot.delete_set.clone());
            split_blocks(&mut txn, &edges);
            txn.gc(Some(&snapshot.delete_set));
        }));
        collected.map_err(|_| ApplyError::Poisoned("yrs panicked while collecting".into()))
    }

    /// What changed between two versions: `from` is a snapshot, `to` a
    /// snapshot or `None` for the current state. The answer is
    /// `{"roots": {name: {"type": "text"|"map"|"array"|"xml", "before": …,
    /// "after": …, "spans": [{"text", "change", "by"}, …]}}}`: each root
    /// rendered as `DocState::to_json` renders it (null on a side where it
    /// is absent), and for Text roots the text in document order, marked
    /// "inserted", "deleted" or "unchanged", with who inserted it (who
    /// deleted it, for "deleted") when `attribution` knows. Consecutive
    /// characters with the same change and author form one span.
    pub fn diff(
        &mut self,
        from: &[u8],
        to: Option<&[u8]>,
        attribution: &Attribution,
    ) -> Result<Value, ApplyError> {
        let from = self.read_snapshot(from)?;
        let to = match to {
            Some(bytes) => self.read_snapshot(bytes)?,
            None => self.state.doc().transact().snapshot(),
        };
        let before = self.state_at(&from)?;
        let after = self.state_at(&to)?;
        let before_json = before.to_json();
        let after_json = after.to_json();
        let kinds_before = root_kinds(before.doc());
        let kinds_after = root_kinds(after.doc());
        let names: BTreeSet<&String> = kinds_before.keys().chain(kinds_after.keys()).collect();
        let mut roots = serde_json::Map::new();
        for name in names {
            let kind = kinds_after
                .get(name)
                .copied()
                .flatten()
                .or_else(|| kinds_before.get(name).copied().flatten())
                // An empty root renders as "" (see json.rs): most are texts.
                .unwrap_or(Kind::Text);
            let mut root = serde_json::Map::new();
            root.insert("type".into(), Value::from(kind.name()));
            root.insert(
                "before".into(),
                before_json.get(name).cloned().unwrap_or(Value::Null),
            );
            root.insert(
                "after".into(),
                after_json.get(name).cloned().unwrap_or(Value::Null),
            );
            if kind == Kind::Text {
                let spans = self.text_spans(name, &from, &to, attribution)?;
                root.insert("spans".into(), spans);
            }
            roots.insert(name.clone(), Value::Object(root));
        }
        Ok(json!({ "roots": roots }))
    }

    /// Decodes hostile snapshot bytes and clips them to this document.
    fn read_snapshot(&self, bytes: &[u8]) -> Result<Snapshot, ApplyError> {
        let snapshot =
            wellformed::decode_snapshot(bytes).map_err(|e| malformed("not a snapshot", e))?;
        let local = self.state.doc().transact().state_vector();
        Ok(clip(&snapshot, &local))
    }

    /// The document at `snapshot` (already clipped), loaded into an
    /// ordinary, garbage-collecting `DocState`.
    fn state_at(&self, snapshot: &Snapshot) -> Result<DocState, ApplyError> {
        let doc = self.state.doc();
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            // yrs 0.28 encodes the last block of a client cut at the
            // snapshot's clock wrongly when the cut keeps one character of
            // a string (`ItemContent::encode_slice` takes an end offset of
            // 0 for "to the end"): the whole string is written and the
            // update does not decode. With the blocks split at the
            // snapshot first, no block is cut while encoding.
            split_blocks(&mut txn, snapshot);
            let mut encoder = EncoderV1::new();
            txn.encode_state_from_snapshot(snapshot, &mut encoder)
                .map(|()| encoder.to_vec())
        }));
        let raw = match encoded {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => return Err(malformed("the snapshot does not fit this document", e)),
            Err(_) => {
                return Err(ApplyError::Malformed(
                    "the snapshot does not fit this document (yrs panicked)".into(),
                ))
            }
        };
        let mut state = DocState::new();
        match state.apply_unchecked(&raw) {
            Ok(_) => Ok(state),
            Err(ApplyError::Malformed(e)) => Err(ApplyError::Malformed(format!(
                "the version did not encode as a valid update: {e}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// The spans of Text root `name` between two versions.
    fn text_spans(
        &self,
        name: &str,
        from: &Snapshot,
        to: &Snapshot,
        attribution: &Attribution,
    ) -> Result<Value, ApplyError> {
        let doc = self.state.doc();
        let spans = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            let root = txn
                .root_refs()
                .find(|(n, _)| *n == name)
                .and_then(|(_, out)| branch_of(&out));
            let Some(root) = root else {
                return Vec::new();
            };
            let text = TextRef::from(root);
            // This first pass only splits the blocks where either version
            // begins or ends seeing them, so that each block below is seen
            // whole or not at all by each version.
            text.diff_range(&mut txn, Some(to), Some(from), YChange::identity);
            // Then every block, as an insertion against an empty version:
            // one chunk per block, each with its ID. `diff_range` merges
            // unchanged text across blocks and authors, so its own answer
            // for (to, from) cannot say who wrote the unchanged text.
            let everything = Snapshot::new(txn.state_vector(), IdSet::new());
            let empty = Snapshot::default();
            let chunks =
                text.diff_range(&mut txn, Some(&everything), Some(&empty), YChange::identity);
            let mut spans = Spans::default();
            for chunk in chunks {
                let (Out::Any(Any::String(s)), Some(change)) = (&chunk.insert, &chunk.ychange)
                else {
                    continue;
                };
                let id = change.id;
                let change = match (visible(from, &id), visible(to, &id)) {
                    (false, true) => "inserted",
                    (true, false) => "deleted",
                    (true, true) => "unchanged",
                    (false, false) => continue,
                };
                let mut clock = id.clock;
                for c in s.chars() {
                    let at = ID::new(id.client, clock);
                    let by = if change == "deleted" {
                        attribution.deleted_by(&at)
                    } else {
                        attribution.inserted_by(&at)
                    };
                    spans.push(c, change, by);
                    clock = clock.saturating_add(c.len_utf16() as u32);
                }
            }
            spans.0
        }));
        let spans = spans
            .map_err(|_| ApplyError::Poisoned("yrs panicked while comparing versions".into()))?;
        Ok(Value::Array(
            spans
                .into_iter()
                .map(|(text, change, by)| json!({"text": text, "change": change, "by": by}))
                .collect(),
        ))
    }
}

/// Splits the blocks of the store where `snapshot` begins or stops seeing
/// them (its clocks and the edges of its delete set). yrs does that only
/// inside `Text::diff_range`, for the whole store whatever the text it then
/// reads, so it is called on the root that costs least to read. The splits
/// last until the transaction commits, when yrs merges the blocks again.
fn split_blocks(txn: &mut TransactionMut, snapshot: &Snapshot) {
    let root = txn
        .root_refs()
        .filter_map(|(_, out)| branch_of(&out))
        .min_by_key(|branch| branch.content_len());
    if let Some(root) = root {
        TextRef::from(root).diff_range(txn, Some(snapshot), None, YChange::identity);
    }
}

/// Text spans, consecutive characters with the same change and author merged.
#[derive(Default)]
struct Spans(Vec<(String, &'static str, Option<String>)>);

impl Spans {
    fn push(&mut self, c: char, change: &'static str, by: Option<&str>) {
        if let Some((text, last_change, last_by)) = self.0.last_mut() {
            if *last_change == change && last_by.as_deref() == by {
                text.push(c);
                return;
            }
        }
        self.0.push((c.to_string(), change, by.map(str::to_owned)));
    }
}

/// Whether the version `snapshot` shows the item `id`.
fn visible(snapshot: &Snapshot, id: &ID) -> bool {
    snapshot.state_map.get(&id.client) > id.clock && !snapshot.delete_set.contains(id)
}

/// `snapshot` limited to what `local` holds: yrs looks the clients and
/// clocks of a snapshot up in its store and unwraps what it finds.
fn clip(snapshot: &Snapshot, local: &StateVector) -> Snapshot {
    let state_map: StateVector = snapshot
        .state_map
        .iter()
        .filter_map(|(client, &clock)| {
            let clock = clock.min(local.get(client));
            (clock > 0).then_some((*client, clock))
        })
        .collect();
    let mut delete_set = IdSet::new();
    for (client, ranges) in snapshot.delete_set.iter() {
        let limit = state_map.get(client);
        for range in ranges.iter() {
            let end = range.end.min(limit);
            if range.start < end {
                delete_set.insert(ID::new(*client, range.start), end - range.start);
            }
        }
    }
    Snapshot::new(state_map, delete_set)
}

/// The branch behind a root (or nested) shared type.
fn branch_of(out: &Out) -> Option<BranchPtr> {
    Some(match out {
        Out::UndefinedRef(branch) => *branch,
        Out::YText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YArray(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YMap(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlElement(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlFragment(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        _ => return None,
    })
}

/// What a root holds, inferred from its content as `json.rs` renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Map,
    Array,
    Xml,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Map => "map",
            Kind::Array => "array",
            Kind::Xml => "xml",
        }
    }
}

/// Every root of `doc` with its kind (`None` when it holds nothing).
fn root_kinds(doc: &Doc) -> BTreeMap<String, Option<Kind>> {
    let txn = doc.transact();
    txn.root_refs()
        .map(|(name, out)| (name.to_owned(), kind_of(&txn, &out)))
        .collect()
}

/// The kind of a root, the way `json.rs` decides how to render one that
/// yrs has not been told the type of: map entries and no list items ->
/// Map; characters -> Text; XML children -> XML; other list items -> Array.
fn kind_of<T: ReadTxn>(txn: &T, out: &Out) -> Option<Kind> {
    let branch = match out {
        Out::UndefinedRef(branch) => *branch,
        Out::YText(_) => return Some(Kind::Text),
        Out::YMap(_) => return Some(Kind::Map),
        Out::YArray(_) => return Some(Kind::Array),
        Out::YXmlFragment(_) | Out::YXmlElement(_) | Out::YXmlText(_) => return Some(Kind::Xml),
        _ => return None,
    };
    if branch.content_len() == 0 {
        return (MapRef::from(branch).len(txn) > 0).then_some(Kind::Map);
    }
    if !TextRef::from(branch).get_string(txn).is_empty() {
        return Some(Kind::Text);
    }
    let is_xml = ArrayRef::from(branch)
        .iter(txn)
        .all(|v| matches!(v, Out::YXmlElement(_) | Out::YXmlText(_)));
    Some(if is_xml { Kind::Xml } else { Kind::Array })
}

/// A value rendered as JSON, for comparing contents.
fn render<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    serde_json::to_value(out.to_json(txn)).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Attribution

/// Who wrote what: for each user (a token `sub`), the IDs their updates
/// inserted and the IDs they deleted, as run-length encoded yrs `IdSet`s.
/// The first user recorded for an ID keeps it: a client relaying blocks it
/// got from others (a reconnect's sync step 2) is not credited with them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attribution {
    users: BTreeMap<String, Written>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Written {
    inserted: IdSet,
    deleted: IdSet,
}

/// The first byte of an encoded `Attribution`, so that the format can change.
const ATTRIBUTION_FORMAT: u8 = 1;

impl Attribution {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `user` wrote the Yjs v1 `update`. Hostile bytes are
    /// refused with an error and nothing recorded.
    pub fn record(&mut self, user: &str, update: &[u8]) -> Result<(), ApplyError> {
        wellformed::check_update(update).map_err(|e| malformed("not a valid Yjs update", e))?;
        let update = match catch_unwind(|| Update::decode_v1(update)) {
            Ok(Ok(update)) => update,
            Ok(Err(e)) => return Err(malformed("not a valid Yjs update", e)),
            Err(_) => return Err(ApplyError::Malformed("the decoder panicked".into())),
        };
        let mut inserted = update.insertions(true);
        let mut deleted = update.delete_set().clone();
        for written in self.users.values() {
            inserted.diff_with(&written.inserted);
            deleted.diff_with(&written.deleted);
        }
        if inserted.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        let written = self.users.entry(user.to_owned()).or_default();
        written.inserted.merge_with(inserted);
        written.deleted.merge_with(deleted);
        Ok(())
    }

    pub fn merge(&mut self, other: Attribution) {
        for (user, theirs) in other.users {
            let written = self.users.entry(user).or_default();
            written.inserted.merge_with(theirs.inserted);
            written.deleted.merge_with(theirs.deleted);
        }
    }

    /// `format byte • varUint(users) • users × [string(user) • IdSet(inserted) • IdSet(deleted)]`,
    /// users in ascending order, each `IdSet` in yrs' v1 delete set encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut encoder = EncoderV1::new();
        encoder.write_u8(ATTRIBUTION_FORMAT);
        encoder.write_var(self.users.len() as u64);
        for (user, written) in &self.users {
            encoder.write_string(user);
            written.inserted.encode(&mut encoder);
            written.deleted.encode(&mut encoder);
        }
        encoder.to_vec()
    }

    /// Decodes a stored row. Hostile bytes are an error, never a panic or an
    /// allocation larger than the bytes could fill.
    pub fn decode(bytes: &[u8]) -> Result<Self, ApplyError> {
        let bad = |e: wellformed::ShapeError| malformed("not an attribution row", e);
        let mut r = Cursor::new(bytes);
        let format = r
            .read_u8()
            .map_err(|_| ApplyError::Malformed("an empty attribution row".into()))?;
        if format != ATTRIBUTION_FORMAT {
            return Err(ApplyError::Malformed(format!(
                "unknown attribution format {format}"
            )));
        }
        let count: u64 = r.read_var().map_err(|e| bad(e.into()))?;
        // Each user takes at least three bytes: a name length and two empty sets.
        let left = bytes.len().saturating_sub(r.next) as u64;
        if count.saturating_mul(3) > left {
            return Err(ApplyError::Malformed(format!(
                "an attribution row declares {count} users in {left} bytes"
            )));
        }
        let mut users = BTreeMap::new();
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let user = r.read_string().map_err(|e| bad(e.into()))?.to_owned();
            if previous.as_ref().is_some_and(|p| *p >= user) {
                return Err(bad(wellformed::ShapeError::Unordered));
            }
            let inserted = wellformed::read_id_set(&mut r).map_err(bad)?;
            let deleted = wellformed::read_id_set(&mut r).map_err(bad)?;
            previous = Some(user.clone());
            users.insert(user, Written { inserted, deleted });
        }
        if r.next != bytes.len() {
            return Err(ApplyError::Malformed(
                "bytes left over after an attribution row".into(),
            ));
        }
        Ok(Attribution { users })
    }

    /// Who inserted the item `id`, if anyone recorded did.
    pub fn inserted_by(&self, id: &ID) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, w)| w.inserted.contains(id))
            .map(|(user, _)| user.as_str())
    }

    /// Who deleted the item `id`, if anyone recorded did.
    pub fn deleted_by(&self, id: &ID) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, w)| w.deleted.contains(id))
            .map(|(user, _)| user.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.users
            .values()
            .all(|w| w.inserted.is_empty() && w.deleted.is_empty())
    }
}

// ---------------------------------------------------------------------------
// Restore

/// Snapshots are stored as a chain, oldest first: each holds its state
/// vector but only the deletions the ones before it lack. A document's
/// delete set only grows, so a full snapshot repeats every deletion of the
/// one before; stored whole, a version every thousand edits would cost
/// many times the history itself.
///
/// The link of `snapshot` after the chain whose union is `previous` (both
/// encoded snapshots; `None` for the first link).
pub fn snapshot_link(previous: Option<&[u8]>, snapshot: &[u8]) -> Result<Vec<u8>, ApplyError> {
    let read =
        |b: &[u8]| wellformed::decode_snapshot(b).map_err(|e| malformed("not a snapshot", e));
    let mut link = read(snapshot)?;
    if let Some(previous) = previous {
        link.delete_set.diff_with(&read(previous)?.delete_set);
    }
    Ok(link.encode_v1())
}

/// The full snapshot a chain of links stands for (oldest first): every
/// link's deletions and the newest state vector. Also how a link merges
/// into the next when its version is deleted.
pub fn snapshot_from_links<'a>(
    links: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, ApplyError> {
    let mut full = yrs::Snapshot::default();
    for link in links {
        let link = wellformed::decode_snapshot(link).map_err(|e| malformed("not a snapshot", e))?;
        full.delete_set.merge_with(link.delete_set);
        full.state_map.merge(link.state_map);
    }
    Ok(full.encode_v1())
}

/// Restore as forward operations: an update which, applied to the document
/// whose full state is `current` (a v1 update), makes its content equal to
/// `target`'s (a v1 update of the version's state): the same JSON rendering
/// for every root. It is made of new operations by a client ID neither state
/// has used, and leaves content that did not change untouched. `Ok(None)`
/// when nothing differs.
pub fn restore_update(current: &[u8], target: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
    let (goal, report) = DocState::load(Some(target), [])?;
    if report.skipped > 0 {
        return Err(ApplyError::Malformed(
            "the target is not a valid Yjs update".into(),
        ));
    }
    let goal_clients = goal.doc().transact().state_vector();
    let mut work = None;
    // A random 53-bit ID is all but never taken; a few tries make sure.
    for _ in 0..8 {
        let mut state = DocState::with_options(Options::default());
        state.apply_unchecked(current)?;
        let me = state.doc().client_id();
        let taken = state.doc().transact().state_vector().contains_client(&me)
            || goal_clients.contains_client(&me);
        if !taken {
            work = Some(state);
            break;
        }
    }
    let Some(work) = work else {
        return Err(ApplyError::Poisoned("no unused client ID was found".into()));
    };
    let restored = catch_unwind(AssertUnwindSafe(|| restore_into(work.doc(), goal.doc())));
    restored.map_err(|_| ApplyError::Poisoned("yrs panicked while restoring".into()))
}

/// A root's kind now, its kind in the target, and the target's branch.
type RootPair = (Option<Kind>, Option<Kind>, Option<BranchPtr>);

fn restore_into(doc: &Doc, goal: &Doc) -> Option<Vec<u8>> {
    let src = goal.transact();
    let mut txn = doc.transact_mut();
    let offsets = doc.offset_kind();
    let mut roots: BTreeMap<String, RootPair> = BTreeMap::new();
    for (name, out) in txn.root_refs() {
        roots.entry(name.to_owned()).or_default().0 = kind_of(&txn, &out);
    }
    for (name, out) in src.root_refs() {
        let entry = roots.entry(name.to_owned()).or_default();
        entry.1 = kind_of(&src, &out);
        entry.2 = branch_of(&out);
    }
    let mut changed = false;
    for (name, (now, want, goal_branch)) in roots {
        let (Some(want), Some(goal_branch)) = (want, goal_branch) else {
            if let Some(now) = now {
                changed |= clear(&mut txn, &name, now);
            }
            continue;
        };
        if let Some(now) = now.filter(|&now| now != want) {
            changed |= clear(&mut txn, &name, now);
        }
        changed |= match want {
            Kind::Text => restore_text(&mut txn, &name, &src, goal_branch, offsets),
            Kind::Map => restore_map(&mut txn, &name, &src, goal_branch),
            Kind::Array => restore_array(&mut txn, &name, &src, goal_branch),
            Kind::Xml => restore_xml(&mut txn, &name, &src, goal_branch),
        };
    }
    changed.then(|| txn.encode_update_v1())
}

/// Deletes everything a root holds. Whether anything was deleted.
fn clear(txn: &mut TransactionMut, name: &str, kind: Kind) -> bool {
    match kind {
        Kind::Text => {
            let text = txn.get_or_insert_text(name);
            let len = text.len(txn);
            text.remove_range(txn, 0, len);
            len > 0
        }
        Kind::Array => {
            let array = txn.get_or_insert_array(name);
            let len = array.len(txn);
            array.remove_range(txn, 0, len);
            len > 0
        }
        Kind::Xml => {
            let xml = txn.get_or_insert_xml_fragment(name);
            let len = xml.len(txn);
            xml.remove_range(txn, 0, len);
            len > 0
        }
        Kind::Map => {
            let map = txn.get_or_insert_map(name);
            let keys: Vec<String> = map.keys(txn).map(str::to_owned).collect();
            for key in &keys {
                map.remove(txn, key);
            }
            !keys.is_empty()
        }
    }
}

fn restore_map<T: ReadTxn>(txn: &mut TransactionMut, name: &str, src: &T, goal: BranchPtr) -> bool {
    let map = txn.get_or_insert_map(name);
    let goal = MapRef::from(goal);
    let want: BTreeMap<String, Out> = goal
        .iter(src)
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let mut changed = false;
    let have: Vec<String> = map.keys(txn).map(str::to_owned).collect();
    for key in have.iter().filter(|key| !want.contains_key(*key)) {
        map.remove(txn, key);
        changed = true;
    }
    for (key, value) in want {
        let same = map
            .get(txn, &key)
            .is_some_and(|now| render(txn, &now) == render(src, &value));
        if !same {
            map.insert(txn, key, value.as_prelim(src));
            changed = true;
        }
    }
    changed
}

fn restore_array<T: ReadTxn>(
    txn: &mut TransactionMut,
    name: &str,
    src: &T,
    goal: BranchPtr,
) -> bool {
    let array = txn.get_or_insert_array(name);
    let have: Vec<Value> = array.iter(txn).map(|v| render(txn, &v)).collect();
    let want_values: Vec<Out> = ArrayRef::from(goal).iter(src).collect();
    let want: Vec<Value> = want_values.iter().map(|v| render(src, v)).collect();
    let mut changed = false;
    let (mut at, mut j) = (0u32, 0usize);
    for edit in diff_slices(&have, &want) {
        match edit {
            Edit::Equal(n) => {
                at += n as u32;
                j += n;
            }
            Edit::Delete(n) => {
                array.remove_range(txn, at, n as u32);
                changed = true;
            }
            Edit::Insert(n) => {
                for value in &want_values[j..j + n] {
                    array.insert(txn, at, value.as_prelim(src));
                    at += 1;
                }
                j += n;
                changed = true;
            }
        }
    }
    changed
}

fn restore_xml<T: ReadTxn>(txn: &mut TransactionMut, name: &str, src: &T, goal: BranchPtr) -> bool {
    let xml = txn.get_or_insert_xml_fragment(name);
    let have: Vec<Value> = xml.children(txn).map(|c| xml_key(txn, &c)).collect();
    let want_nodes: Vec<XmlOut> = XmlFragmentRef::from(goal).children(src).collect();
    let want: Vec<Value> = want_nodes.iter().map(|c| xml_key(src, c)).collect();
    let mut changed = false;
    let (mut at, mut j) = (0u32, 0usize);
    for edit in diff_slices(&have, &want) {
        match edit {
            Edit::Equal(n) => {
                at += n as u32;
                j += n;
            }
            Edit::Delete(n) => {
                xml.remove_range(txn, at, n as u32);
                changed = true;
            }
            Edit::Insert(n) => {
                for node in &want_nodes[j..j + n] {
                    copy_xml(txn, &xml, at, node, src);
                    at += 1;
                }
                j += n;
                changed = true;
            }
        }
    }
    changed
}

/// An XML node's content as a comparable value: tag, attributes (sorted:
/// yrs keeps them in a hash map, so its own `get_string` orders them
/// differently from one document to the next), children, and for text its
/// formatted chunks.
fn xml_key<T: ReadTxn>(txn: &T, node: &XmlOut) -> Value {
    let sorted = |pairs: Vec<(String, Value)>| {
        let mut pairs = pairs;
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(pairs.into_iter().map(|(k, v)| json!([k, v])).collect())
    };
    match node {
        XmlOut::Element(e) => {
            let attrs = e
                .attributes(txn)
                .map(|(k, v)| (k.to_owned(), render(txn, &v)))
                .collect();
            let children: Vec<Value> = e.children(txn).map(|c| xml_key(txn, &c)).collect();
            json!({"element": e.tag().as_ref(), "attrs": sorted(attrs), "children": children})
        }
        XmlOut::Text(t) => {
            let attrs = t
                .attributes(txn)
                .map(|(k, v)| (k.to_owned(), render(txn, &v)))
                .collect();
            let chunks: Vec<Value> = t
                .diff(txn, YChange::identity)
                .iter()
                .map(|d| json!([render(txn, &d.insert), sorted(attr_pairs(&d.attributes))]))
                .collect();
            json!({"text": chunks, "attrs": sorted(attrs)})
        }
        XmlOut::Fragment(f) => {
            let children: Vec<Value> = f.children(txn).map(|c| xml_key(txn, &c)).collect();
            json!({ "fragment": children })
        }
    }
}

fn attr_pairs(attrs: &Option<Box<Attrs>>) -> Vec<(String, Value)> {
    attrs
        .iter()
        .flat_map(|a| a.iter())
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::to_value(v).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Inserts a deep copy of `node` (from another document) at `index` of
/// `parent`. Elements are copied by hand so that attribute values keep
/// their types (yrs' `as_prelim` turns them into strings: Tiptap's
/// heading level 1 would come back as "1").
fn copy_xml<T: ReadTxn, P: XmlFragment>(
    txn: &mut TransactionMut,
    parent: &P,
    index: u32,
    node: &XmlOut,
    src: &T,
) {
    match node {
        XmlOut::Element(e) => {
            let copy = parent.insert(txn, index, XmlElementPrelim::empty(e.tag().clone()));
            let attrs: Vec<(String, Out)> =
                e.attributes(src).map(|(k, v)| (k.to_owned(), v)).collect();
            for (key, value) in attrs {
                copy.insert_attribute(txn, key, value.as_prelim(src));
            }
            for (i, child) in e.children(src).enumerate() {
                copy_xml(txn, &copy, i as u32, &child, src);
            }
        }
        XmlOut::Text(t) => {
            parent.insert(txn, index, XmlIn::Text(t.as_prelim(src)));
        }
        XmlOut::Fragment(f) => {
            parent.insert(txn, index, XmlIn::Fragment(f.as_prelim(src)));
        }
    }
}

/// One unit of a rich text: a character or an embedded value (its JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tok {
    Char(char),
    Embed(String),
}

/// A rich text as tokens, each with the delta chunk it came from (for its
/// formatting and, for an embed, its value).
struct RichText {
    toks: Vec<Tok>,
    chunk_of: Vec<usize>,
    chunks: Vec<Diff<YChange>>,
}

impl RichText {
    fn read<T: ReadTxn>(txn: &T, text: &TextRef) -> Self {
        let chunks = text.diff(txn, YChange::identity);
        let mut toks = Vec::new();
        let mut chunk_of = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            match &chunk.insert {
                Out::Any(Any::String(s)) => {
                    for c in s.chars() {
                        toks.push(Tok::Char(c));
                        chunk_of.push(i);
                    }
                }
                other => {
                    toks.push(Tok::Embed(render(txn, other).to_string()));
                    chunk_of.push(i);
                }
            }
        }
        RichText {
            toks,
            chunk_of,
            chunks,
        }
    }

    fn attrs(&self, tok: usize) -> Option<&Attrs> {
        let chunk = self.chunk_of.get(tok)?;
        self.chunks.get(*chunk)?.attributes.as_deref()
    }

    fn keys(&self) -> BTreeSet<Arc<str>> {
        self.chunks
            .iter()
            .flat_map(|c| c.attributes.iter().flat_map(|a| a.keys().cloned()))
            .collect()
    }
}

/// The length of a token in the document's index units.
fn units(tok: &Tok, offsets: OffsetKind) -> u32 {
    match (tok, offsets) {
        (Tok::Char(c), OffsetKind::Bytes) => c.len_utf8() as u32,
        (Tok::Char(c), OffsetKind::Utf16) => c.len_utf16() as u32,
        (Tok::Embed(_), _) => 1,
    }
}

fn restore_text<T: ReadTxn>(
    txn: &mut TransactionMut,
    name: &str,
    src: &T,
    goal: BranchPtr,
    offsets: OffsetKind,
) -> bool {
    let text = txn.get_or_insert_text(name);
    let have = RichText::read(txn, &text);
    let want = RichText::read(src, &TextRef::from(goal));
    // Formatting keys either side uses. Text inserted with the target's
    // attributes only would inherit others from its left neighbour (as in
    // Yjs), so every other known key is set to null explicitly.
    let keys: BTreeSet<Arc<str>> = have.keys().union(&want.keys()).cloned().collect();
    let full_attrs = |attrs: Option<&Attrs>| -> Attrs {
        let mut full: Attrs = keys.iter().map(|k| (k.clone(), Any::Null)).collect();
        if let Some(attrs) = attrs {
            full.extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        full
    };
    let mut changed = false;
    let (mut at, mut i, mut j) = (0u32, 0usize, 0usize);
    for edit in diff_text(&have.toks, &want.toks) {
        match edit {
            Edit::Equal(n) => {
                // Same characters; restore their formatting where it
                // differs, one call per run with the same target formatting.
                let mut k = 0;
                while k < n {
                    let wanted = want.attrs(j + k);
                    let differs =
                        |k: usize| !keys.is_empty() && have.attrs(i + k) != want.attrs(j + k);
                    let mut len = 0;
                    let start = k;
                    while k < n && differs(k) == differs(start) && want.attrs(j + k) == wanted {
                        len += units(&have.toks[i + k], offsets);
                        k += 1;
                    }
                    if differs(start) {
                        text.format(txn, at, len, full_attrs(wanted));
                        changed = true;
                    }
                    at += len;
                }
                i += n;
                j += n;
            }
            Edit::Delete(n) => {
                let len: u32 = have.toks[i..i + n].iter().map(|t| units(t, offsets)).sum();
                text.remove_range(txn, at, len);
                i += n;
                changed = true;
            }
            Edit::Insert(n) => {
                let mut k = j;
                while k < j + n {
                    let chunk = want.chunk_of[k];
                    if let Tok::Embed(_) = want.toks[k] {
                        // Through a delta: it also takes embedded shared types.
                        let value = want.chunks[chunk].insert.as_prelim(src);
                        let attrs = full_attrs(want.attrs(k));
                        let attrs = (!attrs.is_empty()).then(|| Box::new(attrs));
                        text.apply_delta(
                            txn,
                            [Delta::Retain(at, None), Delta::Inserted(value, attrs)],
                        );
                        at += 1;
                        k += 1;
                        continue;
                    }
                    // A run of characters from one chunk: one insertion.
                    let mut run = String::new();
                    while k < j + n && want.chunk_of[k] == chunk {
                        match want.toks[k] {
                            Tok::Char(c) => run.push(c),
                            Tok::Embed(_) => break,
                        }
                        k += 1;
                    }
                    if keys.is_empty() {
                        text.insert(txn, at, &run);
                    } else {
                        text.insert_with_attributes(txn, at, &run, full_attrs(want.attrs(k - 1)));
                    }
                    at += run
                        .chars()
                        .map(|c| units(&Tok::Char(c), offsets))
                        .sum::<u32>();
                }
                j += n;
                changed = true;
            }
        }
    }
    changed
}

// ---------------------------------------------------------------------------
// Sequence diff

/// One step of an edit script turning `a` into `b`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// The next `n` elements of both are equal.
    Equal(usize),
    /// The next `n` elements of `a` are removed.
    Delete(usize),
    /// The next `n` elements of `b` are inserted.
    Insert(usize),
}

fn push_edit(edits: &mut Vec<Edit>, edit: Edit) {
    use Edit::*;
    match (edits.last_mut(), edit) {
        (_, Equal(0) | Delete(0) | Insert(0)) => {}
        (Some(Equal(m)), Equal(n))
        | (Some(Delete(m)), Delete(n))
        | (Some(Insert(m)), Insert(n)) => *m += n,
        _ => edits.push(edit),
    }
}

/// Work (comparisons) one Myers diff may spend before it settles for
/// replacing the whole differing middle: a restore must not take minutes.
const DIFF_BUDGET: usize = 50_000_000;
/// The most edits one Myers diff looks for; its memory grows with the square.
const MAX_EDIT_DISTANCE: usize = 2_000;

/// A shortest edit script from `a` to `b` (Myers' algorithm after trimming
/// the common ends), or, past the budget, the middle replaced whole.
fn diff_slices<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Edit> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let a_mid = &a_rest[..a_rest.len() - suffix];
    let b_mid = &b_rest[..b_rest.len() - suffix];
    let mut edits = Vec::new();
    push_edit(&mut edits, Edit::Equal(prefix));
    match myers(a_mid, b_mid) {
        Some(middle) => {
            for edit in middle {
                push_edit(&mut edits, edit);
            }
        }
        None => {
            push_edit(&mut edits, Edit::Delete(a_mid.len()));
            push_edit(&mut edits, Edit::Insert(b_mid.len()));
        }
    }
    push_edit(&mut edits, Edit::Equal(suffix));
    edits
}

fn myers<T: PartialEq>(a: &[T], b: &[T]) -> Option<Vec<Edit>> {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return Some(vec![Edit::Delete(n), Edit::Insert(m)]);
    }
    let max_d = (n + m)
        .min(MAX_EDIT_DISTANCE)
        .min(DIFF_BUDGET / (n + m).max(1));
    let offset = max_d as isize + 1;
    let mut v = vec![0isize; 2 * max_d + 3];
    // trace[d]: the furthest x on each diagonal -d-1..=d+1 before round d.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let (ni, mi) = (n as isize, m as isize);
    for d in 0..=max_d as isize {
        trace.push(v[(offset - d - 1) as usize..=(offset + d + 1) as usize].to_vec());
        let mut k = -d;
        while k <= d {
            let at = (offset + k) as usize;
            let mut x = if k == -d || (k != d && v[at - 1] < v[at + 1]) {
                v[at + 1]
            } else {
                v[at - 1] + 1
            };
            let mut y = x - k;
            while x < ni && y < mi && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at] = x;
            if x >= ni && y >= mi {
                return Some(backtrack(&trace, ni, mi));
            }
            k += 2;
        }
    }
    None
}

/// Walks the Myers trace back from the end, emitting the script in order.
fn backtrack(trace: &[Vec<isize>], n: isize, m: isize) -> Vec<Edit> {
    let mut steps = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, v) in trace.iter().enumerate().rev() {
        let d = d as isize;
        // v holds diagonals -d-1..=d+1 at indexes 0..
        let get = |k: isize| v[(k + d + 1) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = if d == 0 { 0 } else { get(prev_k) };
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            steps.push(Edit::Equal(1));
            x -= 1;
            y -= 1;
        }
        if d > 0 {
            steps.push(if x == prev_x {
                Edit::Insert(1)
            } else {
                Edit::Delete(1)
            });
        }
        x = prev_x;
        y = prev_y;
    }
    let mut edits = Vec::new();
    for step in steps.into_iter().rev() {
        push_edit(&mut edits, step);
    }
    edits
}

/// A text diff in two steps: lines first (fast on long texts with edits
/// spread out), then characters within each changed run of lines.
fn diff_text(a: &[Tok], b: &[Tok]) -> Vec<Edit> {
    let a_lines = lines(a);
    let b_lines = lines(b);
    // Lines compared as numbers: Myers compares the same pairs many times.
    let mut ids: HashMap<&[Tok], u32> = HashMap::new();
    let a_ids = line_ids(&a_lines, &mut ids);
    let b_ids = line_ids(&b_lines, &mut ids);
    let mut edits = Vec::new();
    let (mut ia, mut ib) = (0usize, 0usize); // token positions
    let (mut la, mut lb) = (0usize, 0usize); // line positions
    let line_edits = diff_slices(&a_ids, &b_ids);
    let mut k = 0;
    while k < line_edits.len() {
        match line_edits[k] {
            Edit::Equal(n) => {
                let len: usize = a_lines[la..la + n].iter().map(|l| l.len()).sum();
                push_edit(&mut edits, Edit::Equal(len));
                ia += len;
                ib += len;
                la += n;
                lb += n;
                k += 1;
            }
            _ => {
                // A changed run: every delete and insert up to the next equal.
                let (mut da, mut db) = (0usize, 0usize);
                while let Some(edit) = line_edits.get(k) {
                    match *edit {
                        Edit::Delete(n) => da += n,
                        Edit::Insert(n) => db += n,
                        Edit::Equal(_) => break,
                    }
                    k += 1;
                }
                let len_a: usize = a_lines[la..la + da].iter().map(|l| l.len()).sum();
                let len_b: usize = b_lines[lb..lb + db].iter().map(|l| l.len()).sum();
                for edit in diff_slices(&a[ia..ia + len_a], &b[ib..ib + len_b]) {
                    push_edit(&mut edits, edit);
                }
                ia += len_a;
                ib += len_b;
                la += da;
                lb += db;
            }
        }
    }
    absorb_small_equalities(&edits)
}

/// Equal runs shorter than this, between two changes, are replaced too.
const SMALL_EQUALITY: usize = 4;

/// Folds short equal runs between changes into the changes around them.
/// A character diff of rewritten prose matches stray letters and spaces
/// all over ("the" and "then" share three); keeping each costs yrs an
/// operation, and a reader sees a word replaced rather than shredded.
/// Each run of changes becomes one deletion followed by one insertion,
/// which consume the same elements in the same order as before.
fn absorb_small_equalities(edits: &[Edit]) -> Vec<Edit> {
    let mut out = Vec::new();
    let (mut deleted, mut inserted) = (0, 0);
    for (k, edit) in edits.iter().enumerate() {
        match *edit {
            Edit::Delete(n) => deleted += n,
            Edit::Insert(n) => inserted += n,
            Edit::Equal(n) => {
                let between = k > 0 && k + 1 < edits.len();
                if between && n < SMALL_EQUALITY {
                    deleted += n;
                    inserted += n;
                } else {
                    push_edit(&mut out, Edit::Delete(deleted));
                    push_edit(&mut out, Edit::Insert(inserted));
                    push_edit(&mut out, Edit::Equal(n));
                    (deleted, inserted) = (0, 0);
                }
            }
        }
    }
    push_edit(&mut out, Edit::Delete(deleted));
    push_edit(&mut out, Edit::Insert(inserted));
    out
}

/// A number for each line, the same for equal lines.
fn line_ids<'a>(lines: &[&'a [Tok]], ids: &mut HashMap<&'a [Tok], u32>) -> Vec<u32> {
    lines
        .iter()
        .map(|line| {
            let next = ids.len() as u32;
            *ids.entry(*line).or_insert(next)
        })
        .collect()
}

/// The tokens split into lines, each line keeping its newline.
fn lines(toks: &[Tok]) -> Vec<&[Tok]> {
    toks.split_inclusive(|t| *t == Tok::Char('\n')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yrs::types::xml::XmlTextPrelim;
    use yrs::{Assoc, ClientID, In, IndexedSequence, MapPrelim, XmlTextRef};

    type TextEdit<'a> = &'a dyn Fn(&TextRef, &mut TransactionMut);

    /// `user` edits text "t" on `from`; the update reaches `to`, the
    /// history and the attribution.
    fn send(
        history: &mut HistoryDoc,
        who: &mut Attribution,
        (from, to): (&Doc, &Doc),
        user: &str,
        f: TextEdit,
    ) {
        let text = from.get_or_insert_text("t");
        let mut txn = from.transact_mut();
        f(&text, &mut txn);
        let update = txn.encode_update_v1();
        drop(txn);
        who.record(user, &update).expect("records");
        history.apply(&update).expect("applies");
        apply_to(to, &update);
    }

    /// One transaction on `doc`, its update applied to `history`.
    fn edit(doc: &Doc, history: &mut HistoryDoc, f: &dyn Fn(&mut TransactionMut)) {
        let mut txn = doc.transact_mut();
        f(&mut txn);
        history.apply(&txn.encode_update_v1()).expect("applies");
    }

    #[test]
    fn a_chain_of_snapshot_links_renders_every_version_and_survives_a_deleted_link() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut history = HistoryDoc::new();
        let mut full = Vec::new();
        let mut seen = Vec::new();
        for (at, insert, delete) in [(0, "abcdef", 0), (2, "XY", 3), (0, "123", 4), (1, "", 2)] {
            edit(&doc, &mut history, &|txn| {
                if delete > 0 {
                    text.remove_range(txn, at, delete);
                }
                if !insert.is_empty() {
                    text.insert(txn, at, insert);
                }
            });
            full.push(history.snapshot());
            seen.push(text.get_string(&doc.transact()));
        }
        let mut links = Vec::new();
        for (i, snapshot) in full.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| full[p].as_slice());
            links.push(snapshot_link(previous, snapshot).expect("links"));
        }
        let text_at = |snapshot: &[u8]| {
            let update = history.encode_at(snapshot).expect("renders");
            let (state, _) = DocState::load(None, [update.as_slice()]).expect("loads");
            state.to_json()["t"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        for i in 0..links.len() {
            let chained =
                snapshot_from_links(links[..=i].iter().map(Vec::as_slice)).expect("chains");
            assert_eq!(text_at(&chained), seen[i], "version {i}");
        }
        // Links hold only what is new: together smaller than the snapshots.
        let sum = |v: &Vec<Vec<u8>>| v.iter().map(Vec::len).sum::<usize>();
        assert!(sum(&links) < sum(&full));
        // Deleting version 1 merges its link into version 2's.
        let merged =
            snapshot_from_links([links[1].as_slice(), links[2].as_slice()]).expect("merges");
        let rest = [links[0].as_slice(), merged.as_slice(), links[3].as_slice()];
        assert_eq!(
            text_at(&snapshot_from_links(rest[..2].iter().copied()).expect("chains")),
            seen[2]
        );
        assert_eq!(
            text_at(&snapshot_from_links(rest).expect("chains")),
            seen[3]
        );
        // Hostile links are refused.
        assert!(snapshot_link(None, b"\xff\xff").is_err());
        assert!(snapshot_from_links([&b"\x01"[..]]).is_err());
    }

    /// A small deterministic generator, so that a failing seed replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }

        fn piece(&mut self) -> &'static str {
            PIECES[self.below(PIECES.len())]
        }
    }

    fn rng(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    const PIECES: &[&str] = &["a", "bc", "é", "😀", " ", "xyz", "ß\n", "héllo 😀", "\n"];

    /// The byte offset of char `index` in `s` (the document uses byte offsets).
    fn byte_at(s: &str, index: usize) -> u32 {
        s.chars().take(index).map(char::len_utf8).sum::<usize>() as u32
    }

    /// One random edit of a client document, in its own transaction, as
    /// the update it produced.
    fn random_edit(doc: &Doc, rng: &mut Rng) -> Vec<u8> {
        let mut txn = doc.transact_mut();
        match rng.below(10) {
            0..=3 => {
                let text = txn.get_or_insert_text("t");
                let s = text.get_string(&txn);
                let chars = s.chars().count();
                if chars > 0 && rng.below(3) == 0 {
                    let at = rng.below(chars);
                    let len = 1 + rng.below(3.min(chars - at));
                    let from = byte_at(&s, at);
                    let to = byte_at(&s, at + len);
                    text.remove_range(&mut txn, from, to - from);
                } else {
                    let at = byte_at(&s, rng.below(chars + 1));
                    text.insert(&mut txn, at, rng.piece());
                }
            }
            4..=5 => {
                let map = txn.get_or_insert_map("m");
                let key = *rng.pick(&["a", "b", "c", "d"]);
                match rng.below(5) {
                    0 => {
                        map.remove(&mut txn, key);
                    }
                    1 => {
                        map.insert(&mut txn, key, rng.below(100) as i64);
                    }
                    2 => {
                        map.insert(&mut txn, key, rng.piece());
                    }
                    3 => {
                        let list = vec![Any::from(1), Any::from("two 😀")];
                        map.insert(&mut txn, key, Any::from(list));
                    }
                    _ => {
                        let nested = MapPrelim::from([("n", In::from(rng.below(9) as i64))]);
                        map.insert(&mut txn, key, nested);
                    }
                }
            }
            6..=7 => {
                let array = txn.get_or_insert_array("a");
                let len = array.len(&txn);
                if len > 0 && rng.below(3) == 0 {
                    array.remove(&mut txn, rng.below(len as usize) as u32);
                } else {
                    let at = rng.below(len as usize + 1) as u32;
                    if rng.below(2) == 0 {
                        array.insert(&mut txn, at, rng.below(50) as i64);
                    } else {
                        array.insert(&mut txn, at, rng.piece());
                    }
                }
            }
            _ => {
                let xml = txn.get_or_insert_xml_fragment("x");
                let len = xml.len(&txn);
                match rng.below(4) {
                    0 if len > 0 => {
                        xml.remove_range(&mut txn, rng.below(len as usize) as u32, 1);
                    }
                    1 if len > 0 => {
                        // Edit the text inside a paragraph.
                        let at = rng.below(len as usize) as u32;
                        if let Some(text) = paragraph_text(&txn, &xml, at) {
                            let end = text.len(&txn);
                            let at = if rng.below(2) == 0 { 0 } else { end };
                            text.insert(&mut txn, at, rng.piece());
                        }
                    }
                    _ => {
                        let at = rng.below(len as usize + 1) as u32;
                        let words = rng.piece();
                        let p = XmlElementPrelim::new(
                            "paragraph",
                            [XmlIn::from(XmlTextPrelim::new(words))],
                        );
                        xml.insert(&mut txn, at, p);
                    }
                }
            }
        }
        txn.encode_update_v1()
    }

    /// The text of the paragraph at `index` of a fragment.
    fn paragraph_text<T: ReadTxn>(txn: &T, xml: &XmlFragmentRef, index: u32) -> Option<XmlTextRef> {
        let XmlOut::Element(p) = xml.get(txn, index)? else {
            return None;
        };
        match p.get(txn, 0)? {
            XmlOut::Text(text) => Some(text),
            _ => None,
        }
    }

    fn full_state(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// A v1 update as `DocState::to_json` renders it.
    fn render_update(update: &[u8]) -> Value {
        let (state, report) = DocState::load(Some(update), []).expect("loads");
        assert_eq!(report.skipped, 0);
        state.to_json()
    }

    fn apply_to(doc: &Doc, update: &[u8]) {
        let update = Update::decode_v1(update).expect("decodes");
        doc.transact_mut().apply_update(update).expect("applies");
    }

    /// Replays `edits` random edits into a client and a history document,
    /// taking a snapshot every `every` edits. Returns the history, the
    /// client, and every snapshot with the client's rendering at that time.
    fn replay(seed: u64, edits: usize, every: usize) -> (HistoryDoc, Doc, Vec<(Vec<u8>, Value)>) {
        let mut rng = rng(seed);
        let client = Doc::new();
        let mut history = HistoryDoc::new();
        let mut versions = Vec::new();
        for i in 1..=edits {
            let update = random_edit(&client, &mut rng);
            history.apply(&update).expect("a client's update applies");
            if i % every == 0 {
                versions.push((history.snapshot(), render_update(&full_state(&client))));
            }
        }
        (history, client, versions)
    }

    #[test]
    fn every_version_renders_exactly_and_retention_keeps_the_later_ones() {
        let (mut history, client, versions) = replay(7, 300, 20);
        assert_eq!(versions.len(), 15);
        for (snapshot, expected) in &versions {
            let at = history.encode_at(snapshot).expect("encodes");
            assert_eq!(&render_update(&at), expected);
        }
        // The server reloads the base from `encode()` before reading a version.
        let mut reloaded = HistoryDoc::new();
        reloaded.apply(&history.encode()).expect("the base applies");
        for (snapshot, expected) in &versions {
            let at = reloaded.encode_at(snapshot).expect("encodes");
            assert_eq!(&render_update(&at), expected);
        }

        let k = 7;
        let before = history.encode().len();
        history.forget_before(&versions[k].0).expect("collects");
        let after = history.encode().len();
        assert!(after < before, "{after} bytes, not less than {before}");
        for (snapshot, expected) in &versions[k..] {
            let at = history.encode_at(snapshot).expect("encodes");
            assert_eq!(&render_update(&at), expected);
        }
        // And after a reload from the shrunk base.
        let mut reloaded = HistoryDoc::new();
        reloaded.apply(&history.encode()).expect("the base applies");
        for (snapshot, expected) in &versions[k..] {
            let at = reloaded.encode_at(snapshot).expect("encodes");
            assert_eq!(&render_update(&at), expected);
        }
        // The current state is untouched by retention.
        let now = reloaded.encode_at(&reloaded.snapshot()).expect("encodes");
        assert_eq!(render_update(&now), render_update(&full_state(&client)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn versions_render_exactly_for_any_edit_sequence(
            seed in any::<u64>(),
            edits in 20usize..80,
            forget in 0usize..8,
        ) {
            let (mut history, _, versions) = replay(seed, edits, 10);
            for (snapshot, expected) in &versions {
                let at = history.encode_at(snapshot).expect("encodes");
                prop_assert_eq!(&render_update(&at), expected);
            }
            if let Some((snapshot, _)) = versions.get(forget) {
                history.forget_before(snapshot).expect("collects");
                for (snapshot, expected) in &versions[forget..] {
                    let at = history.encode_at(snapshot).expect("encodes");
                    prop_assert_eq!(&render_update(&at), expected);
                }
            }
        }

        #[test]
        fn a_restore_reaches_any_version_from_any_other(
            seed in any::<u64>(),
            pick in any::<(usize, usize)>(),
        ) {
            let (history, _, versions) = replay(seed, 60, 6);
            let target = &versions[pick.0 % versions.len()].0;
            let current = &versions[pick.1 % versions.len()].0;
            let target = history.encode_at(target).expect("encodes");
            let current = history.encode_at(current).expect("encodes");
            check_restore(&current, &target);
        }
    }

    /// Restores `current` to `target` and checks the result renders as the target.
    fn check_restore(current: &[u8], target: &[u8]) {
        let wanted = render_update(target);
        let doc = Doc::new();
        apply_to(&doc, current);
        match restore_update(current, target).expect("restores") {
            None => assert_restored(&render_update(current), &wanted),
            Some(update) => {
                apply_to(&doc, &update);
                assert_restored(&render_update(&full_state(&doc)), &wanted);
            }
        }
    }

    /// `restored` renders as `wanted`, except that a root the target did
    /// not have at all is there, emptied: a Yjs root cannot be removed, and
    /// an empty one renders as "". Likewise a root the target shows empty
    /// (its content all deleted) may be absent after the restore, which
    /// need not write anything to it: an absent root reads as empty.
    fn assert_restored(restored: &Value, wanted: &Value) {
        let mut restored = restored.clone();
        let mut wanted = wanted.clone();
        if let (Some(restored), Some(wanted)) = (restored.as_object_mut(), wanted.as_object_mut()) {
            restored.retain(|name, value| {
                if wanted.contains_key(name) {
                    return true;
                }
                assert_eq!(*value, json!(""), "root {name} was not emptied");
                false
            });
            wanted.retain(|name, value| restored.contains_key(name) || *value != json!(""));
        }
        assert_eq!(restored, wanted);
    }

    #[test]
    fn a_restore_keeps_unchanged_content_and_converges_with_concurrent_edits() {
        let doc = Doc::new();
        let mut history = HistoryDoc::new();
        // A Tiptap-like document: paragraphs and a heading with marks.
        edit(&doc, &mut history, &|txn| {
            let xml = txn.get_or_insert_xml_fragment("default");
            let mut h =
                XmlElementPrelim::new("heading", [XmlIn::from(XmlTextPrelim::new("Title 😀"))]);
            h.attributes.clear();
            let heading = xml.insert(txn, 0, h);
            heading.insert_attribute(txn, "level", Any::from(2));
            for (i, words) in ["first paragraph", "second one", "third"]
                .iter()
                .enumerate()
            {
                let p = xml.insert(txn, i as u32 + 1, XmlElementPrelim::empty("paragraph"));
                let text = p.insert(txn, 0, XmlTextPrelim::new(""));
                text.insert(txn, 0, words);
            }
            let title = txn.get_or_insert_text("title");
            title.insert(txn, 0, "héllo 😀 wörld");
            let meta = txn.get_or_insert_map("meta");
            meta.insert(
                txn,
                "tags",
                MapPrelim::from([("list", In::from(Any::from(vec![Any::from("a")])))]),
            );
            meta.insert(txn, "n", 1);
            let list = txn.get_or_insert_array("list");
            list.insert(txn, 0, 1);
            list.insert(txn, 1, "two");
        });
        let version = history.snapshot();
        edit(&doc, &mut history, &|txn| {
            let xml = txn.get_or_insert_xml_fragment("default");
            // Bold in the second paragraph, the third deleted, a new one.
            if let Some(text) = paragraph_text(txn, &xml, 2) {
                let bold: Attrs = [(Arc::from("bold"), Any::Bool(true))].into_iter().collect();
                text.format(txn, 0, 6, bold);
            }
            xml.remove_range(txn, 3, 1);
            let p = xml.insert(txn, 1, XmlElementPrelim::empty("paragraph"));
            p.insert(txn, 0, XmlTextPrelim::new("inserted later"));
            let title = txn.get_or_insert_text("title");
            let len = title.len(txn);
            title.remove_range(txn, 0, len);
            title.insert(txn, 0, "héllo 😀 there");
            let meta = txn.get_or_insert_map("meta");
            meta.insert(txn, "n", 2);
            meta.insert(txn, "extra", "x");
            let list = txn.get_or_insert_array("list");
            list.insert(txn, 1, "one and a half");
            let gone = txn.get_or_insert_text("scratch");
            gone.insert(txn, 0, "later root");
        });
        let current = full_state(&doc);
        let target = history.encode_at(&version).expect("encodes");
        let wanted = render_update(&target);

        // A cursor inside the first paragraph, which the restore must not touch.
        let cursor = {
            let txn = doc.transact();
            let xml = txn.get_xml_fragment("default").expect("exists");
            let text = paragraph_text(&txn, &xml, 2).expect("the first paragraph");
            assert_eq!(text.get_string(&txn), "first paragraph");
            text.sticky_index(&txn, 5, Assoc::After).expect("an index")
        };

        let update = restore_update(&current, &target)
            .expect("restores")
            .expect("something differs");
        // A concurrent edit, made without the restore.
        let other = Doc::new();
        apply_to(&other, &current);
        let concurrent = {
            let mut txn = other.transact_mut();
            let title = txn.get_or_insert_text("title");
            title.insert(&mut txn, 0, "» ");
            txn.encode_update_v1()
        };
        apply_to(&doc, &update);
        assert_restored(&render_update(&full_state(&doc)), &wanted);
        {
            let txn = doc.transact();
            let offset = cursor.get_offset(&txn).expect("still resolves");
            assert_eq!(offset.index, 5);
            let xml = txn.get_xml_fragment("default").expect("exists");
            let text = paragraph_text(&txn, &xml, 1).expect("the first paragraph");
            assert_eq!(
                offset.branch,
                BranchPtr::from(AsRef::<Branch>::as_ref(&text))
            );
        }
        // Both orders converge.
        apply_to(&doc, &concurrent);
        apply_to(&other, &update);
        let one = render_update(&full_state(&doc));
        assert_eq!(one, render_update(&full_state(&other)));
        assert_eq!(one["title"], json!("» héllo 😀 wörld"));

        // Nothing differs: no update.
        let restored = full_state(&doc);
        let same = restore_update(&restored, &restored).expect("restores");
        assert!(same.is_none());
    }

    #[test]
    fn a_restore_brings_back_formatting_and_number_attributes() {
        let doc = Doc::new();
        let target = {
            let mut txn = doc.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("default");
            let heading = xml.insert(&mut txn, 0, XmlElementPrelim::empty("heading"));
            heading.insert_attribute(&mut txn, "level", Any::from(3));
            let text = heading.insert(&mut txn, 0, XmlTextPrelim::new(""));
            let bold: Attrs = [(Arc::from("bold"), Any::Bool(true))].into_iter().collect();
            text.insert_with_attributes(&mut txn, 0, "big", bold);
            text.insert(&mut txn, 3, " plain");
            let rich = txn.get_or_insert_text("rich");
            let italic: Attrs = [(Arc::from("italic"), Any::Bool(true))]
                .into_iter()
                .collect();
            rich.insert_with_attributes(&mut txn, 0, "slanted", italic);
            // Text typed after italic text is italic too, unless told otherwise.
            let upright: Attrs = [(Arc::from("italic"), Any::Null)].into_iter().collect();
            rich.insert_with_attributes(&mut txn, 7, " upright", upright);
            drop(txn);
            full_state(&doc)
        };
        {
            let mut txn = doc.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("default");
            xml.remove_range(&mut txn, 0, 1);
            let rich = txn.get_or_insert_text("rich");
            let len = rich.len(&txn);
            rich.remove_range(&mut txn, 0, len);
            rich.insert(&mut txn, 0, "slanted upright!");
        }
        let current = full_state(&doc);
        let update = restore_update(&current, &target)
            .expect("restores")
            .expect("differs");
        apply_to(&doc, &update);
        let txn = doc.transact();
        let xml = txn.get_xml_fragment("default").expect("exists");
        let Some(XmlOut::Element(heading)) = xml.get(&txn, 0) else {
            panic!("no heading");
        };
        assert_eq!(
            heading.get_attribute(&txn, "level"),
            Some(Out::Any(Any::from(3)))
        );
        let rich = txn.get_text("rich").expect("exists");
        let chunks: Vec<(String, bool)> = rich
            .diff(&txn, YChange::identity)
            .into_iter()
            .map(|d| {
                let italic = d
                    .attributes
                    .is_some_and(|a| a.get("italic") == Some(&Any::Bool(true)));
                (d.insert.to_string(&txn), italic)
            })
            .collect();
        assert_eq!(
            chunks,
            vec![("slanted".to_owned(), true), (" upright".to_owned(), false)]
        );
        drop(txn);
        assert_eq!(render_update(&full_state(&doc)), render_update(&target));
    }

    #[test]
    fn a_restore_clears_roots_the_version_did_not_have() {
        let doc = Doc::new();
        let empty = full_state(&doc);
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("t").insert(&mut txn, 0, "x");
            txn.get_or_insert_map("m").insert(&mut txn, "k", 1);
        }
        let current = full_state(&doc);
        let update = restore_update(&current, &empty)
            .expect("restores")
            .expect("differs");
        apply_to(&doc, &update);
        assert_eq!(render_update(&full_state(&doc)), json!({"t": "", "m": ""}));
    }

    #[test]
    fn the_restore_uses_a_client_id_of_its_own() {
        let doc = Doc::new();
        let before = full_state(&doc);
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "abc");
        let current = full_state(&doc);
        let update = restore_update(&current, &before)
            .expect("restores")
            .expect("differs");
        let update = Update::decode_v1(&update).expect("decodes");
        // Only deletions: no blocks, and none of the doc's client.
        assert!(update.state_vector().is_empty());
        let text_update = restore_update(&before, &current)
            .expect("restores")
            .expect("differs");
        let text_update = Update::decode_v1(&text_update).expect("decodes");
        let clients: Vec<ClientID> = text_update.state_vector().iter().map(|(c, _)| *c).collect();
        assert_eq!(clients.len(), 1);
        assert_ne!(clients[0], doc.client_id());
    }

    fn two_users() -> (Doc, Doc, Attribution, HistoryDoc) {
        let alice = Doc::new();
        let bob = Doc::new();
        let mut who = Attribution::new();
        let mut history = HistoryDoc::new();
        let (h, w) = (&mut history, &mut who);
        send(h, w, (&alice, &bob), "alice", &|t, txn| {
            t.insert(txn, 0, "hello world")
        });
        send(h, w, (&bob, &alice), "bob", &|t, txn| {
            t.remove_range(txn, 6, 5);
            t.insert(txn, 6, "there");
        });
        (alice, bob, who, history)
    }

    #[test]
    fn attribution_knows_who_inserted_and_deleted() {
        let (alice, bob, who, _) = two_users();
        let a = alice.client_id();
        let b = bob.client_id();
        assert_eq!(who.inserted_by(&ID::new(a, 0)), Some("alice"));
        assert_eq!(who.inserted_by(&ID::new(a, 10)), Some("alice"));
        assert_eq!(who.inserted_by(&ID::new(b, 0)), Some("bob"));
        assert_eq!(who.deleted_by(&ID::new(a, 6)), Some("bob"));
        assert_eq!(who.deleted_by(&ID::new(a, 5)), None);
        assert_eq!(who.inserted_by(&ID::new(a, 11)), None);

        let decoded = Attribution::decode(&who.encode()).expect("decodes");
        assert_eq!(decoded, who);
        // Merging in what is already known changes nothing.
        let mut merged = Attribution::new();
        merged.merge(who.clone());
        merged.merge(decoded);
        assert_eq!(merged, who);
        assert!(!who.is_empty());
        assert!(Attribution::new().is_empty());
        // A relayed copy of alice's text does not credit bob with it.
        let mut relayed = who.clone();
        relayed.record("carol", &full_state(&bob)).expect("records");
        assert_eq!(relayed.inserted_by(&ID::new(a, 0)), Some("alice"));
        assert!(relayed.record("carol", &[1, 2, 3]).is_err());
        assert_eq!(relayed, who, "nothing recorded from garbage or a relay");
    }

    proptest! {
        #[test]
        fn attribution_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Attribution::decode(&bytes);
        }

        #[test]
        fn truncated_attribution_rows_are_refused(cut in any::<prop::sample::Index>()) {
            let (_, _, who, _) = two_users();
            let bytes = who.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(Attribution::decode(&bytes[..cut]).is_err());
            let mut padded = bytes.clone();
            padded.push(0);
            prop_assert!(Attribution::decode(&padded).is_err());
        }

        #[test]
        fn hostile_snapshots_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let (_, _, who, mut history) = two_users();
            let before = history.encode();
            let _ = history.encode_at(&bytes);
            let _ = history.diff(&bytes, None, &who);
            let _ = history.forget_before(&bytes);
            // Whatever it did, the current state renders the same.
            prop_assert_eq!(
                render_update(&history.encode_at(&history.snapshot()).expect("encodes")),
                render_update(&before)
            );
        }
    }

    #[test]
    fn spans_say_what_changed_and_who_did_it() {
        let alice = Doc::new();
        let bob = Doc::new();
        let mut who = Attribution::new();
        let mut history = HistoryDoc::new();
        send(
            &mut history,
            &mut who,
            (&alice, &bob),
            "alice",
            &|t, txn| t.insert(txn, 0, "hello world"),
        );
        let v1 = history.snapshot();
        send(&mut history, &mut who, (&bob, &alice), "bob", &|t, txn| {
            t.remove_range(txn, 6, 5);
            t.insert(txn, 6, "thére 😀");
        });
        let v2 = history.snapshot();
        send(
            &mut history,
            &mut who,
            (&alice, &bob),
            "alice",
            &|t, txn| t.insert(txn, 0, ">"),
        );

        let diff = history.diff(&v1, Some(&v2), &who).expect("diffs");
        let root = &diff["roots"]["t"];
        assert_eq!(root["type"], json!("text"));
        assert_eq!(root["before"], json!("hello world"));
        assert_eq!(root["after"], json!("hello thére 😀"));
        let spans = root["spans"].as_array().expect("spans");
        let unchanged = json!({"text": "hello ", "change": "unchanged", "by": "alice"});
        let deleted = json!({"text": "world", "change": "deleted", "by": "bob"});
        let inserted = json!({"text": "thére 😀", "change": "inserted", "by": "bob"});
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert_eq!(spans[0], unchanged);
        assert!(spans.contains(&deleted), "{spans:?}");
        assert!(spans.contains(&inserted), "{spans:?}");

        // To the current state: alice's ">" is new, bob's text unchanged.
        let diff = history.diff(&v2, None, &who).expect("diffs");
        let spans = diff["roots"]["t"]["spans"]
            .as_array()
            .expect("spans")
            .clone();
        assert_eq!(
            spans,
            vec![
                json!({"text": ">", "change": "inserted", "by": "alice"}),
                json!({"text": "hello ", "change": "unchanged", "by": "alice"}),
                json!({"text": "thére 😀", "change": "unchanged", "by": "bob"}),
            ]
        );
        // Nothing recorded: no authors.
        let diff = history.diff(&v1, None, &Attribution::new()).expect("diffs");
        assert_eq!(diff["roots"]["t"]["spans"][0]["by"], Value::Null);
    }

    #[test]
    fn diff_renders_each_root_and_its_type() {
        let (_, _, who, mut history) = two_users();
        let empty = Snapshot::default().encode_v1();
        let diff = history.diff(&empty, None, &who).expect("diffs");
        assert_eq!(diff["roots"]["t"]["before"], Value::Null);
        assert_eq!(diff["roots"]["t"]["after"], json!("hello there"));
        let (history_doc, _, versions) = replay(3, 120, 120);
        let mut history_doc = history_doc;
        let diff = history_doc
            .diff(&empty, Some(&versions[0].0), &who)
            .expect("diffs");
        for (name, kind) in [("t", "text"), ("m", "map"), ("a", "array"), ("x", "xml")] {
            let root = &diff["roots"][name];
            assert_eq!(root["type"], json!(kind), "{name}");
            assert_eq!(root["after"], versions[0].1[name], "{name}");
            assert_eq!(root.get("spans").is_some(), kind == "text");
        }
    }

    #[test]
    fn hostile_bytes_are_refused() {
        let (_, _, who, mut history) = two_users();
        let snapshot = history.snapshot();
        let before = history.encode();
        for cut in 0..snapshot.len() {
            assert!(history.encode_at(&snapshot[..cut]).is_err(), "cut at {cut}");
            assert!(
                history.forget_before(&snapshot[..cut]).is_err(),
                "cut at {cut}"
            );
            assert!(history.diff(&snapshot[..cut], None, &who).is_err());
        }
        for garbage in [&[0xffu8; 12][..], &[9, 9, 9], &[1, 200, 200, 200, 200, 7]] {
            assert!(history.encode_at(garbage).is_err());
            assert!(history.forget_before(garbage).is_err());
            assert!(matches!(
                history.apply(garbage),
                Err(ApplyError::Malformed(_))
            ));
        }
        assert_eq!(history.encode(), before);
        assert!(restore_update(&[9, 9, 9], &before).is_err());
        assert!(restore_update(&before, &[9, 9, 9]).is_err());
        // A snapshot naming clients and clocks the document never saw.
        let mut foreign = Snapshot::default();
        foreign.state_map.set_max(ClientID::new(123_456), 1_000);
        foreign
            .delete_set
            .insert(ID::new(ClientID::new(123_456), 3), 10);
        let foreign = foreign.encode_v1();
        let at = history.encode_at(&foreign).expect("an empty version");
        assert_eq!(render_update(&at), json!({}));
        history.forget_before(&foreign).expect("nothing to collect");
        assert_eq!(history.encode(), before);
    }

    /// Replays a real editing trace (see /work/shared/traces/README.md)
    /// and prints the figures of docs/ for the history: run with
    /// `cargo test -p tandem-crdt --release -- --ignored --nocapture trace`.
    #[test]
    #[ignore = "reads /work/shared/traces and takes a while; prints measurements"]
    fn automerge_paper_trace_figures() {
        use std::io::Read as _;
        use std::time::Instant;
        let path = "/work/shared/traces/automerge-paper.json.gz";
        let file = std::fs::File::open(path).expect("the trace is there");
        let mut raw = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut raw)
            .expect("gunzips");
        let trace: Value = serde_json::from_str(&raw).expect("parses");
        let txns = trace["txns"].as_array().expect("txns");
        // The client keeps its own history too, for comparison. The trace
        // is ASCII only, so code points are bytes.
        let client = Doc::with_options(history_options());
        let text = client.get_or_insert_text("text");
        let mut history = HistoryDoc::new();
        let mut snapshots = Vec::new();
        let started = Instant::now();
        for (i, t) in txns.iter().enumerate() {
            let mut txn = client.transact_mut();
            for patch in t["patches"].as_array().expect("patches") {
                let at = patch[0].as_u64().expect("position") as u32;
                let delete = patch[1].as_u64().expect("count") as u32;
                let insert = patch[2].as_str().expect("text");
                if delete > 0 {
                    text.remove_range(&mut txn, at, delete);
                }
                if !insert.is_empty() {
                    text.insert(&mut txn, at, insert);
                }
            }
            let update = txn.encode_update_v1();
            drop(txn);
            history.apply(&update).expect("applies");
            if (i + 1) % 1000 == 0 {
                snapshots.push(history.snapshot());
            }
        }
        let replayed = started.elapsed();
        assert_eq!(
            text.get_string(&client.transact()),
            trace["endContent"].as_str().expect("end")
        );
        let base = history.encode();
        let client_no_gc = full_state(&client);
        let (now, _) = DocState::load(Some(&base), []).expect("loads");
        let current = now.encode_state();
        let snapshot_bytes: usize = snapshots.iter().map(Vec::len).sum();
        println!("txns {}, replay with history {replayed:?}", txns.len());
        println!("history encode() {} bytes", base.len());
        println!("client's own no-gc encoding {} bytes", client_no_gc.len());
        println!("final gc'd document {} bytes", current.len());
        println!(
            "{} snapshots, {} bytes in all (largest {}, last {})",
            snapshots.len(),
            snapshot_bytes,
            snapshots.iter().map(Vec::len).max().unwrap_or(0),
            snapshots.last().map_or(0, Vec::len)
        );

        let middle = &snapshots[snapshots.len() / 2];
        let started = Instant::now();
        let mut server = HistoryDoc::new();
        server.apply(&base).expect("the base applies");
        let loaded = started.elapsed();
        let target = server.encode_at(middle).expect("encodes");
        let both = started.elapsed();
        println!(
            "encode_at(middle): {both:?} with loading the base ({loaded:?} of it), {} bytes",
            target.len()
        );

        let started = Instant::now();
        let update = restore_update(&current, &target)
            .expect("restores")
            .expect("differs");
        println!(
            "restore_update(final -> middle): {:?}, {} bytes",
            started.elapsed(),
            update.len()
        );
        let doc = Doc::new();
        apply_to(&doc, &current);
        apply_to(&doc, &update);
        assert_eq!(render_update(&full_state(&doc)), render_update(&target));

        let started = Instant::now();
        let diff = server
            .diff(middle, None, &Attribution::new())
            .expect("diffs");
        let spans = diff["roots"]["text"]["spans"]
            .as_array()
            .map_or(0, Vec::len);
        println!(
            "diff(middle -> now): {:?}, {spans} spans",
            started.elapsed()
        );

        let started = Instant::now();
        server.forget_before(middle).expect("collects");
        let forgotten = server.encode().len();
        println!(
            "forget_before(middle): {:?}, encode() {} -> {forgotten} bytes",
            started.elapsed(),
            base.len()
        );
        let again = server.encode_at(middle).expect("encodes");
        assert_eq!(render_update(&again), render_update(&target));
    }
}
