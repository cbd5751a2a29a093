//! Room awareness: the latest presence state of every client ID, and which
//! connection each one came from, so that a closing connection's clients can
//! be removed and the removal broadcast.
//!
//! Rules follow y-protocols: an entry replaces the stored one when its clock
//! is newer, or when the clock is equal and the new state is `null`. On top
//! of them, a connection's share is bounded (`AwarenessLimits`: client IDs,
//! state bytes), and a client ID announced by one connection cannot be
//! changed by another unless the caller allows it (the same user
//! reconnecting): otherwise anyone could move anyone's cursor.

use std::collections::HashMap;
use std::sync::Arc;

use yrs::encoding::write::Write;

const NULL: &str = "null";

/// A decoded awareness update (see `protocol::decode_awareness`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessUpdate {
    pub entries: Vec<AwarenessEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    pub client: u64,
    pub clock: u32,
    /// The state as JSON text; `"null"` means the client left.
    pub json: Arc<str>,
}

impl AwarenessUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.write_var(self.entries.len());
        for e in &self.entries {
            out.write_var(e.client);
            out.write_var(e.clock);
            out.write_string(&e.json);
        }
        out
    }
}

struct Entry {
    clock: u32,
    /// `None` once removed (kept so that older entries are not re-applied).
    state: Option<Arc<str>>,
    owner: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.len())
    }
}

/// What one connection may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwarenessLimits {
    /// Client IDs (live or removed) a connection may announce.
    pub max_clients: usize,
    /// Bytes of state JSON a connection's clients may hold together.
    pub max_bytes: usize,
}

impl Default for AwarenessLimits {
    /// A stock client announces one ID with a state of a few hundred bytes.
    fn default() -> Self {
        AwarenessLimits {
            max_clients: 16,
            max_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error("a connection may announce at most {0} awareness clients")]
    TooManyClients(usize),
    #[error("a connection's awareness states may hold at most {0} bytes")]
    TooLarge(usize),
}

/// What applying an update changed, and so what to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwarenessApplied {
    /// Nothing changed: relay nothing.
    Unchanged,
    /// Every entry was applied: relay the update as it came.
    All,
    /// Only some entries were (the rest were stale, or another connection's):
    /// relay these.
    Some(Vec<AwarenessEntry>),
}

/// A connection's share of the states.
#[derive(Default, Clone, Copy)]
struct Share {
    clients: usize,
    bytes: usize,
}

#[derive(Default)]
pub struct Awareness {
    clients: HashMap<u64, Entry>,
    shares: HashMap<u64, Share>,
    /// The client IDs each connection announced, so that removing one
    /// connection does not scan every client of the room.
    owned: HashMap<u64, Vec<u64>>,
}

impl Awareness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an update from connection `owner`, all or nothing: an update
    /// that would take the connection past `limits` changes nothing. A client
    /// ID that another connection announced is left alone unless
    /// `may_take_over(that connection)` says yes; an equal clock from another
    /// connection is a peer's echo (the stock provider re-sends every remote
    /// change), never a claim.
    pub fn apply(
        &mut self,
        owner: u64,
        update: &AwarenessUpdate,
        limits: AwarenessLimits,
        may_take_over: impl Fn(u64) -> bool,
    ) -> Result<AwarenessApplied, AwarenessError> {
        // First pass: which entries apply, and the shares they would leave.
        let mut accepted = Vec::with_capacity(update.entries.len());
        let mut mine = self.shares.get(&owner).copied().unwrap_or_default();
        let mut others: Vec<(u64, usize)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, incoming) in update.entries.iter().enumerate() {
            // y-protocols never names a client twice in one update; if a
            // sender does, the first mention counts.
            if update.entries.len() > 1 && !seen.insert(incoming.client) {
                continue;
            }
            let is_null = incoming.json.as_ref() == NULL;
            let new_bytes = if is_null { 0 } else { incoming.json.len() };
            match self.clients.get(&incoming.client) {
                None => {
                    mine.clients += 1;
                    mine.bytes += new_bytes;
                }
                Some(cur) => {
                    let newer = incoming.clock > cur.clock
                        || (incoming.clock == cur.clock && is_null && cur.state.is_some());
                    if !newer || (cur.owner != owner && !may_take_over(cur.owner)) {
                        continue;
                    }
                    if cur.owner == owner {
                        mine.bytes = mine.bytes - cur.bytes() + new_bytes;
                    } else {
                        mine.clients += 1;
                        mine.bytes += new_bytes;
                        others.push((cur.owner, cur.bytes()));
                    }
                }
            }
            accepted.push(i);
        }
        if mine.clients > limits.max_clients {
            return Err(AwarenessError::TooManyClients(limits.max_clients));
        }
        if mine.bytes > limits.max_bytes {
            return Err(AwarenessError::TooLarge(limits.max_bytes));
        }
        if accepted.is_empty() {
            return Ok(AwarenessApplied::Unchanged);
        }
        // Second pass: apply.
        for (previous, bytes) in others {
            if let Some(share) = self.shares.get_mut(&previous) {
                share.clients = share.clients.saturating_sub(1);
                share.bytes = share.bytes.saturating_sub(bytes);
            }
        }
        for &i in &accepted {
            let incoming = &update.entries[i];
            let is_null = incoming.json.as_ref() == NULL;
            let previous = self.clients.get(&incoming.client).map(|e| e.owner);
            if previous != Some(owner) {
                if let Some(ids) = previous.and_then(|p| self.owned.get_mut(&p)) {
                    ids.retain(|&c| c != incoming.client);
                }
                self.owned.entry(owner).or_default().push(incoming.client);
            }
            self.clients.insert(
                incoming.client,
                Entry {
                    clock: incoming.clock,
                    state: (!is_null).then(|| incoming.json.clone()),
                    owner,
                },
            );
        }
        self.shares.insert(owner, mine);
        if accepted.len() == update.entries.len() {
            return Ok(AwarenessApplied::All);
        }
        let applied = accepted
            .into_iter()
            .map(|i| update.entries[i].clone())
            .collect();
        Ok(AwarenessApplied::Some(applied))
    }

    /// Removes every client that `owner` announced. Returns the entries
    /// telling peers so (empty when none was live).
    pub fn remove_owner(&mut self, owner: u64) -> Vec<AwarenessEntry> {
        let mut removed = AwarenessUpdate {
            entries: Vec::new(),
        };
        // Once their connection is gone, its clients' tombstones are dropped too:
        // a reconnecting client announces itself with a fresh clock anyway.
        self.shares.remove(&owner);
        for client in self.owned.remove(&owner).unwrap_or_default() {
            let Some(entry) = self.clients.remove(&client) else {
                continue;
            };
            if let Some(_state) = entry.state {
                removed.entries.push(AwarenessEntry {
                    client,
                    clock: entry.clock.wrapping_add(1),
                    json: NULL.into(),
                });
            }
        }
        removed.entries
    }

    /// Every live state, encoded as one awareness update (`None` if empty).
    pub fn encode_all(&self) -> Option<Vec<u8>> {
        self.encode_owned_by(|_| true)
    }

    /// The live states of clients whose owner `is_owner` accepts, encoded
    /// as one awareness update (`None` if none).
    pub fn encode_owned_by(&self, is_owner: impl Fn(u64) -> bool) -> Option<Vec<u8>> {
        let entries: Vec<AwarenessEntry> = self
            .clients
            .iter()
            .filter(|(_, e)| is_owner(e.owner))
            .filter_map(|(client, e)| {
                e.state.as_ref().map(|json| AwarenessEntry {
                    client: *client,
                    clock: e.clock,
                    json: json.clone(),
                })
            })
            .collect();
        (!entries.is_empty()).then(|| AwarenessUpdate { entries }.encode())
    }

    /// Number of live states.
    pub fn len(&self) -> usize {
        self.clients.values().filter(|e| e.state.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_awareness;

    fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            entries: entries
                .iter()
                .map(|(client, clock, json)| AwarenessEntry {
                    client: *client,
                    clock: *clock,
                    json: (*json).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let u = update(&[(10, 1, r#"{"n":1}"#), (11, 2, "null")]);
        assert_eq!(decode_awareness(&u.encode()).expect("valid"), u);
    }

    #[test]
    fn client_ids_over_53_bits_are_refused() {
        let u = update(&[(1 << 53, 1, "{}")]);
        assert!(decode_awareness(&u.encode()).is_err());
    }

    const LIMITS: AwarenessLimits = AwarenessLimits {
        max_clients: 4,
        max_bytes: 64,
    };

    /// Applies as a connection that may take over nobody's clients.
    fn apply(a: &mut Awareness, owner: u64, entries: &[(u64, u32, &str)]) -> bool {
        let applied = a.apply(owner, &update(entries), LIMITS, |_| false);
        applied.expect("within the limits") != AwarenessApplied::Unchanged
    }

    #[test]
    fn newer_clocks_win_and_stale_ones_are_ignored() {
        let mut a = Awareness::new();
        assert!(apply(&mut a, 1, &[(10, 1, r#"{"n":1}"#)]));
        assert!(!apply(&mut a, 1, &[(10, 1, r#"{"n":2}"#)]));
        assert!(apply(&mut a, 1, &[(10, 2, r#"{"n":3}"#)]));
        assert!(apply(&mut a, 1, &[(10, 2, "null")]));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn an_echo_from_a_peer_does_not_take_over_a_client() {
        let mut a = Awareness::new();
        let state = [(7, 3, r#"{"user":"ada"}"#)];
        assert!(apply(&mut a, 1, &state));
        // A peer echoes the same state, same clock.
        assert!(!apply(&mut a, 2, &state));
        assert!(a.remove_owner(2).is_empty());
        assert!(!a.remove_owner(1).is_empty());
    }

    #[test]
    fn another_connection_cannot_move_a_client_it_does_not_own() {
        let mut a = Awareness::new();
        assert!(apply(&mut a, 1, &[(7, 3, r#"{"c":1}"#)]));
        // A higher clock from connection 2 is a takeover: refused, and an
        // update mixing it with its own client relays only its own.
        let mixed = update(&[(7, 9, r#"{"c":666}"#), (8, 1, r#"{"c":2}"#)]);
        let applied = a
            .apply(2, &mixed, LIMITS, |_| false)
            .expect("within limits");
        let AwarenessApplied::Some(relayed) = applied else {
            panic!("expected a partial relay, got {applied:?}");
        };
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].client, 8);
        // The same user reconnecting may take its client over.
        let moved = a.apply(2, &update(&[(7, 9, r#"{"c":3}"#)]), LIMITS, |old| old == 1);
        assert_eq!(moved, Ok(AwarenessApplied::All));
        assert!(
            a.remove_owner(1).is_empty(),
            "client 7 is connection 2's now"
        );
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn a_connection_share_is_bounded_and_a_refused_update_changes_nothing() {
        let mut a = Awareness::new();
        let five: Vec<(u64, u32, &str)> = (0..5).map(|c| (c, 1, "{}")).collect();
        assert_eq!(
            a.apply(1, &update(&five), LIMITS, |_| false),
            Err(AwarenessError::TooManyClients(4))
        );
        assert_eq!(a.len(), 0);
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(64));
        assert_eq!(
            a.apply(1, &update(&[(1, 1, &big)]), LIMITS, |_| false),
            Err(AwarenessError::TooLarge(64))
        );
        // Removed clients still count: a flood of nulls cannot grow the map.
        for c in 0..4 {
            assert!(apply(&mut a, 1, &[(c, 1, "null")]));
        }
        assert_eq!(
            a.apply(1, &update(&[(99, 1, "null")]), LIMITS, |_| false),
            Err(AwarenessError::TooManyClients(4))
        );
        // Leaving frees the share.
        a.remove_owner(1);
        assert!(apply(&mut a, 1, &[(99, 1, "{}")]));
    }

    #[test]
    fn removing_an_owner_removes_its_clients_only() {
        let mut a = Awareness::new();
        apply(&mut a, 1, &[(10, 1, "{}"), (11, 4, "{}")]);
        apply(&mut a, 2, &[(20, 1, "{}")]);
        let mut decoded = a.remove_owner(1);
        decoded.sort_by_key(|e| e.client);
        assert_eq!(decoded.len(), 2);
        assert_eq!((decoded[0].client, decoded[0].clock), (10, 2));
        assert_eq!((decoded[1].client, decoded[1].clock), (11, 5));
        assert!(decoded.iter().all(|e| e.json.as_ref() == "null"));
        assert_eq!(a.len(), 1);
        assert!(a.remove_owner(1).is_empty());
    }

    #[test]
    fn encode_all_lists_live_states() {
        let mut a = Awareness::new();
        assert!(a.encode_all().is_none());
        apply(&mut a, 1, &[(10, 1, r#"{"x":1}"#)]);
        let all = decode_awareness(&a.encode_all().expect("one state")).expect("valid");
        assert_eq!(all.entries.len(), 1);
    }
}
