//! History and versions (SPEC §9) against the real server and database
//! (SQLite, or PostgreSQL with `TANDEM_TEST_BACKEND=postgres`): versions
//! rendered exactly after later edits, deletions, compaction and restarts;
//! automatic versions and their authors; restore seen live and durable;
//! the diff with its authors; retention; 404s; the webhook fields.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed call is the failure

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{spawn_app, spawn_app_in, Client, TestApp, WAIT};
use serde_json::{json, Value};
use tandem::store::{PageLimits, Store};
use tandem_crdt::protocol;
use yrs::{Text, Transact};

const KEY: &str = "history-test-key";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, app.http(path)).bearer_auth(KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    api(app, reqwest::Method::GET, path, None).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    api(app, reqwest::Method::POST, path, Some(body)).await
}

async fn token(app: &TestApp, doc: &str, sub: &str, perm: &str) -> String {
    let (status, body) = post(
        app,
        "/api/tokens",
        json!({"doc": doc, "perm": perm, "sub": sub}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// A synced client of `doc` writing as `sub`.
async fn writer(app: &TestApp, doc: &str, sub: &str) -> Client {
    let token = token(app, doc, sub, "write").await;
    let mut c = Client::connect(&format!("{}?token={token}", app.ws_url(doc))).await;
    c.sync().await;
    c
}

/// Deletes `len` characters of the client's text at `at` and sends it.
async fn delete(c: &mut Client, at: u32, len: u32) {
    let update = {
        let text = c.doc.get_or_insert_text("t");
        let mut txn = c.doc.transact_mut();
        text.remove_range(&mut txn, at, len);
        txn.encode_update_v1()
    };
    c.send(protocol::encode_update(&update).to_vec()).await;
}

/// Waits until the server's JSON of `doc` has text `t` equal to `expected`
/// (the updates a client sent have reached the room).
async fn wait_server_text(app: &TestApp, doc: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = get(app, &format!("/api/docs/{doc}/json")).await;
        if body["t"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server text is {body}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn named(app: &TestApp, doc: &str, name: &str) -> String {
    let (status, v) = post(
        app,
        &format!("/api/docs/{doc}/versions"),
        json!({"name": name}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["kind"], "named");
    assert_eq!(v["name"], name);
    v["id"].as_str().unwrap().to_string()
}

async fn text_at(app: &TestApp, doc: &str, version: &str) -> Value {
    let (status, body) = get(app, &format!("/api/docs/{doc}/json?version={version}")).await;
    assert_eq!(status, 200, "{body}");
    body["t"].clone()
}

/// The binary form renders the same text as the JSON one.
async fn binary_text_at(app: &TestApp, doc: &str, version: &str) -> String {
    let res = http()
        .get(app.http(&format!("/api/docs/{doc}/update?version={version}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.bytes().await.unwrap();
    let (state, _) = tandem_crdt::DocState::load(None, [bytes.as_ref()]).unwrap();
    state.to_json()["t"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Folds the whole log of `doc` as the compactor does, with history.
async fn compact(app: &TestApp, doc: &str) {
    let store: Arc<dyn Store> = tandem::store::open(&app.db_url).await.unwrap();
    let meta = store.get(doc).await.unwrap().unwrap();
    tandem::persist::compactor::compact_document(&store, meta.id, PageLimits::rows(3), true)
        .await
        .unwrap();
    let log = store.read_log(meta.id).await.unwrap();
    assert!(log.updates.is_empty(), "the log was folded");
    store.close().await;
}

#[actix_web::test]
async fn versions_render_the_document_as_it_was_through_later_edits_deletions_compaction_and_restarts(
) {
    let app = spawn_app(&["--api-key", KEY, "--history-interval", "1h"]).await;
    let doc = "story";
    let mut ada = writer(&app, doc, "ada").await;
    ada.insert(0, "Hello").await;
    ada.insert(5, " brave new").await;
    wait_server_text(&app, doc, "Hello brave new").await;
    let v1 = named(&app, doc, "first draft").await;

    delete(&mut ada, 5, 6).await; // "Hello new"
    ada.insert(9, " world").await;
    wait_server_text(&app, doc, "Hello new world").await;
    let v2 = named(&app, doc, "second").await;

    // Much later editing, deleting most of what the versions hold.
    for i in 0..40 {
        ada.insert(0, &format!("{i};")).await;
    }
    let len = u32::try_from(ada.text().chars().count()).unwrap();
    delete(&mut ada, 0, len - 3).await;
    let last = ada.text();
    wait_server_text(&app, doc, &last).await;
    assert_eq!(text_at(&app, doc, &v1).await, "Hello brave new");
    assert_eq!(text_at(&app, doc, &v2).await, "Hello new world");

    // Compaction folds every row the versions point into.
    compact(&app, doc).await;
    assert_eq!(text_at(&app, doc, &v1).await, "Hello brave new");
    assert_eq!(binary_text_at(&app, doc, &v1).await, "Hello brave new");
    assert_eq!(text_at(&app, doc, &v2).await, "Hello new world");

    // More edits after compaction, a third version, a restart.
    ada.insert(0, ">").await;
    wait_server_text(&app, doc, &format!(">{last}")).await;
    let v3 = named(&app, doc, "third").await;
    drop(ada);
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &["--api-key", KEY, "--history-interval", "1h"]).await;
    assert_eq!(text_at(&app, doc, &v1).await, "Hello brave new");
    assert_eq!(text_at(&app, doc, &v2).await, "Hello new world");
    assert_eq!(text_at(&app, doc, &v3).await, format!(">{last}"));

    let (status, list) = get(&app, &format!("/api/docs/{doc}/versions")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![v3.as_str(), v2.as_str(), v1.as_str()],
        "newest first: {list}"
    );
    assert_eq!(list["items"][2]["authors"], json!(["ada"]));
    assert_eq!(
        list["items"][2]["created_by"],
        Value::Null,
        "made with the API key"
    );

    // Paged with the cursor.
    let (_, page) = get(&app, &format!("/api/docs/{doc}/versions?limit=2")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/docs/{doc}/versions?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["items"][0]["id"], v1.as_str());
    assert_eq!(rest["next_cursor"], Value::Null);

    // Versions store only the deletions the one before lacks: deleting v2
    // (which deleted "brave ") hands its deletions on, and the versions
    // after it still render exactly.
    compact(&app, doc).await;
    let (status, _) = api(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/docs/{doc}/versions/{v2}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(text_at(&app, doc, &v1).await, "Hello brave new");
    assert_eq!(text_at(&app, doc, &v3).await, format!(">{last}"));
    let (status, diff) = get(&app, &format!("/api/docs/{doc}/diff?from={v1}&to={v3}")).await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(diff["roots"]["t"]["after"], format!(">{last}"));
}

#[actix_web::test]
async fn an_automatic_version_closes_its_window_with_the_last_edit_and_lists_its_authors() {
    let app = spawn_app(&["--api-key", KEY, "--history-interval", "1s"]).await;
    let doc = "auto";
    let mut ada = writer(&app, doc, "ada").await;
    let mut bob = writer(&app, doc, "bob").await;
    ada.insert(0, "a").await;
    bob.wait_text("a").await;
    bob.insert(1, "b").await;
    ada.wait_text("ab").await;
    ada.insert(2, "c").await;
    wait_server_text(&app, doc, "abc").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let version = loop {
        let (_, list) = get(&app, &format!("/api/docs/{doc}/versions?kind=auto")).await;
        if let Some(v) = list["items"].as_array().unwrap().first() {
            break v.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no automatic version"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(version["kind"], "auto");
    assert_eq!(version["name"], Value::Null);
    assert_eq!(version["authors"], json!(["ada", "bob"]));
    let id = version["id"].as_str().unwrap();
    assert_eq!(
        text_at(&app, doc, id).await,
        "abc",
        "the state after the window's last edit"
    );

    // Quiet: no further automatic version.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, list) = get(&app, &format!("/api/docs/{doc}/versions")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // Renaming an automatic version makes it named.
    let (status, renamed) = api(
        &app,
        reqwest::Method::PATCH,
        &format!("/api/docs/{doc}/versions/{id}"),
        Some(json!({"name": "keep me"})),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["kind"], "named");
    assert_eq!(renamed["name"], "keep me");
}

#[actix_web::test]
async fn restore_is_relayed_live_durable_attributed_and_made_into_versions() {
    let app = spawn_app(&["--api-key", KEY, "--history-interval", "1h"]).await;
    let doc = "restore-me";
    let mut ada = writer(&app, doc, "ada").await;
    let mut watcher = writer(&app, doc, "watcher").await;
    ada.insert(0, "The original text.").await;
    watcher.wait_text("The original text.").await;
    let v1 = named(&app, doc, "good").await;
    delete(&mut ada, 4, 8).await;
    ada.insert(4, "vandalised").await;
    watcher.wait_text("The vandalised text.").await;

    let grace = token(&app, doc, "grace", "write").await;
    let res = http()
        .post(app.http(&format!("/api/docs/{doc}/versions/{v1}/restore")))
        .bearer_auth(&grace)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let restored: Value = res.json().await.unwrap();
    assert_eq!(restored["kind"], "restore");
    assert_eq!(restored["restored_from"], v1.as_str());
    assert_eq!(restored["created_by"], "grace");
    assert!(restored["authors"]
        .as_array()
        .unwrap()
        .contains(&json!("grace")));

    // Seen live by both connections, which never reconnected.
    watcher.wait_text("The original text.").await;
    ada.wait_text("The original text.").await;
    // And they can go on editing together.
    watcher.insert(0, ">").await;
    ada.wait_text(">The original text.").await;

    // A version of the state before the restore came first.
    let (_, list) = get(&app, &format!("/api/docs/{doc}/versions")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], restored["id"]);
    assert_eq!(items[1]["kind"], "auto");
    let before = items[1]["id"].as_str().unwrap();
    assert_eq!(text_at(&app, doc, before).await, "The vandalised text.");

    // Read-only tokens may look but not restore.
    let reader = token(&app, doc, "rita", "read").await;
    let res = http()
        .post(app.http(&format!("/api/docs/{doc}/versions/{v1}/restore")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = http()
        .get(app.http(&format!("/api/docs/{doc}/versions")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A token for another document may not even look.
    let other = token(&app, "elsewhere", "mallory", "write").await;
    let res = http()
        .get(app.http(&format!("/api/docs/{doc}/versions")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Durable: a restart serves the restored text.
    wait_server_text(&app, doc, ">The original text.").await;
    drop((ada, watcher));
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &["--api-key", KEY]).await;
    let mut late = writer(&app, doc, "late").await;
    late.wait_text(">The original text.").await;
}

#[actix_web::test]
async fn the_diff_says_what_changed_and_who_wrote_and_deleted_it() {
    let app = spawn_app(&["--api-key", KEY, "--history-interval", "1h"]).await;
    let doc = "diffed";
    let mut ada = writer(&app, doc, "ada").await;
    ada.insert(0, "keep drop").await;
    wait_server_text(&app, doc, "keep drop").await;
    let v1 = named(&app, doc, "before").await;
    let mut bob = writer(&app, doc, "bob").await;
    delete(&mut bob, 4, 5).await; // " drop"
    bob.insert(4, " add").await;
    wait_server_text(&app, doc, "keep add").await;

    let (status, diff) = get(&app, &format!("/api/docs/{doc}/diff?from={v1}&to=current")).await;
    assert_eq!(status, 200, "{diff}");
    let t = &diff["roots"]["t"];
    assert_eq!(t["type"], "text");
    assert_eq!(t["before"], "keep drop");
    assert_eq!(t["after"], "keep add");
    let spans = t["spans"].as_array().unwrap();
    let find = |change: &str| -> Vec<(String, Value)> {
        spans
            .iter()
            .filter(|s| s["change"] == change)
            .map(|s| (s["text"].as_str().unwrap().to_string(), s["by"].clone()))
            .collect()
    };
    assert_eq!(
        find("unchanged"),
        vec![("keep".to_string(), json!("ada"))],
        "{diff}"
    );
    assert_eq!(
        find("deleted"),
        vec![(" drop".to_string(), json!("bob"))],
        "{diff}"
    );
    assert_eq!(
        find("inserted"),
        vec![(" add".to_string(), json!("bob"))],
        "{diff}"
    );

    // Between two versions, after compaction, the same.
    let v2 = named(&app, doc, "after").await;
    compact(&app, doc).await;
    let (status, again) = get(&app, &format!("/api/docs/{doc}/diff?from={v1}&to={v2}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["roots"]["t"], diff["roots"]["t"]);
}

#[actix_web::test]
async fn unknown_versions_are_404() {
    let app = spawn_app(&["--api-key", KEY]).await;
    let mut ada = writer(&app, "known", "ada").await;
    ada.insert(0, "x").await;
    wait_server_text(&app, "known", "x").await;
    let v = named(&app, "known", "v").await;
    let mut other = writer(&app, "other", "ada").await;
    other.insert(0, "y").await;
    wait_server_text(&app, "other", "y").await;
    for path in [
        "/api/docs/known/versions/999999".to_string(),
        "/api/docs/known/versions/abc".to_string(),
        "/api/docs/known/versions/-1".to_string(),
        "/api/docs/known/json?version=999999".to_string(),
        "/api/docs/known/update?version=nope".to_string(),
        "/api/docs/known/diff?from=999999".to_string(),
        format!("/api/docs/known/diff?from={v}&to=999999"),
        format!("/api/docs/other/versions/{v}"), // another document's version
        format!("/api/docs/other/json?version={v}"),
        format!("/api/docs/missing/versions/{v}"),
        "/api/docs/missing/versions".to_string(),
    ] {
        let (status, body) = get(&app, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let (status, _) = post(&app, "/api/docs/known/versions/999999/restore", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = api(
        &app,
        reqwest::Method::DELETE,
        "/api/docs/known/versions/999999",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = post(&app, "/api/docs/known/versions", json!({"name": ""})).await;
    assert_eq!(status, 400, "{body}");
    // Deleting a version, then it is gone.
    let (status, _) = api(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/docs/known/versions/{v}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = get(&app, &format!("/api/docs/known/versions/{v}")).await;
    assert_eq!(status, 404);
    // Deleting the document deletes its history: a document made again
    // under the name starts with none, and the old ids are unknown.
    let keep = named(&app, "known", "kept until the document goes").await;
    drop(ada);
    let (status, _) = api(&app, reqwest::Method::DELETE, "/api/docs/known", None).await;
    assert_eq!(status, 204);
    let (status, _) = post(&app, "/api/docs", json!({"id": "known"})).await;
    assert_eq!(status, 201);
    let (status, list) = get(&app, "/api/docs/known/versions").await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([]));
    let (status, _) = get(&app, &format!("/api/docs/known/versions/{keep}")).await;
    assert_eq!(status, 404);
    let (rows, _) =
        common::query_pair(&app.db_url, "SELECT COUNT(*), COUNT(*) FROM doc_versions").await;
    assert_eq!(rows, 0, "no version row is left behind");
    // Without the key or a token: 401.
    let res = http()
        .get(app.http("/api/docs/known/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[actix_web::test]
async fn retention_removes_old_automatic_versions_keeps_named_ones_and_reclaims_history() {
    let app = spawn_app(&[
        "--api-key",
        KEY,
        "--history-interval",
        "1s",
        "--history-retention",
        "3s",
    ])
    .await;
    let doc = "retained";
    let mut ada = writer(&app, doc, "ada").await;
    let big = "x".repeat(20_000);
    ada.insert(0, &big).await;
    wait_server_text(&app, doc, &big).await;
    let keep = named(&app, doc, "keep").await;
    delete(&mut ada, 0, 20_000).await;
    ada.insert(0, "small").await;
    wait_server_text(&app, doc, "small").await;
    // An automatic version appears...
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, list) = get(&app, &format!("/api/docs/{doc}/versions?kind=auto")).await;
        if !list["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no automatic version"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    compact(&app, doc).await;
    // ...and is gone after the retention; the named one stays and renders.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, list) = get(&app, &format!("/api/docs/{doc}/versions?kind=auto")).await;
        if list["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "automatic versions were not removed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(text_at(&app, doc, &keep).await, big.as_str());
    // Deleting the named version leaves no version needing the deleted
    // 20,000 characters: the next round of retention forgets them.
    let store: Arc<dyn Store> = tandem::store::open(&app.db_url).await.unwrap();
    let meta = store.get(doc).await.unwrap().unwrap();
    let base_len = |log: &tandem::store::DocLog| {
        log.history
            .as_ref()
            .and_then(|h| h.base.as_ref())
            .map_or(0, Vec::len)
    };
    let before = base_len(&store.read_history(meta.id, Some(0)).await.unwrap());
    assert!(
        before > 20_000,
        "the base keeps the deleted text while a version needs it: {before}"
    );
    let (status, _) = api(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/docs/{doc}/versions/{keep}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    tandem::history::reclaim(&store, meta.id).await.unwrap();
    let after = base_len(&store.read_history(meta.id, Some(0)).await.unwrap());
    assert!(
        after < 1_000,
        "history shrank from {before} to {after} bytes"
    );
    store.close().await;
}

#[actix_web::test]
async fn document_updated_carries_its_window_version_and_a_restore_announces_itself() {
    let app = spawn_app(&[
        "--api-key",
        KEY,
        "--history-interval",
        "1s",
        "--webhook-debounce",
        "1s",
        "--webhook-max-wait",
        "1s",
        "--webhook-allow-private",
    ])
    .await;
    // An endpoint nobody answers: the messages stay in the outbox to read.
    let (status, body) = post(
        &app,
        "/api/webhooks",
        json!({"url": "http://127.0.0.1:9/hook", "events": ["document.updated", "document.restored"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let endpoint = body["id"].as_str().unwrap().to_string();
    let doc = "announced";
    let mut ada = writer(&app, doc, "ada").await;
    ada.insert(0, "one two").await;
    wait_server_text(&app, doc, "one two").await;

    // What the endpoint was sent (or will be), from its delivery log.
    let payloads = || async {
        let (status, list) = get(
            &app,
            &format!("/api/webhooks/{endpoint}/deliveries?limit=100"),
        )
        .await;
        assert_eq!(status, 200, "{list}");
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["payload"].clone())
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let updated = loop {
        let found = payloads()
            .await
            .into_iter()
            .find(|p| p["type"] == "document.updated" && p["data"]["version"].is_string());
        if let Some(p) = found {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no document.updated with a version"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let version = updated["data"]["version"].as_str().unwrap();
    let (status, v) = get(&app, &format!("/api/docs/{doc}/versions/{version}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["kind"], "auto");
    assert_eq!(text_at(&app, doc, version).await, "one two");
    assert_eq!(updated["data"]["users"], json!(["ada"]));

    let v1 = named(&app, doc, "one").await;
    ada.insert(7, " three").await;
    wait_server_text(&app, doc, "one two three").await;
    let (status, restored) = post(
        &app,
        &format!("/api/docs/{doc}/versions/{v1}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{restored}");
    let found = payloads()
        .await
        .into_iter()
        .find(|p| p["type"] == "document.restored")
        .expect("document.restored was written with the restore");
    assert_eq!(found["data"]["doc"], doc);
    assert_eq!(found["data"]["version"], restored["id"]);
    assert_eq!(found["data"]["restored_from"], v1.as_str());
}

/// Thinning looks at old automatic versions a page at a time, and the
/// versions it keeps do not stop it: with pages of 4, ten kept versions
/// come before the three that must go.
#[actix_web::test]
async fn retention_pages_past_the_versions_it_keeps() {
    use tandem::store::{NewVersion, VersionFilter, VersionKind};
    let (_dir, store) = common::test_store().await;
    let doc = store.create("thinned", 1, None).await.unwrap().unwrap();
    let hour = 3_600_000;
    let now = 100 * 24 * hour;
    let two_days_ago = now - 48 * hour;
    let auto = NewVersion {
        kind: VersionKind::Auto,
        name: None,
        created_by: None,
        restored_from: None,
    };
    // One an hour (kept), then four in one hour (the newest kept).
    let mut times: Vec<i64> = (0..10).map(|h| two_days_ago + h * hour).collect();
    times.extend((0..4).map(|m| two_days_ago + 20 * hour + m * 60_000));
    for at in times {
        store.create_version(doc.id, &auto, at, None).await.unwrap();
    }
    let left = |store: Arc<dyn Store>| async move {
        let filter = VersionFilter {
            kind: None,
            before: None,
            limit: 100,
        };
        store.list_versions(doc.id, filter).await.unwrap().len()
    };
    assert_eq!(left(Arc::clone(&store)).await, 14);
    tandem::history::retain_in_pages(&store, Duration::from_secs(30 * 86_400), now, 4)
        .await
        .unwrap();
    assert_eq!(
        left(Arc::clone(&store)).await,
        11,
        "three of the four in one hour went"
    );
    store.close().await;
}

/// History's cost on a real editing trace, through the store and the
/// compactor as the server runs them: `automerge-paper` replayed as one
/// logged update per transaction, a named version every 1,000, then folded.
/// Prints the stored bytes (serving snapshot, history base, version links,
/// attribution) beside the final document and the trace's own no-GC
/// encoding, and the time to read the middle version and to build the
/// update restoring it. Run:
/// `cargo test --release -p tandem --test history -- --ignored --nocapture cost`
/// (`TANDEM_TEST_BACKEND=postgres` for PostgreSQL).
#[actix_web::test]
#[ignore = "replays a 260,000-transaction trace; prints measurements"]
async fn history_cost_on_the_automerge_paper_trace() {
    use std::io::Read as _;
    use std::time::Instant;
    use tandem::store::{NewVersion, PendingUpdate, Track, VersionKind};
    use yrs::{GetString, ReadTxn, StateVector};

    let mut raw = String::new();
    let file =
        std::fs::File::open("/work/shared/traces/automerge-paper.json.gz").expect("the trace");
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut raw)
        .unwrap();
    let trace: Value = serde_json::from_str(&raw).unwrap();
    let txns = trace["txns"].as_array().unwrap();

    let (_dir, store) = common::test_store().await;
    let doc = store.create("paper", 1, None).await.unwrap().unwrap();
    let client = yrs::Doc::with_options(yrs::Options {
        skip_gc: true,
        ..Default::default()
    });
    let text = client.get_or_insert_text("text");
    let mut log = store.log_writer().unwrap();
    let user: Arc<str> = Arc::from("author");
    let mut versions = Vec::new();
    let mut batch = Vec::new();
    let started = Instant::now();
    for (i, t) in txns.iter().enumerate() {
        let mut txn = client.transact_mut();
        for patch in t["patches"].as_array().unwrap() {
            let at = u32::try_from(patch[0].as_u64().unwrap()).unwrap();
            let delete = u32::try_from(patch[1].as_u64().unwrap()).unwrap();
            if delete > 0 {
                text.remove_range(&mut txn, at, delete);
            }
            let insert = patch[2].as_str().unwrap();
            if !insert.is_empty() {
                text.insert(&mut txn, at, insert);
            }
        }
        batch.push(PendingUpdate {
            doc_id: doc.id,
            data: bytes::Bytes::from(txn.encode_update_v1()),
            user: Some(Arc::clone(&user)),
        });
        drop(txn);
        if (i + 1) % 1000 == 0 || i + 1 == txns.len() {
            log.append(&batch, Track::Nothing).unwrap();
            batch.clear();
            log.sync().unwrap();
        }
        if (i + 1) % 1000 == 0 {
            let new = NewVersion {
                kind: VersionKind::Named,
                name: Some(format!("{}", i + 1)),
                created_by: None,
                restored_from: None,
            };
            versions.push(
                store
                    .create_version(doc.id, &new, 1, None)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
    }
    let replayed = started.elapsed();
    let started = Instant::now();
    tandem::persist::compactor::compact_document(
        &store,
        doc.id,
        PageLimits {
            rows: 50_000,
            bytes: 64 << 20,
        },
        true,
    )
    .await
    .unwrap();
    let compacted = started.elapsed();

    let stored = store.read_history(doc.id, Some(i64::MIN)).await.unwrap();
    let history = stored.history.as_ref().unwrap();
    let serving = stored.snapshot.as_ref().map_or(0, Vec::len);
    let base = history.base.as_ref().map_or(0, Vec::len);
    let attribution = history.attribution.as_ref().map_or(0, Vec::len);
    let all = store.read_history(doc.id, None).await.unwrap();
    let links: usize = all
        .history
        .as_ref()
        .unwrap()
        .links
        .iter()
        .map(|(_, _, l)| l.len())
        .sum();
    let no_gc = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len();
    let (final_doc, _) = tandem_crdt::DocState::load(stored.snapshot.as_deref(), []).unwrap();
    let final_len = final_doc.encode_state().len();
    assert_eq!(
        final_doc.to_json()["text"],
        trace["endContent"],
        "the serving snapshot holds the trace's end"
    );
    let history_total = base + links + attribution;

    let middle = store
        .get_version(doc.id, versions[versions.len() / 2].id)
        .await
        .unwrap()
        .unwrap();
    let mut reads = Vec::new();
    let mut rendered = None;
    for _ in 0..5 {
        let started = Instant::now();
        rendered = Some(tandem::history::render(&store, &middle).await.unwrap());
        reads.push(started.elapsed());
    }
    let rendered = rendered.unwrap();
    let expected_middle = {
        let m = yrs::Doc::new();
        let t = m.get_or_insert_text("text");
        let mut txn = m.transact_mut();
        for t2 in &txns[..versions.len() / 2 * 1000 + 1000] {
            for patch in t2["patches"].as_array().unwrap() {
                let at = u32::try_from(patch[0].as_u64().unwrap()).unwrap();
                let delete = u32::try_from(patch[1].as_u64().unwrap()).unwrap();
                if delete > 0 {
                    t.remove_range(&mut txn, at, delete);
                }
                let insert = patch[2].as_str().unwrap();
                if !insert.is_empty() {
                    t.insert(&mut txn, at, insert);
                }
            }
        }
        drop(txn);
        let s = t.get_string(&m.transact());
        s
    };
    assert_eq!(
        rendered.to_json()["text"],
        expected_middle.as_str(),
        "the middle version is exact"
    );
    let current = bytes::Bytes::from(final_doc.encode_state());
    let started = Instant::now();
    let restore = tandem::history::restoring_update(current, rendered)
        .await
        .unwrap()
        .unwrap();
    let restore_time = started.elapsed();

    println!(
        "automerge-paper: {} transactions, {} versions (one per 1,000)",
        txns.len(),
        versions.len()
    );
    println!("appended in {replayed:?}; compacted (with history) in {compacted:?}");
    println!("final document (gc): {final_len} bytes; the trace's no-GC encoding: {no_gc} bytes");
    println!(
        "stored: serving snapshot {serving} + history base {base} + version links {links} + attribution {attribution} bytes"
    );
    println!(
        "history (base + links + attribution) = {history_total} bytes = {:.2}x the no-GC encoding; serving + history = {:.2}x the final document",
        history_total as f64 / no_gc as f64,
        (serving + history_total) as f64 / final_len as f64
    );
    println!("read the middle version: {reads:?}");
    println!(
        "restore update to the middle version: {restore_time:?}, {} bytes",
        restore.len()
    );
    store.close().await;
}
