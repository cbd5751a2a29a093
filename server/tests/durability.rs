//! Durability: restarts keep everything, compaction folds the log without
//! changing the document, and idle rooms unload and reload intact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use common::*;

#[actix_web::test]
async fn a_graceful_restart_keeps_every_update_and_closes_with_1001() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("keep").await;
    a.sync().await;
    let mut expected = String::new();
    for i in 0..50 {
        let s = format!("line {i}\n");
        a.insert(expected.len() as u32, &s).await;
        expected.push_str(&s);
    }
    let mut b = app.client("keep").await;
    b.sync().await;
    b.wait_text(&expected).await;
    // The clients answer the server's close, as real ones do.
    let (dir, a_ended, _) = tokio::join!(app.stop(), a.ended(), b.ended());
    assert_eq!(a_ended, close_code(1001));
    let app = spawn_app_in(dir, &[]).await;
    let mut c = app.client("keep").await;
    c.sync().await;
    assert_eq!(c.text(), expected);
    app.stop().await;
}

#[actix_web::test]
async fn compaction_folds_the_log_and_the_document_reloads_the_same() {
    let app = spawn_app(&[
        "--compact-after-updates",
        "20",
        "--room-idle-timeout",
        "200ms",
    ])
    .await;
    let mut a = app.client("compact").await;
    a.sync().await;
    let mut expected = String::new();
    for i in 0..120 {
        let s = format!("{i},");
        a.insert(expected.len() as u32, &s).await;
        expected.push_str(&s);
    }
    let mut b = app.client("compact").await;
    b.sync().await;
    b.wait_text(&expected).await;
    // Wait for the compactor (every 5 s) to fold the log.
    let pool = sqlx::SqlitePool::connect(&app.db_url)
        .await
        .expect("open db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (log, snapshots): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM doc_updates), (SELECT COUNT(*) FROM doc_snapshots)",
        )
        .fetch_one(&pool)
        .await
        .expect("query");
        if snapshots == 1 && log < 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted: {log} rows, {snapshots} snapshots"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    // Unload (idle), then reload from snapshot + log.
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = app.client("compact").await;
    c.sync().await;
    assert_eq!(c.text(), expected);
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &[]).await;
    let mut d = app.client("compact").await;
    d.sync().await;
    assert_eq!(d.text(), expected);
    app.stop().await;
}

#[actix_web::test]
async fn an_idle_room_unloads_and_reloads_with_its_content() {
    let app = spawn_app(&["--room-idle-timeout", "100ms"]).await;
    for round in 0..5 {
        let mut c = app.client("cycle").await;
        c.sync().await;
        let before = c.text();
        c.insert(before.len() as u32, &format!("{round}")).await;
        let mut check = app.client("cycle").await;
        check.sync().await;
        check.wait_text(&format!("{before}{round}")).await;
        drop(c);
        drop(check);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut last = app.client("cycle").await;
    last.sync().await;
    assert_eq!(last.text(), "01234");
    app.stop().await;
}
