//! Room awareness: the latest presence state of every client ID, and which
//! connection each one came from, so that a closing connection's clients can
//! be removed and the removal broadcast.
//!
//! Rules follow y-protocols: an entry replaces the stored one when its clock
//! is newer, or when the clock is equal and the new state is `null`.

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

#[derive(Default)]
pub struct Awareness {
    clients: HashMap<u64, Entry>,
}

impl Awareness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an update from connection `owner`. Returns whether any entry
    /// changed (only then is it worth relaying).
    pub fn apply(&mut self, owner: u64, update: &AwarenessUpdate) -> bool {
        let mut changed = false;
        for incoming in &update.entries {
            let is_null = incoming.json.as_ref() == NULL;
            let newer = match self.clients.get(&incoming.client) {
                None => true,
                Some(cur) => {
                    incoming.clock > cur.clock
                        || (incoming.clock == cur.clock && is_null && cur.state.is_some())
                }
            };
            // Same clock from another connection is a peer's echo (the stock
            // provider re-sends every remote change), not a claim: ownership
            // stays with the connection that announced the state. A client
            // that reconnected before its old connection closed sees its own
            // removal when that one closes, and re-announces at once.
            if !newer {
                continue;
            }
            self.clients.insert(
                incoming.client,
                Entry {
                    clock: incoming.clock,
                    state: (!is_null).then(|| incoming.json.clone()),
                    owner,
                },
            );
            changed = true;
        }
        changed
    }

    /// Removes every client that `owner` announced. Returns the encoded
    /// awareness update telling peers so, or `None` when none was live.
    pub fn remove_owner(&mut self, owner: u64) -> Option<Vec<u8>> {
        let mut removed = AwarenessUpdate {
            entries: Vec::new(),
        };
        // Once their connection is gone, its clients' tombstones are dropped too:
        // a reconnecting client announces itself with a fresh clock anyway.
        self.clients.retain(|client, entry| {
            if entry.owner != owner {
                return true;
            }
            if entry.state.is_some() {
                removed.entries.push(AwarenessEntry {
                    client: *client,
                    clock: entry.clock.wrapping_add(1),
                    json: NULL.into(),
                });
            }
            false
        });
        (!removed.entries.is_empty()).then(|| removed.encode())
    }

    /// Every live state, encoded as one awareness update (`None` if empty).
    pub fn encode_all(&self) -> Option<Vec<u8>> {
        let entries: Vec<AwarenessEntry> = self
            .clients
            .iter()
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

    #[test]
    fn newer_clocks_win_and_stale_ones_are_ignored() {
        let mut a = Awareness::new();
        assert!(a.apply(1, &update(&[(10, 1, r#"{"n":1}"#)])));
        assert!(!a.apply(1, &update(&[(10, 1, r#"{"n":2}"#)])));
        assert!(a.apply(1, &update(&[(10, 2, r#"{"n":3}"#)])));
        assert!(a.apply(1, &update(&[(10, 2, "null")])));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn an_echo_from_a_peer_does_not_take_over_a_client() {
        let mut a = Awareness::new();
        let state = update(&[(7, 3, r#"{"user":"ada"}"#)]);
        assert!(a.apply(1, &state));
        // A peer echoes the same state, same clock.
        assert!(!a.apply(2, &state));
        assert!(a.remove_owner(2).is_none());
        assert!(a.remove_owner(1).is_some());
    }

    #[test]
    fn removing_an_owner_removes_its_clients_only() {
        let mut a = Awareness::new();
        a.apply(1, &update(&[(10, 1, "{}"), (11, 4, "{}")]));
        a.apply(2, &update(&[(20, 1, "{}")]));
        let removal = a.remove_owner(1).expect("had clients");
        let mut decoded = decode_awareness(&removal).expect("valid").entries;
        decoded.sort_by_key(|e| e.client);
        assert_eq!(decoded.len(), 2);
        assert_eq!((decoded[0].client, decoded[0].clock), (10, 2));
        assert_eq!((decoded[1].client, decoded[1].clock), (11, 5));
        assert!(decoded.iter().all(|e| e.json.as_ref() == "null"));
        assert_eq!(a.len(), 1);
        assert!(a.remove_owner(1).is_none());
    }

    #[test]
    fn encode_all_lists_live_states() {
        let mut a = Awareness::new();
        assert!(a.encode_all().is_none());
        a.apply(1, &update(&[(10, 1, r#"{"x":1}"#)]));
        let all = decode_awareness(&a.encode_all().expect("one state")).expect("valid");
        assert_eq!(all.entries.len(), 1);
    }
}
