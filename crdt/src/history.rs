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

use std::collections::{BTreeMap, BTreeSet};
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
            // deleted later, would be freed whole. Splitting the blocks at
            // the delete set's edges first (which `diff_range` does for the
            // whole store, whatever the text it then reads) prevents that.
            let root = txn.root_refs().find_map(|(_, out)| branch_of(&out));
            if let Some(root) = root {
                let edges = Snapshot::new(txn.state_vector(), snapshot.delete_set.clone());
                TextRef::from(root).diff_range(&mut txn, Some(&edges), None, YChange::identity);
            }
            txn.gc(Some(&snapshot.delete_set));
        }));
        collected.map_err(|_| ApplyError::Poisoned("yrs panicked while collecting".into()))
    }

    /// What changed between two versions: `from` is a snapshot, `to` a
    /// snapshot or `None` for the current state. See the crate's history
    /// documentation for the JSON shape; "spans" are given for Text roots.
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
        let txn = self.state.doc().transact();
        let encoded = catch_unwind(AssertUnwindSafe(|| {
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
        drop(txn);
        let (state, report) = DocState::load(Some(&raw), [])?;
        if report.skipped > 0 {
            return Err(ApplyError::Malformed(
                "the version did not encode as a valid update".into(),
            ));
        }
        Ok(state)
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

/// One unit of a rich text: a character or an embedded value (rendered).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    Embed(Value),
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
                    toks.push(Tok::Embed(render(txn, other)));
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
                // Same characters; restore their formatting where it differs.
                for k in 0..n {
                    let len = units(&have.toks[i + k], offsets);
                    if !keys.is_empty() && have.attrs(i + k) != want.attrs(j + k) {
                        text.format(txn, at, len, full_attrs(want.attrs(j + k)));
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
    let mut edits = Vec::new();
    let (mut ia, mut ib) = (0usize, 0usize); // token positions
    let (mut la, mut lb) = (0usize, 0usize); // line positions
    let line_edits = diff_slices(&a_lines, &b_lines);
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
    edits
}

/// The tokens split into lines, each line keeping its newline.
fn lines(toks: &[Tok]) -> Vec<&[Tok]> {
    toks.split_inclusive(|t| *t == Tok::Char('\n')).collect()
}
