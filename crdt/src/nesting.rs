//! How deeply shared types nest.
//!
//! yrs deletes and renders nested types by recursion, so a chain of a
//! million nested maps (a few bytes each) would overflow the stack when
//! someone deletes or reads it. A client's update is measured on arrival,
//! before yrs sees it: each shared type it creates hangs on an item the
//! document holds or on another item of the update, and its depth is known
//! exactly. A type hanging on something the document lacks cannot be
//! measured, so that update is refused as well. A client builds on what it
//! has, which the server sent it; only one that also hears peers another
//! way (y-websocket's BroadcastChannel between tabs) can build a type on an
//! item still on its way to the server, and it is closed, reconnects and
//! sends its edit again, by when the item has arrived. Measuring later, once the type is integrated, would
//! judge the wrong update: a chain waiting for another client's next block
//! would be found too deep only when that innocent block arrived, and would
//! refuse it each time it was sent.
//!
//! Stored rows and other nodes' updates are applied as they are and
//! measured once integrated (`depth`); a current node never admits a type
//! too deep, so only rows written before this check existed can fail there.

use std::collections::HashMap;

use yrs::{BranchID, ClientID, ReadTxn, ID};

use crate::wellformed::{self, Anchor, MAX_NESTING};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestingError {
    #[error("shared types nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    #[error("item {0} creates a shared type under an item this document lacks")]
    Unanchored(ID),
    #[error(transparent)]
    Shape(#[from] wellformed::ShapeError),
}

/// Checks the shared types a client's update (already checked by
/// `wellformed::check_update`, and holding at least one type) would create
/// in the document `txn` reads: each must nest at most `MAX_NESTING` deep
/// and hang, through its parent or origins, only on items the document has
/// integrated or on items of the update itself. Walks without recursion,
/// visiting an item of the update at most three times (once, and again
/// after each of its two links is measured); each visit looks its links up
/// in the document's block store.
pub fn check_arrival<T: ReadTxn>(txn: &T, update: &[u8]) -> Result<(), NestingError> {
    let items = wellformed::items(update)?;
    let store = txn.store();
    // Each client's items, in clock order (`check_update` refuses a client
    // listed twice).
    let mut by_client: HashMap<ClientID, (usize, usize)> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        by_client
            .entry(item.id.client)
            .and_modify(|range| range.1 = i + 1)
            .or_insert((i, i + 1));
    }
    let find = |id: &ID| -> Option<usize> {
        let &(from, to) = by_client.get(&id.client)?;
        let run = &items[from..to];
        let at = run.partition_point(|item| item.id.clock <= id.clock);
        let item = run.get(at.checked_sub(1)?)?;
        (id.clock - item.id.clock < item.len).then_some(from + at - 1)
    };
    /// Where an item stands in the walk.
    #[derive(Clone, Copy)]
    enum Walk {
        New,
        /// Its dependencies are being measured (met again: a cycle).
        Open,
        /// How deeply its parent is nested (0: a root type).
        Parent(usize),
    }
    let mut walk = vec![Walk::New; items.len()];
    let mut doc_depths = HashMap::new();
    // What an item depends on, in the document or in the update: a known
    // parent depth, or an item of the update.
    enum Needs {
        Depth(usize),
        Item(usize),
    }
    let needs = |id: &ID, doc_depths: &mut HashMap<ID, usize>, parent: bool| {
        let Some(holder) = store.parent_of(id) else {
            return find(id).map(Needs::Item).ok_or(*id);
        };
        let depth = match holder {
            // The item is the parent: its own depth.
            _ if parent => depth(txn, *id, doc_depths),
            Some(BranchID::Nested(holder)) => depth(txn, holder, doc_depths),
            // At the root, or garbage-collected.
            Some(BranchID::Root(_)) | None => 0,
        };
        Ok(Needs::Depth(depth))
    };
    let mut stack = Vec::new();
    for start in (0..items.len()).filter(|&i| items[i].is_type) {
        stack.push(start);
        while let Some(&i) = stack.last() {
            if matches!(walk[i], Walk::Parent(_)) {
                stack.pop();
                continue;
            }
            walk[i] = Walk::Open;
            let refs: [(Option<ID>, bool); 2] = match items[i].anchor {
                Anchor::None | Anchor::Root => [(None, false); 2],
                Anchor::Parent(id) => [(Some(id), true), (None, false)],
                Anchor::Origins { left, right } => [(left, false), (right, false)],
            };
            let mut deepest = 0;
            let mut waits = None;
            for (id, is_parent) in refs {
                let Some(id) = id else { continue };
                let unanchored = || NestingError::Unanchored(items[start].id);
                match needs(&id, &mut doc_depths, is_parent).map_err(|_| unanchored())? {
                    Needs::Depth(d) => deepest = deepest.max(d),
                    Needs::Item(j) => match walk[j] {
                        Walk::Parent(d) => deepest = deepest.max(d + usize::from(is_parent)),
                        Walk::Open => return Err(unanchored()),
                        Walk::New => waits = Some(j),
                    },
                }
            }
            match waits {
                Some(j) => stack.push(j),
                None => {
                    walk[i] = Walk::Parent(deepest.min(MAX_NESTING + 1));
                    stack.pop();
                }
            }
        }
        if let Walk::Parent(d) = walk[start] {
            if d + 1 > MAX_NESTING {
                return Err(NestingError::TooDeep);
            }
        }
    }
    Ok(())
}

/// How many shared types enclose the integrated item `id`, itself included
/// (1 for a type at the root), up to just past `MAX_NESTING`. Walks up one
/// parent per step; `known` remembers every type met, so a long chain costs
/// one step per type, not one walk per type.
pub fn depth<T: ReadTxn>(txn: &T, id: ID, known: &mut HashMap<ID, usize>) -> usize {
    let mut chain = Vec::new();
    let mut cur = id;
    let base = loop {
        if let Some(&d) = known.get(&cur) {
            break d;
        }
        if chain.len() > MAX_NESTING {
            break MAX_NESTING;
        }
        chain.push(cur);
        match txn.store().parent_of(&cur) {
            Some(Some(BranchID::Nested(parent))) => cur = parent,
            // At the root, garbage-collected, or (for a caller's mistake)
            // not integrated.
            _ => break 0,
        }
    };
    let deepest = base + chain.len();
    for (i, item) in chain.into_iter().enumerate() {
        known.insert(item, deepest - i);
    }
    deepest
}
