//! Hostile input (SPEC §3, §6): nothing one connection or one request sends
//! can stop the process, stall other rooms, or take memory or CPU out of
//! proportion. Each test sends what an attacker would, from outside, and
//! checks that only the attacker's connection suffers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tandem::auth::{Claims, Perm};
use tandem_crdt::protocol;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use yrs::encoding::write::Write;

const KEY: &str = "hostile-test-admin-key";
const SECRET: &str = "hostile-test-token-secret-of-32-bytes!";

fn bin(bytes: Vec<u8>) -> Message {
    Message::Binary(bytes.into())
}

/// A writer and a reader in `doc` still relay after the attack.
async fn room_still_relays(app: &TestApp, doc: &str) {
    let mut writer = app.client(doc).await;
    let mut reader = app.client(doc).await;
    writer.sync().await;
    reader.sync().await;
    let text = writer.text();
    writer.insert(0, "still here ").await;
    reader.wait_text(&format!("still here {text}")).await;
}

/// An update whose one value nests `depth` arrays.
fn nested_update(depth: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.write_var(1u32); // one client
    u.write_var(1u32); // one block
    u.write_var(7u64); // client id
    u.write_var(0u32); // clock
    u.write_u8(8 | 0b0010_0000); // Any content, keyed in a map
    u.write_var(1u32); // parent: a root type…
    u.write_string("m"); // …named "m"
    u.write_string("k"); // the key
    u.write_var(1u32); // one value
    for _ in 0..depth {
        u.write_u8(117); // an array…
        u.write_var(1u32); // …of one value
    }
    u.write_u8(126); // null
    u.write_var(0u32); // no deletions
    u
}

#[actix_web::test]
async fn an_update_nested_a_million_levels_deep_closes_only_its_connection() {
    let app = spawn_app(&[]).await;
    let mut bystander = app.client("deep").await;
    bystander.sync().await;
    bystander.insert(0, "kept").await;
    let mut attacker = app.client("deep").await;
    attacker.sync().await;
    let frame = protocol::encode_update(&nested_update(1_000_000));
    attacker.ws.send(bin(frame.to_vec())).await.expect("send");
    assert_eq!(attacker.ended().await, close_code(4400));
    room_still_relays(&app, "deep").await;
    app.stop().await;
}

/// An item whose right origin lies left of its left origin, which no Yjs
/// client writes: yrs placed it by the order updates arrived in, so the
/// live document and its reload disagreed (found by fuzzing). The update
/// is refused, the attacker's connection closed, nothing relayed, and the
/// room reloaded from storage holds the document as it was.
#[actix_web::test]
async fn an_update_with_crossed_origins_closes_only_its_connection_and_changes_nothing() {
    let app = spawn_app(&[]).await;
    let mut bystander = app.client("crossed").await;
    bystander.sync().await;
    bystander.insert(0, "abcdefghij").await;
    let writer = bystander.doc.client_id().get();
    let mut u = Vec::new();
    u.write_var(1u32); // one client
    u.write_var(1u32); // one block
    u.write_var(writer + 1); // client id
    u.write_var(0u32); // clock
    u.write_u8(0b1100_0100); // both origins, string content
    u.write_var(writer); // left origin: "g"…
    u.write_var(6u32);
    u.write_var(writer); // …right origin: "d", left of it
    u.write_var(3u32);
    u.write_string("X");
    u.write_var(0u32); // no deletions
    let mut attacker = app.client("crossed").await;
    attacker.sync().await;
    let frame = protocol::encode_update(&u);
    attacker.ws.send(bin(frame.to_vec())).await.expect("send");
    assert_eq!(attacker.ended().await, close_code(4400));
    let mut joiner = app.client("crossed").await;
    joiner.sync().await;
    assert_eq!(joiner.text(), "abcdefghij");
    // The bystander, still connected, was sent nothing of it.
    joiner.insert(0, "still here ").await;
    bystander.wait_text("still here abcdefghij").await;
    app.stop().await;
}

/// A chain of nested maps hanging on the victim's next block, forged: it
/// used to wait in the room until the victim's real block arrived, and then
/// the victim's update was the one found too deep and refused, each time it
/// was sent. Now the chain is refused on arrival.
#[actix_web::test]
async fn types_hanging_on_a_forged_block_are_refused_and_the_real_block_lands() {
    use yrs::updates::decoder::Decode;
    use yrs::{Map, MapPrelim, MapRef, ReadTxn, StateVector, Text, Transact, Update};
    let app = spawn_app(&[]).await;
    let mut victim = app.client("forged").await;
    victim.sync().await;
    victim.insert(0, "ab").await;
    let mut attacker = app.client("forged").await;
    attacker.sync().await;
    attacker.wait_text("ab").await;
    // The victim's next block as the attacker guesses it.
    let forger = yrs::Doc::with_client_id(victim.doc.client_id().get());
    let state = attacker
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    forger
        .transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let forged = {
        let text = forger.get_or_insert_text("t");
        let mut txn = forger.transact_mut();
        text.insert(&mut txn, 2, "z");
        txn.encode_update_v1()
    };
    attacker
        .doc
        .transact_mut()
        .apply_update(Update::decode_v1(&forged).unwrap())
        .unwrap();
    // Maps nested 200 deep after it, sent without the forged block.
    let chain = {
        let text = attacker.doc.get_or_insert_text("t");
        let mut txn = attacker.doc.transact_mut();
        let mut map: MapRef = text.insert_embed(&mut txn, 3, MapPrelim::default());
        for _ in 0..200 {
            map = map.insert(&mut txn, "k", MapPrelim::default());
        }
        txn.encode_update_v1()
    };
    attacker
        .send(protocol::encode_update(&chain).to_vec())
        .await;
    assert_eq!(attacker.ended().await, close_code(4400));
    // The victim's real next block lands and is relayed, both ways.
    victim.insert(2, "c").await;
    let mut joiner = app.client("forged").await;
    joiner.sync().await;
    joiner.wait_text("abc").await;
    joiner.insert(3, "!").await;
    victim.wait_text("abc!").await;
    app.stop().await;
}

#[actix_web::test]
async fn a_frame_packed_with_sync_requests_is_refused_and_other_rooms_keep_relaying() {
    let app = spawn_app(&[]).await;
    let mut writer = app.client("busy").await;
    writer.sync().await;
    writer.insert(0, &"x".repeat(100_000)).await;
    // 200,000 sync step 1 messages, each with another state vector.
    let mut frame = Vec::new();
    for i in 0..200_000u64 {
        let mut sv = Vec::new();
        sv.write_var(1u32);
        sv.write_var(i + 1);
        sv.write_var(1u32);
        frame.extend_from_slice(&protocol::encode_sync_step1(&sv));
    }
    let mut attacker = app.client("busy").await;
    attacker.ws.send(bin(frame)).await.expect("send");
    // Meanwhile another room relays as usual.
    let started = Instant::now();
    room_still_relays(&app, "elsewhere").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another room waited {:?}",
        started.elapsed()
    );
    assert_eq!(attacker.ended().await, close_code(1013));
    room_still_relays(&app, "busy").await;
    app.stop().await;
}

#[actix_web::test]
async fn a_flood_of_pings_is_rate_limited() {
    let app = spawn_app(&[]).await;
    let mut flooder = app.client("pings").await;
    for _ in 0..5_000 {
        flooder
            .ws
            .feed(Message::Ping(vec![1u8; 125].into()))
            .await
            .expect("send");
    }
    flooder.ws.flush().await.expect("flush");
    assert_eq!(flooder.ended().await, close_code(1013));
    room_still_relays(&app, "pings").await;
    app.stop().await;
}

#[actix_web::test]
async fn awareness_past_a_connections_bound_closes_it_with_4413() {
    let app = spawn_app(&[]).await;
    let mut greedy = app.client("presence").await;
    let mut update = Vec::new();
    update.write_var(1000u32);
    for client in 0..1000u64 {
        update.write_var(client);
        update.write_var(1u32);
        update.write_string(r#"{"user":{"name":"x"}}"#);
    }
    greedy
        .send(protocol::encode_awareness(&update).to_vec())
        .await;
    assert_eq!(greedy.ended().await, close_code(4413));
    room_still_relays(&app, "presence").await;
    app.stop().await;
}

fn token(claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signs")
}

#[actix_web::test]
async fn a_token_expiring_past_what_the_clock_holds_works_and_cannot_panic() {
    let app = spawn_app(&["--api-key", KEY, "--token-secret", SECRET]).await;
    let far = token(&Claims {
        doc: "far".into(),
        perm: Perm::Write,
        exp: 10_000_000_000_000_000_000,
        sub: Some("ada".into()),
        name: None,
    });
    let mut client = Client::connect(&format!("{}?token={far}", app.ws_url("far"))).await;
    client.sync().await;
    client.insert(0, "written").await;
    let fine = token(&Claims {
        doc: "far".into(),
        perm: Perm::Read,
        exp: 4_000_000_000,
        sub: None,
        name: None,
    });
    let mut reader = Client::connect(&format!("{}?token={fine}", app.ws_url("far"))).await;
    reader.sync().await;
    reader.wait_text("written").await;
    app.stop().await;
}

#[actix_web::test]
async fn another_user_cannot_move_someone_elses_cursor() {
    let app = spawn_app(&["--api-key", KEY, "--token-secret", SECRET]).await;
    let of = |sub: &str| {
        token(&Claims {
            doc: "cursors".into(),
            perm: Perm::Write,
            exp: 4_000_000_000,
            sub: Some(sub.into()),
            name: None,
        })
    };
    let url = |sub: &str| format!("{}?token={}", app.ws_url("cursors"), of(sub));
    let awareness = |clock: u32, state: &str| {
        let mut u = Vec::new();
        u.write_var(1u32);
        u.write_var(42u64);
        u.write_var(clock);
        u.write_string(state);
        protocol::encode_awareness(&u).to_vec()
    };
    let mut ada = Client::connect(&url("ada")).await;
    ada.sync().await;
    ada.send(awareness(1, r#"{"cursor":1}"#)).await;
    let mut eve = Client::connect(&url("eve")).await;
    eve.sync().await;
    eve.send(awareness(9, r#"{"cursor":666}"#)).await;
    // A marker eve sends afterwards arrives; the takeover before it must not.
    eve.insert(0, "marker").await;
    let mut watcher = Client::connect(&url("watcher")).await;
    watcher.sync().await;
    watcher.wait_text("marker").await;
    ada.wait_text("marker").await;
    let states: Vec<String> = ada
        .awareness
        .iter()
        .chain(watcher.awareness.iter())
        .flat_map(|u| u.entries.iter().map(|e| e.json.to_string()))
        .collect();
    assert!(
        !states.iter().any(|s| s.contains("666")),
        "the takeover was relayed: {states:?}"
    );
    app.stop().await;
}

async fn ws_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[actix_web::test]
async fn dev_mode_refuses_pages_of_other_origins() {
    let app = spawn_app(&["--allowed-origins", "https://app.example.com"]).await;
    let own = format!("http://{}", app.addr);
    let url = app.ws_url("origins");
    assert_eq!(ws_status(&url, Some("http://evil.example")).await, 403);
    assert_eq!(ws_status(&url, Some(&own)).await, 101);
    assert_eq!(ws_status(&url, Some("https://app.example.com")).await, 101);
    assert_eq!(ws_status(&url, None).await, 101);

    let http = reqwest::Client::new();
    let create = |body: &'static str, content_type: &'static str, origin: Option<&str>| {
        let mut req = http
            .post(app.http("/api/docs"))
            .header("content-type", content_type)
            .body(body);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    let form = create(r#"{"id":"csrf"}"#, "text/plain", None)
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let foreign = create(
        r#"{"id":"csrf"}"#,
        "application/json",
        Some("http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(foreign.status(), 403);
    let own_page = create(r#"{"id":"mine"}"#, "application/json", Some(&own))
        .await
        .unwrap();
    assert_eq!(own_page.status(), 201);
    let tool = create(r#"{"id":"tool"}"#, "application/json; charset=utf-8", None)
        .await
        .unwrap();
    assert_eq!(tool.status(), 201);
    let gone = http.get(app.http("/api/docs/csrf")).send().await.unwrap();
    assert_eq!(
        gone.status(),
        404,
        "nothing was created by the refused calls"
    );
    app.stop().await;
}

#[actix_web::test]
async fn with_an_api_key_the_origin_list_still_governs_websockets() {
    let app = spawn_app(&[
        "--api-key",
        KEY,
        "--token-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example.com",
    ])
    .await;
    let t = token(&Claims {
        doc: "o".into(),
        perm: Perm::Write,
        exp: 4_000_000_000,
        sub: None,
        name: None,
    });
    let url = format!("{}?token={t}", app.ws_url("o"));
    assert_eq!(ws_status(&url, Some("http://evil.example")).await, 403);
    assert_eq!(ws_status(&url, Some("https://app.example.com")).await, 101);
    app.stop().await;
}
