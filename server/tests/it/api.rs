//! The HTTP API and access control against the real server (SPEC §3, §4):
//! the admin key, client tokens, read-only clients, expiry, the document
//! API, the JSON rendering, errors, health and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

const KEY: &str = "test-admin-key";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn keyed() -> TestApp {
    spawn_app(&["--api-key", KEY]).await
}

async fn api(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    http().request(method, app.http(path)).bearer_auth(KEY)
}

async fn mint(app: &TestApp, body: Value) -> String {
    mint_with(app, KEY, body).await
}

async fn mint_with(app: &TestApp, key: &str, body: Value) -> String {
    let resp = http()
        .post(app.http("/api/tokens"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["expires_at"].as_u64().unwrap() > 0);
    v["token"].as_str().unwrap().to_string()
}

/// Tries a WebSocket connection; returns the HTTP status of a refusal, or 101.
async fn ws_status(url: &str, bearer: Option<&str>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            let v: Value = serde_json::from_str(&body).expect("JSON error body");
            assert!(v["error"]["code"].is_string(), "{body}");
            resp.status().as_u16()
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn update_with_text(s: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

fn text_of_update(update: &[u8]) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    let txn = doc.transact();
    text.get_string(&txn)
}

#[actix_web::test]
async fn the_api_needs_the_key_and_operations_routes_do_not() {
    let app = keyed().await;
    let r = http().get(app.http("/api/docs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = http()
        .get(app.http("/api/docs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = api(&app, reqwest::Method::GET, "/api/docs")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http().get(app.http(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
    // Unknown API paths are 401 without the key, JSON 404 with it.
    let r = api(&app, reqwest::Method::GET, "/api/nope")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[actix_web::test]
async fn tokens_decide_who_connects_before_the_upgrade() {
    let app = keyed().await;
    let exact = mint(&app, json!({"doc": "notes", "perm": "write"})).await;
    let prefix = mint(&app, json!({"doc": "team:*", "perm": "read"})).await;
    let url = |doc: &str, token: Option<&str>| match token {
        Some(t) => format!("{}?token={t}", app.ws_url(doc)),
        None => app.ws_url(doc),
    };
    assert_eq!(ws_status(&url("notes", None), None).await, 401, "missing");
    assert_eq!(
        ws_status(&url("notes", Some("not.a.jwt")), None).await,
        401,
        "invalid"
    );
    assert_eq!(
        ws_status(&url("notes", Some(&exact)), None).await,
        101,
        "exact"
    );
    assert_eq!(
        ws_status(&app.ws_url("notes"), Some(&exact)).await,
        101,
        "bearer header"
    );
    assert_eq!(
        ws_status(&url("notes2", Some(&exact)), None).await,
        403,
        "exact is not a prefix"
    );
    assert_eq!(
        ws_status(&url("team:x", Some(&prefix)), None).await,
        101,
        "prefix"
    );
    assert_eq!(
        ws_status(&url("teamx", Some(&prefix)), None).await,
        403,
        "prefix needs its colon"
    );

    // Signed with another secret.
    let other = spawn_app(&["--api-key", "another-key"]).await;
    let foreign = mint_with(
        &other,
        "another-key",
        json!({"doc": "notes", "perm": "write"}),
    )
    .await;
    assert_eq!(
        ws_status(&url("notes", Some(&foreign)), None).await,
        401,
        "wrong secret"
    );
    other.stop().await;

    // Expired.
    let claims = json!({"doc": "notes", "perm": "write", "exp": tandem::auth::now_secs() - 5});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        ws_status(&url("notes", Some(&expired)), None).await,
        401,
        "expired"
    );

    // Token requests are checked.
    for bad in [
        json!({"doc": "a b", "perm": "write"}),
        json!({"doc": "x", "perm": "admin"}),
        json!({"doc": "x", "perm": "read", "ttl_secs": 0}),
        json!({"perm": "read"}),
    ] {
        let r = api(&app, reqwest::Method::POST, "/api/tokens")
            .await
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string());
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_read_only_client_syncs_but_its_updates_go_nowhere() {
    let app = keyed().await;
    let write = mint(&app, json!({"doc": "ro", "perm": "write"})).await;
    let read = mint(&app, json!({"doc": "ro", "perm": "read"})).await;
    let mut writer = Client::connect(&format!("{}?token={write}", app.ws_url("ro"))).await;
    let mut reader = Client::connect(&format!("{}?token={read}", app.ws_url("ro"))).await;
    writer.sync().await;
    reader.sync().await;
    writer.insert(0, "from the writer").await;
    reader.wait_text("from the writer").await;
    // The reader's edit must reach neither peers nor storage: a third
    // client sees the writer's next edit and nothing of the reader's.
    reader.insert(0, "FORBIDDEN ").await;
    writer.insert(15, "!").await;
    let mut observer = Client::connect(&format!("{}?token={write}", app.ws_url("ro"))).await;
    observer.sync().await;
    observer.wait_text("from the writer!").await;
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &["--api-key", KEY]).await;
    let r = api(&app, reqwest::Method::GET, "/api/docs/ro/update")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(
        text_of_update(&r.bytes().await.unwrap()),
        "from the writer!"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_connection_closes_with_4401_when_its_token_expires() {
    let app = keyed().await;
    let token = mint(&app, json!({"doc": "exp", "perm": "write", "ttl_secs": 2})).await;
    let mut c = Client::connect(&format!("{}?token={token}", app.ws_url("exp"))).await;
    c.sync().await;
    let started = std::time::Instant::now();
    assert_eq!(c.ended().await, close_code(4401));
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_millis(2500),
        "closed after {waited:?}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn documents_are_created_listed_read_and_deleted() {
    let app = keyed().await;
    let r = api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["id"], "alpha");
    assert_eq!(created["size_bytes"], 0);
    let r = api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let generated: Value = r.json().await.unwrap();
    assert!(!generated["id"].as_str().unwrap().is_empty());
    let r = api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "bad name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = api(&app, reqwest::Method::GET, "/api/docs/alpha")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let meta: Value = r.json().await.unwrap();
    for field in ["id", "created_at", "updated_at", "size_bytes", "clients"] {
        assert!(!meta[field].is_null(), "{field} in {meta}");
    }
    assert_eq!(
        api(&app, reqwest::Method::GET, "/api/docs/missing")
            .await
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = api(&app, reqwest::Method::GET, "/api/docs/a%20b")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_document_name");

    // Live clients are counted.
    let token = mint(&app, json!({"doc": "alpha", "perm": "write"})).await;
    let mut c = Client::connect(&format!("{}?token={token}", app.ws_url("alpha"))).await;
    c.sync().await;
    c.insert(0, "alpha text").await;
    let meta: Value = api(&app, reqwest::Method::GET, "/api/docs/alpha")
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["clients"], 1);

    // Delete closes the socket with 4404, and a restart does not bring it back.
    let r = api(&app, reqwest::Method::DELETE, "/api/docs/alpha")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.ended().await, close_code(4404));
    assert_eq!(
        api(&app, reqwest::Method::GET, "/api/docs/alpha")
            .await
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        api(&app, reqwest::Method::DELETE, "/api/docs/alpha")
            .await
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &["--api-key", KEY]).await;
    assert_eq!(
        api(&app, reqwest::Method::GET, "/api/docs/alpha")
            .await
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The name can be used again, and starts empty.
    let token = mint(&app, json!({"doc": "alpha", "perm": "write"})).await;
    let mut again = Client::connect(&format!("{}?token={token}", app.ws_url("alpha"))).await;
    again.sync().await;
    assert_eq!(again.text(), "");
    app.stop().await;
}

#[actix_web::test]
async fn pagination_visits_every_document_exactly_once_while_documents_are_added() {
    let app = keyed().await;
    for i in 0..30 {
        let r = api(&app, reqwest::Method::POST, "/api/docs")
            .await
            .json(&json!({"id": format!("p-{i:03}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "other"}))
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let mut path = "/api/docs?prefix=p-&limit=7".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = api(&app, reqwest::Method::GET, &path)
            .await
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        // Documents created while paging: one before the cursor, one after.
        if added < 3 {
            for id in [format!("p-000-{added}"), format!("p-999-{added}")] {
                api(&app, reqwest::Method::POST, "/api/docs")
                    .await
                    .json(&json!({"id": id}))
                    .send()
                    .await
                    .unwrap();
            }
            added += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no document twice: {seen:?}");
    for i in 0..30 {
        assert!(unique.contains(&format!("p-{i:03}")), "p-{i:03} missing");
    }
    for added in 0..3 {
        assert!(
            unique.contains(&format!("p-999-{added}")),
            "documents added ahead of the cursor are listed"
        );
    }
    assert!(!unique.contains(&"other".to_string()));
    let r = api(&app, reqwest::Method::GET, "/api/docs?cursor=%%%")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = api(&app, reqwest::Method::GET, "/api/docs?limit=0")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[actix_web::test]
async fn updates_go_in_and_out_over_http_and_reach_live_clients() {
    let app = keyed().await;
    api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "u"}))
        .send()
        .await
        .unwrap();
    let token = mint(&app, json!({"doc": "u", "perm": "write"})).await;
    let mut live = Client::connect(&format!("{}?token={token}", app.ws_url("u"))).await;
    live.sync().await;

    let update = update_with_text("over http");
    let r = api(&app, reqwest::Method::POST, "/api/docs/u/update")
        .await
        .body(update.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    live.wait_text("over http").await;

    // The whole document, then the diff against a state vector.
    let all = api(&app, reqwest::Method::GET, "/api/docs/u/update")
        .await
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(text_of_update(&all), "over http");
    let sv = live.doc.transact().state_vector().encode_v1();
    let sv = base64::engine::general_purpose::STANDARD.encode(sv);
    let path = format!("/api/docs/u/update?sv={}", urlencode(&sv));
    let diff = api(&app, reqwest::Method::GET, &path)
        .await
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let update = Update::decode_v1(&diff).unwrap();
    assert!(
        update.state_vector().is_empty(),
        "nothing new for an up-to-date client"
    );

    // Malformed input is refused and changes nothing.
    let r = api(&app, reqwest::Method::POST, "/api/docs/u/update")
        .await
        .body(vec![1, 2, 3, 250])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = api(&app, reqwest::Method::GET, "/api/docs/u/update?sv=@@@")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = api(&app, reqwest::Method::POST, "/api/docs/missing/update")
        .await
        .body(update_with_text("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api(&app, reqwest::Method::POST, "/api/docs/u/update")
        .await
        .body(vec![0u8; (16 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let after = api(&app, reqwest::Method::GET, "/api/docs/u/update")
        .await
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(text_of_update(&after), "over http");
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[actix_web::test]
async fn json_renders_each_root_type() {
    let app = keyed().await;
    api(&app, reqwest::Method::POST, "/api/docs")
        .await
        .json(&json!({"id": "j"}))
        .send()
        .await
        .unwrap();
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("title").insert(&mut txn, 0, "Hello");
        let map = txn.get_or_insert_map("meta");
        map.insert(&mut txn, "stars", 5);
        map.insert(&mut txn, "tags", vec!["x"]);
        let list = txn.get_or_insert_array("items");
        list.push_back(&mut txn, "one");
        list.push_back(&mut txn, 2);
        let xml = txn.get_or_insert_xml_fragment("body");
        use yrs::{XmlElementPrelim, XmlFragment, XmlTextPrelim};
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.push_back(&mut txn, XmlTextPrelim::new("para"));
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let r = api(&app, reqwest::Method::POST, "/api/docs/j/update")
        .await
        .body(update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = api(&app, reqwest::Method::GET, "/api/docs/j/json")
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"title": "Hello", "meta": {"stars": 5, "tags": ["x"]}, "items": ["one", 2], "body": "<p>para</p>"})
    );
    app.stop().await;
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("m").await;
    a.sync().await;
    a.insert(0, "x").await;
    let mut b = app.client("m").await;
    b.sync().await;
    a.insert(1, "y").await;
    b.wait_text("xy").await;
    // The recorder is process-wide (other tests in this binary add to it), so
    // check that the values moved, not exact counts.
    let text = http()
        .get(app.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(value("tandem_connections") >= 2.0);
    assert!(value("tandem_rooms_loaded") >= 1.0);
    assert!(value("tandem_updates_received_total") >= 2.0, "{text}");
    assert!(value("tandem_update_bytes_received_total") >= 2.0);
    assert!(value("tandem_frames_relayed_total") >= 1.0);
    assert!(value("tandem_relayed_bytes_total") >= 1.0);
    assert!(value("tandem_persist_seconds_count") >= 1.0);
    assert!(text.contains("tandem_persist_backlog_updates"));
    assert!(text.contains("tandem_clients_dropped_total"));
    app.stop().await;
}
