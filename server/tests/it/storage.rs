//! Failing storage (SPEC §6) against the real server, on a real disk that
//! fills up (a small tmpfs; skipped where it cannot be mounted): `/readyz`
//! answers 503 with the reason, API writes 503 and socket updates 1013,
//! what was stored stays intact, no accepted update is lost, and service
//! resumes by itself once space is back. And a stored row that does not
//! decode is quarantined by compaction, never deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::disk::TmpDisk;
use common::*;
use serde_json::{json, Value};
use tandem_crdt::protocol;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Appends `s` to the text `t` of `doc`; returns the update.
fn append(doc: &Doc, s: &str) -> Vec<u8> {
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, s);
    txn.encode_update_v1()
}

async fn create(app: &TestApp, name: &str) {
    let r = http()
        .post(app.http("/api/docs"))
        .json(&json!({ "id": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Posts an update; returns the status and the JSON body.
async fn post_update(app: &TestApp, name: &str, update: Vec<u8>) -> (u16, Value) {
    let r = http()
        .post(app.http(&format!("/api/docs/{name}/update")))
        .header("content-type", "application/octet-stream")
        .body(update)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn text_of(app: &TestApp, name: &str) -> String {
    let r = http()
        .get(app.http(&format!("/api/docs/{name}/json")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["t"].as_str().unwrap_or_default().to_string()
}

/// Polls `/readyz` until it answers `status`; returns its body.
async fn readyz_becomes(app: &TestApp, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = http().get(app.http("/readyz")).send().await.unwrap();
        if r.status().as_u16() == status {
            return r.json().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_full_disk_refuses_writes_says_so_and_resumes_by_itself() {
    let Some(disk) = TmpDisk::mount("16m") else {
        return;
    };
    // SQLite only: the test fills the disk under the database file.
    let app = spawn_app_in(Arc::new(TestDir::sqlite_in(disk.dir.clone())), &[]).await;

    // Stored before the disk fills: a document written through the API...
    create(&app, "kept").await;
    let kept = Doc::new();
    assert_eq!(
        post_update(&app, "kept", append(&kept, "safe")).await.0,
        200
    );
    // ...and one edited over a socket.
    let mut writer = app.client("victim").await;
    writer.sync().await;
    writer.insert(0, "before;").await;
    let mut reader = app.client("victim").await;
    reader.sync().await;
    reader.wait_text("before;").await;
    assert_eq!(readyz_becomes(&app, 200).await["status"], "ready");

    disk.fill();
    // Accepted (applied and relayed) while the server does not yet know
    // that the disk is full: it must not be lost.
    let big = "x".repeat(1 << 20);
    writer.insert(7, &big).await;
    let accepted = format!("before;{big}");
    reader.wait_text(&accepted).await;

    // The write fails: /readyz says so, with the reason.
    let body = readyz_becomes(&app, 503).await;
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("storage"), "{reason}");
    assert!(
        reason.contains("full"),
        "the reason names the cause: {reason}"
    );

    // API writes are refused with 503...
    let (status, body) = post_update(&app, "kept", append(&kept, "+lost")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let r = http()
        .post(app.http("/api/docs"))
        .json(&json!({ "id": "new" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // ...a socket update closes its connection with 1013, unapplied...
    writer.insert(0, "refused;").await;
    assert_eq!(writer.ended().await, close_code(1013));
    // ...and reads go on: what was stored is intact.
    assert_eq!(text_of(&app, "kept").await, "safe");
    let mut during = app.client("victim").await;
    during.sync().await;
    assert_eq!(
        during.text(),
        accepted,
        "the refused update was not applied"
    );

    // Space is back: service resumes by itself.
    disk.free();
    assert_eq!(readyz_becomes(&app, 200).await["status"], "ready");
    let retry = Doc::new();
    let update = {
        let text = retry.get_or_insert_text("t");
        let mut txn = retry.transact_mut();
        text.insert(&mut txn, 0, "again;");
        txn.encode_update_v1()
    };
    assert_eq!(post_update(&app, "kept", update).await.0, 200);
    // The refused client reconnects and sends what it holds (its sync
    // step 2): now it is taken.
    let mut back = app.client("victim").await;
    back.sync().await;
    let held = writer
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    back.send(protocol::encode_update(&held).to_vec()).await;
    let expected = format!("refused;before;{big}");
    reader.wait_text(&expected).await;

    // Everything accepted is stored: a restart reads it back.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &[]).await;
    let mut after = app.client("victim").await;
    after.sync().await;
    assert_eq!(after.text(), expected);
    let kept_text = text_of(&app, "kept").await;
    assert!(
        kept_text == "again;safe" || kept_text == "safeagain;",
        "{kept_text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_stored_row_that_does_not_decode_is_quarantined_not_deleted() {
    // SQLite only: the test writes a damaged row into the file (the
    // PostgreSQL store's quarantine is tested in postgres.rs).
    let app = spawn_app_sqlite(&["--compact-after-updates", "2"]).await;
    create(&app, "q").await;
    let doc = Doc::new();
    assert_eq!(post_update(&app, "q", append(&doc, "hello")).await.0, 200);
    // A row that is not a Yjs update, as a damaged disk or a bug elsewhere
    // could leave one.
    let path = app.dir.path().join("data/tandem.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let garbage: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    db.execute(
        "INSERT INTO doc_updates (doc_id, data) SELECT id, ?1 FROM documents WHERE name = 'q'",
        [garbage],
    )
    .unwrap();
    db.execute(
        "UPDATE documents SET log_count = log_count + 1, size_bytes = size_bytes + 5 WHERE name = 'q'",
        [],
    )
    .unwrap();
    assert_eq!(post_update(&app, "q", append(&doc, " world")).await.0, 200);

    // The compactor (every 5 s) folds the log: the bad row is set aside.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM doc_updates u JOIN documents d ON d.id = u.doc_id WHERE d.name = 'q'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if log == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept: Vec<(Option<i64>, Vec<u8>, String)> = db
        .prepare(
            "SELECT row_id, data, reason FROM doc_updates_quarantine q
             JOIN documents d ON d.id = q.doc_id WHERE d.name = 'q'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].0.is_some());
    assert_eq!(kept[0].1, garbage, "kept byte for byte");
    assert!(kept[0].2.contains("decode"), "{}", kept[0].2);
    // The good rows are in the snapshot, and the count is reported.
    assert_eq!(text_of(&app, "q").await, "hello world");
    let metrics = http()
        .get(app.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tandem_quarantined_rows_total ")),
        "{metrics}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_backlog_over_its_bound_refuses_writes_until_it_is_written() {
    // SQLite only: the test holds the file's write lock.
    let app = spawn_app_sqlite(&["--persist-backlog-bytes", "65536"]).await;
    let mut writer = app.client("b").await;
    writer.sync().await;
    writer.insert(0, "a").await;
    assert_eq!(readyz_becomes(&app, 200).await["status"], "ready");
    // Another connection holds the database's write lock: the update log's
    // writer waits for it, as behind a slow disk.
    let db = rusqlite::Connection::open(app.dir.path().join("data/tandem.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let big = "y".repeat(100_000);
    writer.insert(1, &big).await;
    let body = readyz_becomes(&app, 503).await;
    let reason = body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("wait to be written"), "{reason}");
    writer.insert(0, "z").await;
    assert_eq!(writer.ended().await, close_code(1013));
    // The lock is released: the backlog is written, and writes are taken.
    db.execute_batch("COMMIT").unwrap();
    assert_eq!(readyz_becomes(&app, 200).await["status"], "ready");
    let mut after = app.client("b").await;
    after.sync().await;
    assert_eq!(after.text(), format!("a{big}"));
    after.insert(0, "ok;").await;
    let mut check = app.client("b").await;
    check.sync().await;
    check.wait_text(&format!("ok;a{big}")).await;
    app.stop().await;
}
