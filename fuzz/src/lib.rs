//! The bodies of Tandem's fuzz targets, one function per target.
//!
//! Each `fuzz_targets/*.rs` is one line that calls a function here, and
//! `server/tests/it/fuzz_corpus.rs` loads this same file (`#[path]`) and replays
//! every committed corpus through it on stable `cargo test`: the harness has
//! one source of truth. So this file uses only crates that the `tandem`
//! package itself depends on, and neither `unwrap` nor `expect`.
//!
//! Every function takes the raw fuzz input, never panics on it unless an
//! invariant of the code under test is broken, and asserts what it can.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tandem::auth::{check_pattern, pattern_matches, Auth, Claims, Perm};
use tandem::config::{AuthSettings, Secret};
use tandem::doc_name::{DocName, MAX_LEN};
use tandem::net::wire::{FrameReader, Incoming as WsIncoming};
use tandem::routes::webhooks::{validate_url, MAX_URL_LEN};
use tandem::webhooks::ssrf;
use tandem_crdt::nesting::NestingError;
use tandem_crdt::protocol::{
    decode_awareness, decode_frame, decode_frame_limited, encode_awareness, encode_sync_step1,
    encode_sync_step2, encode_update, MSG_QUERY_AWARENESS,
};
use tandem_crdt::{
    Applied, ApplyError, Awareness, AwarenessApplied, AwarenessEntry, AwarenessLimits,
    AwarenessUpdate, DocState, Incoming,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::StateVector;

/// A target's body.
pub type Harness = fn(&[u8]);

/// The names of the targets, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`, with their functions (the corpus test's table).
pub const TARGETS: &[(&str, Harness)] = &[
    ("ws_frames", ws_frames),
    ("y_protocol", y_protocol),
    ("apply_update", apply_update),
    ("doc_name", doc_name),
    ("token", token),
    ("webhook_url", webhook_url),
];

// ---------------------------------------------------------------------------
// Panics.

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Tandem catches panics where yrs may raise them (decoding and integrating
/// updates, decoding state vectors): a room survives them. libFuzzer's hook
/// aborts on every panic, caught or not; this one only remembers it, and
/// `run` aborts when a panic leaves the target, printing it.
/// `TANDEM_FUZZ_PANICS=1` prints the caught ones too.
pub fn quiet_caught_panics() {
    let verbose = std::env::var_os("TANDEM_FUZZ_PANICS").is_some();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        if verbose {
            eprintln!("caught? {message}");
        }
        LAST_PANIC.with(|last| *last.borrow_mut() = message);
    }));
}

/// Runs a harness; a panic it does not catch aborts, as libFuzzer expects.
pub fn run(harness: Harness, data: &[u8]) {
    if std::panic::catch_unwind(|| harness(data)).is_err() {
        LAST_PANIC.with(|last| eprintln!("panicked: {}", last.borrow()));
        std::process::abort();
    }
}

// ---------------------------------------------------------------------------
// ws_frames: the WebSocket frame reader, then the y-protocols frame decoder
// on every binary message, as a session reads a socket.

/// Client frames are masked: two header bytes and a four-byte key at least.
const MIN_CLIENT_FRAME: usize = 6;

/// Input: one control byte (bits 0-3: message limit 16 B << n; bits 4-6:
/// read size; bit 7: the first read arrives with the upgrade request), then
/// the bytes a client sends.
pub fn ws_frames(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let max_message = 16usize << (ctl & 0x0f);
    let chunk = [1, 2, 3, 7, 64, 1000, 4096, usize::MAX][usize::from((ctl >> 4) & 7)];
    let mut chunks = wire.chunks(chunk.min(wire.len().max(1)));
    let initial = if ctl & 0x80 != 0 {
        BytesMut::from(chunks.next().unwrap_or_default())
    } else {
        BytesMut::new()
    };
    let mut reader = FrameReader::new(initial, max_message);
    let mut messages = 0usize;
    loop {
        match reader.next_message() {
            Ok(Some(message)) => {
                messages += 1;
                assert!(
                    messages <= wire.len() / MIN_CLIENT_FRAME,
                    "{messages} messages from {} bytes",
                    wire.len()
                );
                if let WsIncoming::Binary(payload) = message {
                    assert!(payload.len() <= max_message, "a message over the limit");
                    y_frame_in_message(&payload);
                }
            }
            Ok(None) => match chunks.next() {
                Some(more) => {
                    reader.release_idle_buffer();
                    reader.read_buf().extend_from_slice(more);
                }
                None => return,
            },
            // The session closes the socket: nothing more is read.
            Err(_) => return,
        }
    }
}

/// A binary WebSocket message is one y-protocols frame: the session decodes
/// it under its message budget.
fn y_frame_in_message(payload: &Bytes) {
    if let Ok(messages) = decode_frame_limited(payload, 64) {
        assert!(messages.len() <= payload.len() && messages.len() <= 64);
    }
}

// ---------------------------------------------------------------------------
// y_protocol: the y-protocols codec (sync step 1 and 2, update, awareness,
// query) and room awareness.

/// Input: one control byte (the frame's message limit; 0 means none), then
/// a y-protocols frame.
pub fn y_protocol(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let limit = if ctl == 0 {
        usize::MAX
    } else {
        usize::from(ctl)
    };
    let frame = Bytes::copy_from_slice(rest);
    let Ok(messages) = decode_frame_limited(&frame, limit) else {
        // The same bytes as a bare awareness update: must not panic either.
        if let Ok(update) = decode_awareness(rest) {
            assert_eq!(decode_awareness(&update.encode()).ok(), Some(update));
        }
        return;
    };
    // Every message takes at least one byte.
    assert!(messages.len() <= rest.len() && messages.len() <= limit);
    // Encoding what was decoded and decoding it again gives the same messages.
    let mut again = Vec::with_capacity(rest.len());
    for message in &messages {
        match message {
            Incoming::SyncStep1(sv) => again.extend_from_slice(&encode_sync_step1(&sv.encode_v1())),
            Incoming::SyncStep2(update) => again.extend_from_slice(&encode_sync_step2(update)),
            Incoming::Update(update) => again.extend_from_slice(&encode_update(update)),
            Incoming::Awareness { update, raw } => {
                assert!(raw.len() <= rest.len());
                let encoded = update.encode();
                assert_eq!(decode_awareness(&encoded).as_ref(), Ok(update));
                again.extend_from_slice(&encode_awareness(&encoded));
            }
            Incoming::QueryAwareness => again.push(MSG_QUERY_AWARENESS),
        }
    }
    // An awareness message keeps its bytes as received, to be relayed as
    // they are: a client may encode a number in more bytes than it needs
    // (lib0 reads that too), so those are compared by what they decode to.
    let decoded_only = |ms: &[Incoming]| -> Vec<Incoming> {
        ms.iter()
            .map(|m| match m {
                Incoming::Awareness { update, raw } => {
                    assert_eq!(decode_awareness(raw).as_ref(), Ok(update));
                    Incoming::Awareness {
                        update: update.clone(),
                        raw: Bytes::new(),
                    }
                }
                other => other.clone(),
            })
            .collect()
    };
    match decode_frame(&Bytes::from(again)) {
        Ok(decoded) => assert_eq!(
            decoded_only(&decoded),
            decoded_only(&messages),
            "re-encoding changed the messages"
        ),
        Err(e) => panic!("re-encoded messages do not decode: {e}"),
    }
    awareness_room(&messages);
}

const OWNERS: u64 = 3;
const AWARENESS_LIMITS: AwarenessLimits = AwarenessLimits {
    max_clients: 4,
    max_bytes: 512,
};

/// Applies every awareness message of a frame to one room's awareness, from
/// three connections in turn (connection 0's clients may be taken over).
fn awareness_room(messages: &[Incoming]) {
    let mut room = Awareness::new();
    let mut owner = 0u64;
    for message in messages {
        let Incoming::Awareness { update, .. } = message else {
            continue;
        };
        owner = (owner + 1) % OWNERS;
        let before = live_states(&room);
        match room.apply(owner, update, AWARENESS_LIMITS, |previous| previous == 0) {
            Ok(AwarenessApplied::Unchanged) | Err(_) => {
                assert_eq!(
                    live_states(&room),
                    before,
                    "a refused update changed states"
                );
            }
            Ok(AwarenessApplied::All) => {
                let after = live_states(&room);
                for e in &update.entries {
                    let expected =
                        (e.json.as_ref() != "null").then(|| (e.clock, e.json.to_string()));
                    assert_eq!(after.get(&e.client).cloned(), expected, "entry not applied");
                }
            }
            Ok(AwarenessApplied::Some(relayed)) => {
                // What the room relays is encoded with the tick's other
                // changes: it must encode and decode as itself.
                let encoded = AwarenessUpdate { entries: relayed }.encode();
                let relayed = match decode_awareness(&encoded) {
                    Ok(relayed) => relayed,
                    Err(e) => panic!("the relayed part does not decode: {e}"),
                };
                assert!(!relayed.entries.is_empty());
                assert!(relayed.entries.len() < update.entries.len());
                for e in &relayed.entries {
                    assert!(update.entries.contains(e), "relayed an entry never sent");
                }
            }
        }
        let live = live_states(&room);
        let max_live = usize::try_from(OWNERS).unwrap_or(usize::MAX) * AWARENESS_LIMITS.max_clients;
        assert!(live.len() <= max_live, "{} live states", live.len());
        assert_eq!(live.len(), room.len());
    }
    for owner in 0..OWNERS {
        for removed in room.remove_owner(owner) {
            assert_eq!(removed.json.as_ref(), "null");
        }
    }
    assert!(room.is_empty(), "states outlive every connection");
    assert_eq!(room.encode_all(), None);
}

/// client -> (clock, state) of every live state, from `encode_all`.
fn live_states(room: &Awareness) -> BTreeMap<u64, (u32, String)> {
    let Some(encoded) = room.encode_all() else {
        return BTreeMap::new();
    };
    match decode_awareness(&encoded) {
        Ok(update) => update
            .entries
            .into_iter()
            .map(
                |AwarenessEntry {
                     client,
                     clock,
                     json,
                 }| (client, (clock, json.to_string())),
            )
            .collect(),
        Err(e) => panic!("encode_all does not decode: {e}"),
    }
}

// ---------------------------------------------------------------------------
// apply_update: updates applied to a room's document, its JSON rendering
// (nested values included) and compaction.

/// Splits `[u16 LE length • bytes]*` into parts; a length past the end takes
/// the rest.
pub fn split_parts(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (part, next) = tail.split_at(len);
        parts.push(part);
        rest = next;
    }
    parts
}

/// Input: one control byte (the size limit, 256 B << n), then updates as
/// `split_parts` reads them, applied in order to one document.
pub fn apply_update(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let max_bytes = 256usize << (ctl & 0x0f);
    let mut state = DocState::new();
    // What the room stores: the update, or what trimming left of it.
    let mut accepted: Vec<Vec<u8>> = Vec::new();
    for part in split_parts(rest) {
        let version = state.version();
        let sv = state.state_vector();
        match state.apply_update(part, max_bytes) {
            Ok(applied) => {
                match applied {
                    Applied::Changed => accepted.push(part.to_vec()),
                    Applied::Trimmed(stored) => accepted.push(stored),
                    // Nothing new (it may have been cut down to nothing).
                    Applied::Empty => {}
                }
                check_document(&mut state);
            }
            Err(
                ApplyError::Malformed(_) | ApplyError::TooLarge { .. } | ApplyError::Nesting(_),
            ) => {
                assert_eq!(
                    state.version(),
                    version,
                    "a refused update changed the version"
                );
                assert_eq!(
                    state.state_vector(),
                    sv,
                    "a refused update changed the document"
                );
            }
            // Every shared type here came from a client and was measured on
            // arrival, so none can be found too deep once integrated.
            Err(ApplyError::Poisoned(e)) if e == NestingError::TooDeep.to_string() => {
                panic!("a type measured on arrival was too deep once integrated")
            }
            // The room discards this document and reloads it from storage.
            Err(ApplyError::Poisoned(_) | ApplyError::CrossedOrigins(_)) => return,
        }
    }
    if accepted.is_empty() {
        return;
    }
    // What the compactor would write from the stored log is the same document.
    match tandem_crdt::compact(None, accepted.iter().map(Vec::as_slice)) {
        Ok((snapshot, report)) => {
            assert_eq!(report.skipped, 0, "compaction skipped an accepted update");
            assert_eq!(
                rendered(&reload(&snapshot)),
                rendered(&state),
                "the compacted log renders another document"
            );
        }
        Err(e) => panic!("compacting accepted updates failed: {e}"),
    }
}

/// A document that accepted an update still renders, encodes, and decodes
/// to the same state vector and the same rendering, in the same order.
fn check_document(state: &mut DocState) {
    let json = rendered(state);
    if serde_json::to_string(&json).is_err() {
        panic!("the JSON rendering does not serialize");
    }
    let encoded = state.encode_state();
    // Byte equality would be too strict: yrs encodes a subdocument's options
    // from a fresh `HashMap`, so two encodings may order its keys apart.
    assert_eq!(
        state.state_update().len(),
        encoded.len(),
        "cached encoding differs"
    );
    let reloaded = reload(&encoded);
    assert_eq!(
        rendered(&reloaded),
        json,
        "the reloaded document renders another document"
    );
    assert_eq!(
        decode_sv(&reloaded.state_vector()),
        decode_sv(&state.state_vector()),
        "the reloaded document has another state vector"
    );
}

/// The document's JSON without roots that render as an empty string. Yjs
/// has no empty root: a root exists by name, and reading one that was
/// never written gives the same as reading one whose content is gone. yrs
/// creates a root as a side effect of a block that names it and is then
/// dropped (a duplicate of a clock it holds under another parent), and
/// such a root is in no encoding: rendered `""` live, absent once
/// reloaded, the same document either way.
fn rendered(state: &DocState) -> serde_json::Value {
    let mut json = state.to_json();
    if let Some(roots) = json.as_object_mut() {
        roots.retain(|_, v| v.as_str() != Some(""));
    }
    json
}

fn reload(encoded: &[u8]) -> DocState {
    match DocState::load(Some(encoded), []) {
        Ok((state, report)) => {
            assert_eq!(report.skipped, 0, "the document's own encoding was refused");
            state
        }
        Err(e) => panic!("the document's own encoding does not load: {e}"),
    }
}

/// client -> clock, without clients at clock 0: yrs may list a client
/// whose only blocks were held back, and a clock of 0 means nothing.
fn decode_sv(bytes: &[u8]) -> BTreeMap<u64, u32> {
    match StateVector::decode_v1(bytes) {
        Ok(sv) => sv
            .iter()
            .filter(|(_, &clock)| clock > 0)
            .map(|(client, &clock)| (client.get(), clock))
            .collect(),
        Err(e) => panic!("the document's state vector does not decode: {e}"),
    }
}

// ---------------------------------------------------------------------------
// doc_name: `DocName::parse` and token document patterns.

fn spec_allows(s: &str) -> bool {
    (1..=MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~:@".contains(&b))
}

/// Input: a name (bytes that are not UTF-8 are replaced, as a URL path
/// decoder would).
pub fn doc_name(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match DocName::parse(&s) {
        Ok(name) => {
            assert!(spec_allows(&s), "accepted {s:?}");
            assert_eq!(name.as_str(), s);
            assert_eq!(name.to_string(), s);
            assert_eq!(DocName::parse(name.as_str()).ok(), Some(name.clone()));
            assert!(check_pattern(name.as_str()).is_ok());
            assert!(pattern_matches(name.as_str(), name.as_str()));
            // `name*` matches the name and every name that extends it.
            let prefix = format!("{name}*");
            if check_pattern(&prefix).is_ok() {
                assert!(pattern_matches(&prefix, name.as_str()));
            }
        }
        Err(_) => assert!(!spec_allows(&s), "refused {s:?}"),
    }
    // A pattern is a name, or a prefix of one followed by `*`.
    let pattern_ok = match s.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => spec_allows(prefix),
        None => spec_allows(&s),
    };
    assert_eq!(check_pattern(&s).is_ok(), pattern_ok, "pattern {s:?}");
}

// ---------------------------------------------------------------------------
// token: client token verification (HS256 JWT) under a fixed secret.

const SECRET: &str = "fuzzing-secret-fuzzing-secret-0123456789";

fn fuzz_auth() -> Auth {
    let settings = AuthSettings {
        api_key: Some(Secret("fuzzing-api-key".into())),
        token_secret: Some(Secret(SECRET.into())),
        token_public_key: None,
        token_issuer: None,
        token_audience: None,
        allowed_origins: None,
        insecure_no_auth: false,
    };
    match Auth::new(&settings) {
        Ok(auth) => auth,
        Err(e) => panic!("the fuzzing settings are valid: {e}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.signature`, signed with the fixed secret whatever the
/// header says.
fn sign(header: &[u8], claims: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    match jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256) {
        Ok(signature) => format!("{message}.{signature}"),
        Err(e) => panic!("HMAC signing failed: {e}"),
    }
}

/// Input: a mode byte, then
/// - 0: a token as text;
/// - 1: `doc name \0 header JSON \0 claims JSON`, signed with the secret;
/// - 2: `doc name \0 pattern \0 perm • exp offset (i16 LE, minutes) \0 sub`:
///   well-formed claims, signed with the secret.
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = fuzz_auth();
    let mut fields = rest.splitn(4, |&b| b == 0);
    let doc = DocName::parse(&String::from_utf8_lossy(fields.next().unwrap_or_default()))
        .or_else(|_| DocName::parse("doc"));
    let Ok(doc) = doc else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            // A token nobody signed is never accepted.
            assert!(
                auth.authorize(Some(&token), &doc).is_err(),
                "forged {token:?}"
            );
        }
        1 => {
            let header = fields.next().unwrap_or_default();
            let claims = fields.next().unwrap_or_default();
            let token = sign(header, claims);
            let now = tandem::auth::now_secs();
            if let Ok(access) = auth.authorize(Some(&token), &doc) {
                let alg = serde_json::from_slice::<serde_json::Value>(header)
                    .ok()
                    .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
                assert_eq!(alg.as_deref(), Some("HS256"), "accepted another algorithm");
                let claims: Claims = match serde_json::from_slice(claims) {
                    Ok(claims) => claims,
                    Err(e) => panic!("accepted claims that do not parse: {e}"),
                };
                assert!(pattern_matches(&claims.doc, doc.as_str()), "wrong document");
                assert!(claims.exp >= now, "accepted an expired token");
                assert_eq!(access.perm, claims.perm);
                assert_eq!(access.expires_at, Some(claims.exp));
            }
        }
        _ => {
            let pattern = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
            let (perm, offset) = match fields.next().unwrap_or_default() {
                [p, lo, hi, ..] => (*p, i16::from_le_bytes([*lo, *hi])),
                _ => (0, 60),
            };
            let sub = fields
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned());
            let perm = if perm & 1 == 0 {
                Perm::Read
            } else {
                Perm::Write
            };
            // Whole minutes, never 0: the test does not race the clock.
            let offset = if offset == 0 { 1 } else { i64::from(offset) } * 60;
            let now = tandem::auth::now_secs();
            let exp = now.saturating_add_signed(offset);
            let claims = Claims {
                doc: pattern.clone(),
                perm,
                exp,
                sub: sub.clone(),
                name: None,
            };
            let claims = match serde_json::to_vec(&claims) {
                Ok(claims) => claims,
                Err(e) => panic!("claims do not serialize: {e}"),
            };
            let token = sign(br#"{"alg":"HS256","typ":"JWT"}"#, &claims);
            let result = auth.authorize(Some(&token), &doc);
            let should = offset > 0 && pattern_matches(&pattern, doc.as_str());
            assert_eq!(result.is_ok(), should, "{pattern:?} {offset} {result:?}");
            if let Ok(access) = result {
                assert_eq!(access.perm, perm);
                assert_eq!(access.user, sub);
                assert_eq!(access.expires_at, Some(exp));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// webhook_url: the URL check on webhook registration (no DNS).

/// Input: a URL (bytes that are not UTF-8 are replaced).
pub fn webhook_url(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let strict = validate_url(&raw, false);
    let open = validate_url(&raw, true);
    let Ok(normal) = open else {
        assert!(
            strict.is_err(),
            "allowed only when private addresses are refused"
        );
        return;
    };
    assert!(raw.len() <= MAX_URL_LEN);
    let url = match url::Url::parse(&normal) {
        Ok(url) => url,
        Err(e) => panic!("the stored URL {normal:?} does not parse: {e}"),
    };
    assert!(matches!(url.scheme(), "http" | "https"), "{normal:?}");
    assert!(url.host().is_some() && url.username().is_empty() && url.password().is_none());
    // The stored form is checked again on delivery and must not change.
    if normal.len() <= MAX_URL_LEN {
        match validate_url(&normal, true) {
            Ok(again) => assert_eq!(again, normal, "the stored form is not stable"),
            Err(e) => panic!("the stored form {normal:?} is refused: {e}"),
        }
    }
    let ip = ssrf::literal_ip(&url);
    match strict {
        Ok(strict) => {
            assert_eq!(strict, normal);
            assert!(
                !ip.is_some_and(ssrf::is_forbidden),
                "{normal:?} reaches {ip:?}"
            );
            // A host that is an address in disguise was parsed as one.
            if let Some(url::Host::Domain(domain)) = url.host() {
                assert!(
                    domain.parse::<std::net::IpAddr>().is_err(),
                    "{domain:?} is an address"
                );
            }
        }
        Err(_) => assert!(ip.is_some_and(ssrf::is_forbidden), "{normal:?} refused"),
    }
}
