//! The room's logic, pure and synchronous: one input at a time (a peer
//! joins, a peer sent a message, peers left, the API applies an update)
//! goes in, and what must happen comes out as `Effect`s: send this frame to
//! that peer or to all, store this update, report this presence change,
//! close that peer, reload the document. The core never touches a socket,
//! the database or the clock, so it is tested with plain values (see the
//! tests below), and the relay path reads top to bottom in `message`.
//!
//! The driver (`task.rs`) carries the effects out. Peers it could not
//! write to come back through `leave`, which removes any number of peers
//! with one awareness message, without recursion.
//!
//! Awareness goes out by the tick: what peers announce between two ticks is
//! merged (the newest state of each client wins) and relayed once, when the
//! driver calls `flush_awareness`. The stock client echoes every awareness
//! change it hears, so relaying each message at once would cost a room of N
//! moving cursors N² frames; by the tick it costs N per tick.
//!
//! Invariants: an update is relayed and stored only after it is applied; a
//! read-only peer's updates are never applied; a peer is closed only
//! through an effect that also removes it here, so its `client.disconnected`
//! is reported exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tandem_crdt::protocol::{self, Incoming};
use tandem_crdt::{
    Applied, ApplyError, Awareness, AwarenessApplied, AwarenessEntry, AwarenessLimits,
    AwarenessUpdate, DocState,
};
use yrs::StateVector;

use super::ConnId;
use crate::net::CloseCode;

/// What the core enforces.
#[derive(Debug, Clone, Copy)]
pub struct CoreLimits {
    pub max_document_bytes: usize,
    pub max_connections_per_doc: usize,
    pub awareness: AwarenessLimits,
}

/// A connection in the room. `port` is how the driver reaches it (an
/// outbox in the server, nothing in tests); the core never looks inside.
pub struct Peer<P> {
    pub conn: ConnId,
    /// The token's `sub`, for attribution and webhooks.
    pub user: Option<Arc<str>>,
    pub read_only: bool,
    pub port: P,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P> {
    /// Send `frame`, a whole y-protocols message, to one peer.
    Send { to: ConnId, frame: Bytes },
    /// Send `frame` to every peer but `except`.
    Broadcast {
        except: Option<ConnId>,
        frame: Bytes,
    },
    /// Store an update that was applied.
    Persist {
        update: Bytes,
        user: Option<Arc<str>>,
    },
    /// A peer joined or left (`client.connected` / `client.disconnected`);
    /// `clients` counts the room after the change.
    Presence {
        conn: ConnId,
        user: Option<Arc<str>>,
        read_only: bool,
        connected: bool,
        clients: usize,
    },
    /// Close a peer's connection. The peer is already removed here; `port`
    /// is how to reach it.
    Close {
        conn: ConnId,
        port: P,
        code: CloseCode,
        reason: &'static str,
    },
    /// yrs failed inside the document: the driver reloads it from storage,
    /// which never saw the update that failed.
    Reload,
    /// Tell the other nodes of the cluster about these awareness changes
    /// of local clients (an awareness update's payload).
    ShareAwareness(Bytes),
}

/// The room holds `TANDEM_MAX_CONNECTIONS_PER_DOC` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFull;

pub struct RoomCore<P> {
    doc: DocState,
    awareness: Awareness,
    /// Awareness changes since the last tick, one entry per client (its
    /// newest), in the order clients first changed.
    awareness_due: Vec<AwarenessEntry>,
    /// Where each client's entry is in `awareness_due`, and whether it
    /// came from a local connection (so is shared with other nodes).
    awareness_due_at: HashMap<u64, (usize, bool)>,
    peers: Vec<Peer<P>>,
    limits: CoreLimits,
    /// Other nodes serve the document too: local awareness changes are
    /// shared with them.
    clustered: bool,
}

impl<P> RoomCore<P> {
    pub fn new(doc: DocState, limits: CoreLimits) -> Self {
        RoomCore {
            doc,
            awareness: Awareness::new(),
            awareness_due: Vec::new(),
            awareness_due_at: HashMap::new(),
            peers: Vec::new(),
            limits,
            clustered: false,
        }
    }

    /// Other nodes serve the document too (see `Effect::ShareAwareness`).
    pub fn set_clustered(&mut self, clustered: bool) {
        self.clustered = clustered;
    }

    pub fn peers(&self) -> &[Peer<P>] {
        &self.peers
    }

    pub fn peer(&self, conn: ConnId) -> Option<&Peer<P>> {
        self.peers.iter().find(|p| p.conn == conn)
    }

    pub fn doc(&self) -> &DocState {
        &self.doc
    }

    /// Swaps in a document reloaded from storage. Peers stay: they hold
    /// what was stored, and the update that failed was never relayed.
    pub fn replace_doc(&mut self, doc: DocState) {
        self.doc = doc;
    }

    /// Admits a peer: it gets sync step 1, then every awareness state (as
    /// the reference server does).
    pub fn join(&mut self, peer: Peer<P>, out: &mut Vec<Effect<P>>) -> Result<(), RoomFull> {
        if self.peers.len() >= self.limits.max_connections_per_doc {
            return Err(RoomFull);
        }
        let conn = peer.conn;
        out.push(Effect::Send {
            to: conn,
            frame: protocol::encode_sync_step1(&self.doc.state_vector()),
        });
        if let Some(all) = self.awareness.encode_all() {
            out.push(Effect::Send {
                to: conn,
                frame: protocol::encode_awareness(&all),
            });
        }
        out.push(Effect::Presence {
            conn,
            user: peer.user.clone(),
            read_only: peer.read_only,
            connected: true,
            clients: self.peers.len() + 1,
        });
        self.peers.push(peer);
        Ok(())
    }

    /// Handles one message from `conn`. `frame` is the frame it came in
    /// when the frame held only this message, so that it can be relayed
    /// as it is.
    pub fn message(
        &mut self,
        conn: ConnId,
        message: Incoming,
        frame: Option<&Bytes>,
        out: &mut Vec<Effect<P>>,
    ) {
        let Some(sender) = self.peer(conn) else {
            return; // closed meanwhile: the rest of its frame is moot
        };
        let read_only = sender.read_only;
        match message {
            Incoming::SyncStep1(sv) => out.push(Effect::Send {
                to: conn,
                frame: self.doc.sync_step2_frame(&sv),
            }),
            Incoming::SyncStep2(update) | Incoming::Update(update) if read_only => {
                if !update.is_empty() && update.as_ref() != [0, 0] {
                    tracing::warn!(%conn, bytes = update.len(), "dropped an update from a read-only connection");
                }
            }
            Incoming::Update(update) => self.update(conn, update, frame, out),
            Incoming::SyncStep2(update) => self.update(conn, update, None, out),
            Incoming::Awareness { update, .. } => self.awareness(conn, update, out),
            Incoming::QueryAwareness => {
                if let Some(all) = self.awareness.encode_all() {
                    out.push(Effect::Send {
                        to: conn,
                        frame: protocol::encode_awareness(&all),
                    });
                }
            }
        }
    }

    /// The relay path: apply, then relay to the others and store.
    fn update(
        &mut self,
        conn: ConnId,
        update: Bytes,
        frame: Option<&Bytes>,
        out: &mut Vec<Effect<P>>,
    ) {
        match self
            .doc
            .apply_update(&update, self.limits.max_document_bytes)
        {
            Ok(applied @ (Applied::Changed | Applied::Trimmed(_))) => {
                // Only what the document lacked is relayed and stored; an
                // update taken whole goes out in the frame it came in.
                let (update, frame) = match applied {
                    Applied::Trimmed(rest) => (Bytes::from(rest), None),
                    _ => (update, frame.cloned()),
                };
                let frame = frame.unwrap_or_else(|| protocol::encode_update(&update));
                out.push(Effect::Broadcast {
                    except: Some(conn),
                    frame,
                });
                let user = self.peer(conn).and_then(|p| p.user.clone());
                out.push(Effect::Persist { update, user });
            }
            Ok(Applied::Empty) => {}
            Err(e @ (ApplyError::Malformed(_) | ApplyError::Nesting(_))) => {
                tracing::warn!(%conn, error = %e, "malformed update; closing the connection");
                self.close(conn, CloseCode::Malformed, "malformed update", out);
            }
            Err(e @ ApplyError::TooLarge { .. }) => {
                tracing::warn!(%conn, error = %e, "update refused: document too large");
                self.close(conn, CloseCode::TooLarge, "document too large", out);
            }
            Err(e @ ApplyError::CrossedOrigins(_)) => {
                tracing::warn!(%conn, error = %e, "hostile update; closing the connection and reloading the document from storage");
                self.close(conn, CloseCode::Malformed, "malformed update", out);
                out.push(Effect::Reload);
            }
            Err(e @ ApplyError::Poisoned(_)) => {
                tracing::error!(%conn, error = %e, "update failed inside yrs; reloading the document from storage");
                self.close(
                    conn,
                    CloseCode::Malformed,
                    "update could not be applied",
                    out,
                );
                out.push(Effect::Reload);
            }
        }
    }

    fn awareness(&mut self, conn: ConnId, update: AwarenessUpdate, out: &mut Vec<Effect<P>>) {
        let peers = &self.peers;
        let user = peers
            .iter()
            .find(|p| p.conn == conn)
            .and_then(|p| p.user.clone());
        // A client ID may move to another connection of the same user (a
        // reconnect the server has not noticed the end of yet); with no
        // tokens (dev mode) every connection is the same nobody.
        let same_user = |owner: u64| {
            peers
                .iter()
                .find(|p| p.conn.0 == owner)
                .is_none_or(|p| p.user == user)
        };
        let applied = match self
            .awareness
            .apply(conn.0, &update, self.limits.awareness, same_user)
        {
            Ok(AwarenessApplied::Unchanged) => return,
            Ok(AwarenessApplied::All) => update.entries,
            Ok(AwarenessApplied::Some(entries)) => entries,
            Err(e) => {
                tracing::warn!(%conn, error = %e, "awareness over the limit; closing the connection");
                self.close(conn, CloseCode::TooLarge, "awareness too large", out);
                return;
            }
        };
        self.awareness_due(applied, true);
    }

    /// Adds changed entries to the next tick's relay; a client's newer
    /// entry replaces its older one.
    fn awareness_due(&mut self, entries: Vec<AwarenessEntry>, local: bool) {
        for entry in entries {
            match self.awareness_due_at.get_mut(&entry.client) {
                Some((i, was_local)) => {
                    *was_local = local;
                    self.awareness_due[*i] = entry;
                }
                None => {
                    self.awareness_due_at
                        .insert(entry.client, (self.awareness_due.len(), local));
                    self.awareness_due.push(entry);
                }
            }
        }
    }

    /// Whether awareness changes wait for the next tick.
    pub fn awareness_pending(&self) -> bool {
        !self.awareness_due.is_empty()
    }

    /// The tick: relays every awareness change since the last one as one
    /// message, to every peer (the sender included: the stock client counts
    /// it as a sign of life).
    pub fn flush_awareness(&mut self, out: &mut Vec<Effect<P>>) {
        if self.awareness_due.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.awareness_due);
        if self.clustered {
            let shared: Vec<AwarenessEntry> = entries
                .iter()
                .filter(|e| self.awareness_due_at.get(&e.client).is_some_and(|d| d.1))
                .cloned()
                .collect();
            if !shared.is_empty() {
                let payload = AwarenessUpdate { entries: shared }.encode();
                out.push(Effect::ShareAwareness(Bytes::from(payload)));
            }
        }
        self.awareness_due_at.clear();
        if self.peers.is_empty() {
            return;
        }
        out.push(Effect::Broadcast {
            except: None,
            frame: protocol::encode_awareness(&AwarenessUpdate { entries }.encode()),
        });
    }

    /// Removes peers that left or were lost, telling the rest with one
    /// awareness message for all of them.
    pub fn leave(&mut self, conns: &[ConnId], out: &mut Vec<Effect<P>>) {
        self.remove(conns, None, out);
    }

    /// Closes one peer with `code` and removes it.
    pub fn close(
        &mut self,
        conn: ConnId,
        code: CloseCode,
        reason: &'static str,
        out: &mut Vec<Effect<P>>,
    ) {
        self.remove(&[conn], Some((code, reason)), out);
    }

    /// Closes every peer with `code` (the document was deleted, or the
    /// room failed).
    pub fn close_all(&mut self, code: CloseCode, reason: &'static str, out: &mut Vec<Effect<P>>) {
        let conns: Vec<ConnId> = self.peers.iter().map(|p| p.conn).collect();
        self.remove(&conns, Some((code, reason)), out);
    }

    /// Removes `conns` (closing each with `close` when given), reports each
    /// one's departure, and removes their awareness clients with one message.
    fn remove(
        &mut self,
        conns: &[ConnId],
        close: Option<(CloseCode, &'static str)>,
        out: &mut Vec<Effect<P>>,
    ) {
        let mut removed = AwarenessUpdate {
            entries: Vec::new(),
        };
        for &conn in conns {
            let Some(i) = self.peers.iter().position(|p| p.conn == conn) else {
                continue;
            };
            let peer = self.peers.swap_remove(i);
            out.push(Effect::Presence {
                conn,
                user: peer.user,
                read_only: peer.read_only,
                connected: false,
                clients: self.peers.len(),
            });
            if let Some((code, reason)) = close {
                out.push(Effect::Close {
                    conn,
                    port: peer.port,
                    code,
                    reason,
                });
            }
            removed.entries.extend(self.awareness.remove_owner(conn.0));
        }
        // Told with the next tick, merged with whatever else changed.
        self.awareness_due(removed.entries, true);
        if self.peers.is_empty() {
            self.doc.drop_caches();
        }
    }

    /// Reports every peer as gone, for a server shutting down (the sessions
    /// close their sockets with 1001 themselves).
    pub fn shut_down(&mut self, out: &mut Vec<Effect<P>>) {
        let conns: Vec<ConnId> = self.peers.iter().map(|p| p.conn).collect();
        self.leave(&conns, out);
    }

    /// An update from the HTTP API: applied, relayed to every peer, stored.
    pub fn apply_from_api(
        &mut self,
        update: Bytes,
        user: Option<Arc<str>>,
        out: &mut Vec<Effect<P>>,
    ) -> Result<Applied, ApplyError> {
        let applied = self
            .doc
            .apply_update(&update, self.limits.max_document_bytes);
        match &applied {
            Ok(kept @ (Applied::Changed | Applied::Trimmed(_))) => {
                let update = match kept {
                    Applied::Trimmed(rest) => Bytes::copy_from_slice(rest),
                    _ => update,
                };
                out.push(Effect::Broadcast {
                    except: None,
                    frame: protocol::encode_update(&update),
                });
                out.push(Effect::Persist { update, user });
            }
            Ok(Applied::Empty) => {}
            Err(e @ ApplyError::CrossedOrigins(_)) => {
                tracing::warn!(error = %e, "hostile API update; reloading the document");
                out.push(Effect::Reload);
            }
            Err(ApplyError::Poisoned(e)) => {
                tracing::error!(error = %e, "API update failed inside yrs; reloading the document");
                out.push(Effect::Reload);
            }
            Err(_) => {}
        }
        applied
    }

    /// An update another node committed (or the database holds): applied
    /// and relayed to every local peer, not stored again. Neither the
    /// document's size limit nor trimming applies: refusing would leave
    /// this node behind the others for good.
    pub fn apply_remote(&mut self, update: &Bytes, out: &mut Vec<Effect<P>>) {
        match self.doc.apply_committed(update) {
            Ok(Applied::Changed | Applied::Trimmed(_)) => {
                if !self.peers.is_empty() {
                    out.push(Effect::Broadcast {
                        except: None,
                        frame: protocol::encode_update(update),
                    });
                }
            }
            Ok(Applied::Empty) => {}
            Err(ApplyError::Poisoned(e)) => {
                tracing::error!(error = %e, "a committed update failed inside yrs; reloading the document");
                out.push(Effect::Reload);
            }
            Err(e) => {
                // Stored by a node that accepted it, so it never should.
                tracing::error!(error = %e, "a committed update from another node does not apply; skipped");
            }
        }
    }

    /// Awareness from another node's clients, owned in this room by
    /// `owner`: relayed to local peers with the next tick, not shared back.
    pub fn remote_awareness(&mut self, owner: u64, payload: &[u8]) {
        let Ok(update) = protocol::decode_awareness(payload) else {
            tracing::warn!("ignored malformed awareness from another node");
            return;
        };
        // A node speaks for all its connections: per-connection limits
        // times the connections a room may hold.
        let per = self.limits.awareness;
        let limits = AwarenessLimits {
            max_clients: per
                .max_clients
                .saturating_mul(self.limits.max_connections_per_doc),
            max_bytes: per
                .max_bytes
                .saturating_mul(self.limits.max_connections_per_doc),
        };
        match self.awareness.apply(owner, &update, limits, |_| true) {
            Ok(AwarenessApplied::Unchanged) => {}
            Ok(AwarenessApplied::All) => self.awareness_due(update.entries, false),
            Ok(AwarenessApplied::Some(entries)) => self.awareness_due(entries, false),
            Err(e) => tracing::warn!(error = %e, "ignored awareness from another node"),
        }
    }

    /// Removes the awareness clients `owner` (another node) announced.
    pub fn remove_remote(&mut self, owner: u64) {
        let removed = self.awareness.remove_owner(owner);
        self.awareness_due(removed, false);
    }

    /// The states of local clients, for another node that asks.
    pub fn local_awareness(&self, is_local: impl Fn(u64) -> bool) -> Option<Bytes> {
        self.awareness.encode_owned_by(is_local).map(Bytes::from)
    }

    /// The document as one update (shared with joiners' sync step 2 while
    /// the document is unchanged), or the diff against `sv`.
    pub fn encode(&mut self, sv: Option<&StateVector>) -> Bytes {
        match sv {
            Some(sv) => Bytes::from(self.doc.diff(sv)),
            None => self.doc.state_update(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_crdt::protocol::decode_frame;
    use yrs::{Doc, GetString, Text, Transact};

    const LIMITS: CoreLimits = CoreLimits {
        max_document_bytes: 1 << 20,
        max_connections_per_doc: 3,
        awareness: AwarenessLimits {
            max_clients: 2,
            max_bytes: 1024,
        },
    };

    fn room() -> RoomCore<()> {
        RoomCore::new(DocState::new(), LIMITS)
    }

    fn peer(n: u64, user: Option<&str>, read_only: bool) -> Peer<()> {
        Peer {
            conn: ConnId(n),
            user: user.map(Arc::from),
            read_only,
            port: (),
        }
    }

    fn join(room: &mut RoomCore<()>, n: u64) -> Vec<Effect<()>> {
        let mut out = Vec::new();
        room.join(peer(n, Some("u"), false), &mut out)
            .expect("room has space");
        out
    }

    fn text_update(s: &str) -> Bytes {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, s);
        Bytes::from(txn.encode_update_v1())
    }

    fn awareness_frame(entries: &[(u64, u32, &str)]) -> Bytes {
        let update = AwarenessUpdate {
            entries: entries
                .iter()
                .map(|&(client, clock, json)| tandem_crdt::AwarenessEntry {
                    client,
                    clock,
                    json: json.into(),
                })
                .collect(),
        };
        protocol::encode_awareness(&update.encode())
    }

    /// Feeds a frame from `conn` as the driver does.
    fn send(room: &mut RoomCore<()>, conn: u64, frame: &Bytes) -> Vec<Effect<()>> {
        let messages = decode_frame(frame).expect("valid frame");
        let single = messages.len() == 1;
        let mut out = Vec::new();
        for m in messages {
            room.message(ConnId(conn), m, single.then_some(frame), &mut out);
        }
        out
    }

    fn text(room: &RoomCore<()>) -> String {
        let doc = room.doc().doc();
        doc.get_or_insert_text("t").get_string(&doc.transact())
    }

    #[test]
    fn a_joiner_gets_sync_step_1_and_is_counted() {
        let mut room = room();
        let out = join(&mut room, 1);
        assert!(
            matches!(&out[0], Effect::Send { to, frame } if *to == ConnId(1) && frame[..2] == [0, 0])
        );
        assert!(matches!(
            out[1],
            Effect::Presence {
                connected: true,
                clients: 1,
                ..
            }
        ));
    }

    #[test]
    fn an_update_is_relayed_as_it_came_and_stored_with_its_author() {
        let mut room = room();
        join(&mut room, 1);
        join(&mut room, 2);
        let update = text_update("hi");
        let frame = protocol::encode_update(&update);
        let out = send(&mut room, 1, &frame);
        assert_eq!(
            out,
            vec![
                Effect::Broadcast {
                    except: Some(ConnId(1)),
                    frame: frame.clone()
                },
                Effect::Persist {
                    update,
                    user: Some("u".into())
                },
            ]
        );
        assert_eq!(text(&room), "hi");
    }

    #[test]
    fn a_read_only_peer_changes_nothing() {
        let mut room = room();
        let mut out = Vec::new();
        room.join(peer(1, None, true), &mut out).expect("joins");
        let out = send(&mut room, 1, &protocol::encode_update(&text_update("x")));
        assert!(out.is_empty());
        assert_eq!(text(&room), "");
    }

    #[test]
    fn a_malformed_update_closes_only_its_sender_with_4400() {
        let mut room = room();
        join(&mut room, 1);
        join(&mut room, 2);
        let out = send(&mut room, 1, &protocol::encode_update(&[1, 2, 3]));
        assert!(out.contains(&Effect::Close {
            conn: ConnId(1),
            port: (),
            code: CloseCode::Malformed,
            reason: "malformed update"
        }));
        assert_eq!(room.peers().len(), 1);
        assert!(!out.iter().any(|e| matches!(e, Effect::Persist { .. })));
    }

    #[test]
    fn a_room_over_its_limit_refuses_the_next_joiner() {
        let mut room = room();
        for n in 1..=3 {
            join(&mut room, n);
        }
        let mut out = Vec::new();
        assert_eq!(room.join(peer(4, None, false), &mut out), Err(RoomFull));
        assert!(out.is_empty());
    }

    #[test]
    fn many_peers_leaving_at_once_send_one_merged_removal() {
        let limits = CoreLimits {
            max_connections_per_doc: 10_000,
            ..LIMITS
        };
        let mut room: RoomCore<()> = RoomCore::new(DocState::new(), limits);
        for n in 0..5_000u64 {
            let mut out = Vec::new();
            room.join(peer(n, None, false), &mut out).expect("joins");
            let frame = awareness_frame(&[(n, 1, "{}")]);
            send(&mut room, n, &frame);
        }
        let mut out = Vec::new();
        room.flush_awareness(&mut out);
        let gone: Vec<ConnId> = (0..4_999).map(ConnId).collect();
        let mut out = Vec::new();
        room.leave(&gone, &mut out);
        room.flush_awareness(&mut out);
        let broadcasts: Vec<&Effect<()>> = out
            .iter()
            .filter(|e| matches!(e, Effect::Broadcast { .. }))
            .collect();
        assert_eq!(broadcasts.len(), 1, "one removal for all of them");
        let Effect::Broadcast { frame, .. } = broadcasts[0] else {
            unreachable!()
        };
        let Ok(messages) = decode_frame(frame) else {
            panic!("valid frame")
        };
        let Incoming::Awareness { update, .. } = &messages[0] else {
            panic!("an awareness message")
        };
        assert_eq!(update.entries.len(), 4_999);
        let presences = out
            .iter()
            .filter(|e| matches!(e, Effect::Presence { .. }))
            .count();
        assert_eq!(presences, 4_999);
        assert_eq!(room.peers().len(), 1);
    }

    #[test]
    fn awareness_is_bounded_per_connection_and_echoed_to_the_sender() {
        let mut room = room();
        join(&mut room, 1);
        let frame = awareness_frame(&[(10, 1, "{}")]);
        let mut out = send(&mut room, 1, &frame);
        assert!(out.is_empty(), "awareness waits for the tick");
        room.flush_awareness(&mut out);
        assert_eq!(
            out,
            vec![Effect::Broadcast {
                except: None,
                frame: frame.clone()
            }]
        );
        let three = awareness_frame(&[(11, 1, "{}"), (12, 1, "{}"), (13, 1, "{}")]);
        let out = send(&mut room, 1, &three);
        assert!(out.iter().any(|e| matches!(
            e,
            Effect::Close {
                code: CloseCode::TooLarge,
                ..
            }
        )));
        assert!(room.peers().is_empty());
    }

    #[test]
    fn awareness_between_two_ticks_goes_out_once_with_each_clients_newest_state() {
        let limits = CoreLimits {
            max_connections_per_doc: 1_000,
            ..LIMITS
        };
        let mut room: RoomCore<()> = RoomCore::new(DocState::new(), limits);
        for n in 0..100u64 {
            let mut out = Vec::new();
            room.join(peer(n, None, false), &mut out).expect("joins");
        }
        // Each of 100 clients moves its cursor ten times, and every client
        // echoes what it hears (same clocks: no change).
        for clock in 1..=10u32 {
            for n in 0..100u64 {
                let state = format!(r#"{{"cursor":{clock}}}"#);
                assert!(send(&mut room, n, &awareness_frame(&[(n, clock, &state)])).is_empty());
                let echo = awareness_frame(&[((n + 1) % 100, clock - 1, "{}")]);
                assert!(send(&mut room, n, &echo).is_empty());
            }
        }
        let mut out = Vec::new();
        room.flush_awareness(&mut out);
        assert_eq!(out.len(), 1, "one frame for the tick, to every peer");
        let Effect::Broadcast {
            except: None,
            frame,
        } = &out[0]
        else {
            panic!("a broadcast to all, got {:?}", out[0]);
        };
        let Ok(messages) = decode_frame(frame) else {
            panic!("valid frame")
        };
        let Incoming::Awareness { update, .. } = &messages[0] else {
            panic!("an awareness message")
        };
        assert_eq!(update.entries.len(), 100);
        assert!(update
            .entries
            .iter()
            .all(|e| e.clock == 10 && e.json.as_ref() == r#"{"cursor":10}"#));
        let mut out = Vec::new();
        room.flush_awareness(&mut out);
        assert!(out.is_empty(), "nothing new, nothing sent");
    }

    #[test]
    fn another_user_cannot_move_a_cursor() {
        let mut room = room();
        let mut out = Vec::new();
        room.join(peer(1, Some("ada"), false), &mut out)
            .expect("joins");
        room.join(peer(2, Some("eve"), false), &mut out)
            .expect("joins");
        send(&mut room, 1, &awareness_frame(&[(10, 1, r#"{"x":1}"#)]));
        room.flush_awareness(&mut Vec::new());
        let mut out = send(&mut room, 2, &awareness_frame(&[(10, 9, r#"{"x":666}"#)]));
        room.flush_awareness(&mut out);
        assert!(out.is_empty(), "nothing relayed: {out:?}");
    }

    #[test]
    fn an_update_with_crossed_origins_asks_for_a_reload_and_closes_the_sender() {
        let base = {
            let doc = Doc::with_client_id(1);
            let text = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "abcdefghij");
            Bytes::from(txn.encode_update_v1())
        };
        // Client 2's "X" with left origin 1#6 and right origin 1#3.
        let crossed: &[u8] = &[1, 1, 2, 0, 0xc4, 1, 6, 1, 3, 1, b'X', 0];
        let mut room = room();
        join(&mut room, 1);
        join(&mut room, 2);
        send(&mut room, 1, &protocol::encode_update(&base));
        let out = send(&mut room, 2, &protocol::encode_update(crossed));
        assert!(out.contains(&Effect::Reload));
        assert!(out.contains(&Effect::Close {
            conn: ConnId(2),
            port: (),
            code: CloseCode::Malformed,
            reason: "malformed update"
        }));
        assert!(!out
            .iter()
            .any(|e| matches!(e, Effect::Broadcast { .. } | Effect::Persist { .. })));
    }

    #[test]
    fn a_poisoned_document_asks_for_a_reload_and_closes_the_sender() {
        let base = {
            let doc = Doc::with_client_id(1);
            let text = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "abc");
            Bytes::from(txn.encode_update_v1())
        };
        // Client 2's "X" naming client 1's "a", a character, as its parent:
        // yrs refuses it while integrating, with the update partly in.
        let update: &[u8] = &[1, 1, 2, 0, 0x04, 0, 1, 0, 1, b'X', 0];
        let mut room = room();
        join(&mut room, 1);
        join(&mut room, 2);
        send(&mut room, 1, &protocol::encode_update(&base));
        let out = send(&mut room, 2, &protocol::encode_update(update));
        assert!(out.contains(&Effect::Reload));
        assert!(out.contains(&Effect::Close {
            conn: ConnId(2),
            port: (),
            code: CloseCode::Malformed,
            reason: "update could not be applied"
        }));
        assert!(!out
            .iter()
            .any(|e| matches!(e, Effect::Broadcast { .. } | Effect::Persist { .. })));
    }

    #[test]
    fn shared_types_nested_too_deeply_close_the_sender_and_change_nothing() {
        let doc = Doc::new();
        let update = {
            use yrs::{Map, MapPrelim, MapRef, WriteTxn};
            let mut txn = doc.transact_mut();
            let mut map: MapRef = txn.get_or_insert_map("m");
            for _ in 0..200 {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
            txn.encode_update_v1()
        };
        let mut room = room();
        join(&mut room, 1);
        let out = send(&mut room, 1, &protocol::encode_update(&update));
        // Measured before yrs saw it: nothing to reload.
        assert!(!out.contains(&Effect::Reload));
        assert!(out.contains(&Effect::Close {
            conn: ConnId(1),
            port: (),
            code: CloseCode::Malformed,
            reason: "malformed update"
        }));
        assert!(!out
            .iter()
            .any(|e| matches!(e, Effect::Broadcast { .. } | Effect::Persist { .. })));
    }
}
