//! Compaction by bytes: a writer that inserts and deletes a megabyte at a
//! time keeps its document small, and the stored log must stay small too
//! (it used to grow a megabyte per update until 500 updates); and one step
//! of compaction reads a bounded number of bytes, however large the rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use tandem::store::Track;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tandem::persist::compactor::COMPACT_PAGE;
use tandem::store::PendingUpdate;
use yrs::{Doc, Text, Transact};

const MIB: usize = 1 << 20;

async fn size_bytes(app: &TestApp, name: &str) -> i64 {
    let v: Value = reqwest::get(app.http(&format!("/api/docs/{name}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["size_bytes"].as_i64().unwrap()
}

#[actix_web::test]
async fn an_insert_and_delete_writer_keeps_the_log_bounded_in_bytes() {
    // Default settings: 500 updates or 8 MiB.
    let app = spawn_app(&[]).await;
    let http = reqwest::Client::new();
    let r = http
        .post(app.http("/api/docs"))
        .json(&json!({ "id": "churn" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let chunk = "z".repeat(MIB);
    let post = |update: Vec<u8>| {
        let http = http.clone();
        let url = app.http("/api/docs/churn/update");
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/octet-stream")
                .body(update)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    // 40 MiB written, 80 updates: far below the row count that triggers.
    let mut largest = 0;
    for _ in 0..40 {
        let insert = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, &chunk);
            txn.encode_update_v1()
        };
        post(insert).await;
        let delete = {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, MIB as u32);
            txn.encode_update_v1()
        };
        post(delete).await;
        largest = largest.max(size_bytes(&app, "churn").await);
    }
    // The compactor (every 5 s) folds it: what is stored comes back to
    // less than the byte trigger plus a megabyte, the document being
    // nearly empty.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut stored = size_bytes(&app, "churn").await;
    while stored > 9 * MIB as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log stays at {stored} bytes (at most {largest} seen)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = size_bytes(&app, "churn").await;
    }
    // The text is still right (empty), through a fresh load.
    let v: Value = reqwest::get(app.http("/api/docs/churn/json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["t"], "");
    app.stop().await;
}

#[tokio::test]
async fn one_step_of_compaction_reads_a_bounded_number_of_bytes() {
    let (_db, store) = test_store().await;
    let doc = store.create("d", 1, None).await.unwrap().unwrap();
    let mut log = store.log_writer().unwrap();
    // Twenty rows of a megabyte: far fewer rows than a page holds.
    let rows: Vec<PendingUpdate> = (0..20u8)
        .map(|i| PendingUpdate {
            doc_id: doc.id,
            data: bytes::Bytes::from(vec![i; MIB]),
            user: None,
        })
        .collect();
    log.append(&rows, Track::Nothing).unwrap();
    log.sync().unwrap();
    let head = store.read_log_head(doc.id, COMPACT_PAGE).await.unwrap();
    let bytes: usize = head.updates.iter().map(|(_, u)| u.len()).sum();
    assert_eq!(head.updates.len(), COMPACT_PAGE.bytes / MIB);
    assert!(bytes <= COMPACT_PAGE.bytes, "{bytes}");
    // In order, from the oldest.
    assert!(head
        .updates
        .iter()
        .enumerate()
        .all(|(i, (_, u))| u[0] == i as u8));
    // A single row larger than the page is a page of its own.
    let small = tandem::store::PageLimits {
        rows: 100,
        bytes: MIB / 2,
    };
    let head = store.read_log_head(doc.id, small).await.unwrap();
    assert_eq!(head.updates.len(), 1);
}
