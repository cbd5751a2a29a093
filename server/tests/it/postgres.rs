//! The PostgreSQL store (SPEC §7), each test on a fresh database of the
//! server `TANDEM_TEST_POSTGRES_URL` names; without it, every test says it
//! skipped and passes. Round trips of documents, the log, compaction and
//! webhooks; several writers (two `Store`s, as two nodes) appending to one
//! document get gap-free numbers in commit order while compactors run, and
//! no update is lost or folded twice; a password never shows in an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use tandem::store::Track;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::db::{postgres_url, with_database};
use common::*;
use tandem::store::{
    AttemptRecord, EndpointRow, NewEvent, Outcome, PageLimits, PendingUpdate, Quarantined, Store,
};

/// A fresh database and a store on it, or `None` when skipped.
async fn pg() -> Option<(TestDir, Arc<dyn Store>)> {
    let dir = TestDir::postgres().await?;
    let store = tandem::store::open(&dir.db_url()).await.unwrap();
    Some((dir, store))
}

fn row(doc_id: i64, data: Vec<u8>) -> PendingUpdate {
    PendingUpdate {
        doc_id,
        data: bytes::Bytes::from(data),
        user: None,
    }
}

#[tokio::test]
async fn documents_and_their_log_round_trip() {
    let Some((_db, store)) = pg().await else {
        return;
    };
    let a = store.create("notes/a_1", 10, None).await.unwrap().unwrap();
    assert!(store.create("notes/a_1", 11, None).await.unwrap().is_none());
    let found = store.find_or_create("notes/a_1", 12, None).await.unwrap();
    assert_eq!((found.id, found.created), (a.id, false));
    let b = store.find_or_create("notes/b", 12, None).await.unwrap();
    assert!(b.created);
    store.create("other", 13, None).await.unwrap().unwrap();
    // Names sort byte by byte, as on SQLite; `_` is no wildcard.
    let listed: Vec<String> = store
        .list("notes/", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, vec!["notes/a_1", "notes/b"]);
    assert!(store.list("notes/a%", None, 10).await.unwrap().is_empty());
    let page2 = store.list("", Some("notes/b"), 10).await.unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].name, "other");

    let mut log = store.log_writer().unwrap();
    log.append(
        &[row(a.id, b"one".to_vec()), row(b.id, b"x".to_vec())],
        Track::Nothing,
    )
    .unwrap();
    log.append(&[row(a.id, b"two".to_vec())], Track::Nothing)
        .unwrap();
    log.sync().unwrap();
    log.probe().unwrap();
    let read = store.read_log(a.id).await.unwrap();
    assert_eq!(
        read.updates,
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    let meta = store.get("notes/a_1").await.unwrap().unwrap();
    assert_eq!(meta.size_bytes, 6);
    assert!(meta.updated_at >= meta.created_at);
    // Pages: the whole log, a row at a time.
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    store
        .read_log_pages(a.id, PageLimits::rows(1), tx)
        .await
        .unwrap();
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    assert_eq!(pages, vec![vec![b"one".to_vec()], vec![b"two".to_vec()]]);

    // Compaction folds the head, keeps the rest, and subtracts the counters.
    let head = store
        .read_log_head(a.id, PageLimits::rows(1))
        .await
        .unwrap();
    assert_eq!(head.updates.len(), 1);
    let candidates = store.compaction_candidates(2, u64::MAX).await.unwrap();
    assert_eq!(candidates, vec![a.id]);
    store.write_snapshot(a.id, b"ONE", 1, &[]).await.unwrap();
    let read = store.read_log(a.id).await.unwrap();
    assert_eq!(read.snapshot.as_deref(), Some(&b"ONE"[..]));
    assert_eq!(read.updates, vec![(2, b"two".to_vec())]);
    assert_eq!(store.get("notes/a_1").await.unwrap().unwrap().size_bytes, 6);
    // An older snapshot never replaces a newer one.
    store.write_snapshot(a.id, b"stale", 1, &[]).await.unwrap();
    let read = store.read_log(a.id).await.unwrap();
    assert_eq!(read.snapshot.as_deref(), Some(&b"ONE"[..]));

    // A row that does not decode is set aside, not lost.
    let bad = Quarantined {
        row_id: Some(2),
        data: b"two".to_vec(),
        reason: "does not decode".into(),
    };
    store.write_snapshot(a.id, b"ONE", 2, &[bad]).await.unwrap();
    assert_eq!(store.quarantined(a.id).await.unwrap(), 1);
    assert!(store.read_log(a.id).await.unwrap().updates.is_empty());

    // Numbers go on after compaction; none is reused.
    log.append(&[row(a.id, b"three".to_vec())], Track::Nothing)
        .unwrap();
    assert_eq!(store.read_log(a.id).await.unwrap().updates[0].0, 3);

    // Deleting takes everything with it; the name comes back as a new
    // document, numbered from 1; a write for the old one is skipped.
    assert!(store.delete("notes/a_1", None).await.unwrap());
    assert!(!store.delete("notes/a_1", None).await.unwrap());
    let again = store.create("notes/a_1", 20, None).await.unwrap().unwrap();
    assert_ne!(again.id, a.id);
    log.append(
        &[row(a.id, b"late".to_vec()), row(again.id, b"new".to_vec())],
        Track::Nothing,
    )
    .unwrap();
    assert_eq!(
        store.read_log(again.id).await.unwrap().updates,
        vec![(1, b"new".to_vec())]
    );
    assert_eq!(store.quarantined(a.id).await.unwrap(), 0);
    store.ping().await.unwrap();
    store.close().await;
}

fn endpoint(id: &str, events: &[&str]) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        url: format!("http://example.com/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        description: Some("d".into()),
        include_content: true,
        enabled: true,
        disabled_reason: None,
        secret: "whsec_AAAA".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: 1,
        updated_at: 1,
        doc_prefix: None,
    }
}

#[tokio::test]
async fn webhooks_round_trip_and_two_senders_never_lease_one_message() {
    let Some((db, store)) = pg().await else {
        return;
    };
    store
        .create_endpoint(&endpoint("ep_a", &["document.created"]))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("ep_b", &["*"]))
        .await
        .unwrap();
    let got = store.get_endpoint("ep_a").await.unwrap().unwrap();
    assert_eq!(got.events, vec!["document.created"]);
    assert!(got.include_content);
    let event = NewEvent {
        event_type: "document.created",
        doc: Some("d".into()),
        payload: "{}".into(),
        payload_with_content: Some("{\"content\":1}".into()),
    };
    let events: Vec<NewEvent> = (0..50).map(|_| event.clone()).collect();
    store.enqueue_events(&events, 100).await.unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), 100);

    // Two nodes lease at once: every message goes to exactly one.
    let other = tandem::store::open(&db.db_url()).await.unwrap();
    let (x, y) = tokio::join!(
        store.lease_due(60_000, 1000, 1000, &[]),
        other.lease_due(60_000, 1000, 1000, &[])
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let ids: BTreeSet<String> = x.iter().chain(&y).map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(x.len() + y.len(), 100);
    assert!(x.iter().all(|m| m.payload == "{\"content\":1}"));
    // Leased: not due again until the lease ends.
    assert!(store
        .lease_due(60_000, 1000, 1000, &[])
        .await
        .unwrap()
        .is_empty());
    // Per endpoint, and busy endpoints skipped (made due again by hand).
    for m in x
        .iter()
        .chain(&y)
        .filter(|m| m.endpoint_id == "ep_a")
        .take(4)
    {
        store.retry_message(&m.endpoint_id, &m.id, 0).await.unwrap();
    }
    for m in x.iter().chain(&y).filter(|m| m.endpoint_id == "ep_b") {
        store.retry_message(&m.endpoint_id, &m.id, 0).await.unwrap();
    }
    let again = store
        .lease_due(60_000, 1000, 3, &["ep_b".to_string()])
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|m| m.endpoint_id == "ep_a"));

    let m = &again[0];
    let record = |outcome| AttemptRecord {
        disabled_event: None,
        message_id: m.id.clone(),
        lease_token: m.lease_token.clone(),
        endpoint_id: m.endpoint_id.clone(),
        attempted_at: 60_001,
        status_code: Some(500),
        latency_ms: 3,
        error: Some("boom".into()),
        outcome,
    };
    assert!(!store
        .record_attempt(&record(Outcome::RetryIn(0)))
        .await
        .unwrap());
    // Due again at once, with the fourth made due by hand: the others of
    // the three are leased still.
    let retried = store
        .lease_due(60_000, 1000, 1000, &["ep_b".to_string()])
        .await
        .unwrap();
    assert_eq!(retried.len(), 2);
    let m = retried.iter().find(|r| r.id == m.id).unwrap();
    let record = |outcome| AttemptRecord {
        disabled_event: None,
        message_id: m.id.clone(),
        lease_token: m.lease_token.clone(),
        endpoint_id: m.endpoint_id.clone(),
        attempted_at: 60_001,
        status_code: Some(500),
        latency_ms: 3,
        error: Some("boom".into()),
        outcome,
    };
    assert!(store
        .record_attempt(&record(Outcome::GaveUp {
            disable_reason: "failing".into()
        }))
        .await
        .unwrap());
    let ep = store.get_endpoint("ep_a").await.unwrap().unwrap();
    assert!(!ep.enabled);
    assert_eq!(ep.disabled_reason.as_deref(), Some("failing"));
    let log = store
        .list_deliveries(
            "ep_a",
            Some("failed"),
            None,
            tandem::store::DeliveryLimits {
                count: 10,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempts.len(), 2);
    assert_eq!(log[0].attempts[0].status_code, Some(500));
    // The cursor pages through the log without repeats.
    let first = store
        .list_deliveries(
            "ep_b",
            None,
            None,
            tandem::store::DeliveryLimits {
                count: 30,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap()
        .items;
    let last = first.last().unwrap();
    let rest = store
        .list_deliveries(
            "ep_b",
            None,
            Some((last.created_at, last.seq)),
            tandem::store::DeliveryLimits {
                count: 30,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(first.len() + rest.len(), 50);
    assert_eq!(
        store.retry_message("ep_a", &m.id, 80_000).await.unwrap(),
        tandem::store::Retried::Queued
    );
    let rotated = store
        .rotate_secret("ep_b", "whsec_BBBB", 9, 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.previous_secret.as_deref(), Some("whsec_AAAA"));
    assert!(store.delete_endpoint("ep_a").await.unwrap());
    assert!(store.get_endpoint("ep_a").await.unwrap().is_none());
    other.close().await;
}

/// What a compactor in these tests writes as a snapshot: the updates it
/// folded, as a sorted list (the store only moves bytes).
fn encode(set: &BTreeSet<u64>) -> Vec<u8> {
    set.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn decode(bytes: &[u8]) -> BTreeSet<u64> {
    bytes
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

/// Folds the head of the log into the snapshot, as the compactor does.
async fn compact_once(store: &Arc<dyn Store>, doc_id: i64, rows: usize) {
    let head = store
        .read_log_head(doc_id, PageLimits::rows(rows))
        .await
        .unwrap();
    let Some(&(upto, _)) = head.updates.last() else {
        return;
    };
    let mut set = head.snapshot.as_deref().map(decode).unwrap_or_default();
    for (_, u) in &head.updates {
        set.extend(decode(u));
    }
    store
        .write_snapshot(doc_id, &encode(&set), upto, &[])
        .await
        .unwrap();
}

/// Two stores (two nodes) append to one document from their own writers,
/// while both compact it: every update is numbered once, gap-free, in the
/// order each writer committed it, and the snapshot plus the log always
/// hold every committed update exactly once (a compactor deletes exactly
/// the rows it folded, and a late one never replaces a newer snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_and_compactors_lose_nothing() {
    let Some((db, a)) = pg().await else {
        return;
    };
    let b = tandem::store::open(&db.db_url()).await.unwrap();
    let doc = a.create("shared", 1, None).await.unwrap().unwrap();
    const PER_WRITER: u64 = 400;
    let writer = |store: Arc<dyn Store>, node: u64| {
        std::thread::spawn(move || {
            let mut log = store.log_writer().unwrap();
            let mut i = 0;
            while i < PER_WRITER {
                // Batches of one to three updates.
                let n = (i % 3 + 1).min(PER_WRITER - i);
                let batch: Vec<PendingUpdate> = (i..i + n)
                    .map(|j| row(doc.id, encode(&BTreeSet::from([node * 1_000_000 + j]))))
                    .collect();
                log.append(&batch, Track::Nothing).unwrap();
                i += n;
            }
        })
    };
    let writers = [writer(Arc::clone(&a), 1), writer(Arc::clone(&b), 2)];
    let done = Arc::new(AtomicBool::new(false));
    let compactor = |store: Arc<dyn Store>, rows: usize| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) {
                compact_once(&store, doc.id, rows).await;
                rounds += 1;
            }
            rounds
        })
    };
    let compactors = [compactor(Arc::clone(&a), 7), compactor(Arc::clone(&b), 13)];
    // Meanwhile, every read sees a gap-free run of numbers above the
    // snapshot's, and each writer's updates in its own order.
    let mut checks = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        let read = a.read_log(doc.id).await.unwrap();
        let seqs: Vec<i64> = read.updates.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        checks += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for c in compactors {
        rounds += c.await.unwrap();
    }
    assert!(checks > 0 && rounds > 0);

    let read = a.read_log(doc.id).await.unwrap();
    let mut all = read.snapshot.as_deref().map(decode).unwrap_or_default();
    let folded = all.len() as i64;
    let mut count = folded;
    for (seq, u) in &read.updates {
        // Numbers continue right after what the snapshot holds.
        count += 1;
        assert_eq!(*seq, count);
        all.extend(decode(u));
    }
    let expected: BTreeSet<u64> = (1..=2)
        .flat_map(|node| (0..PER_WRITER).map(move |j| node * 1_000_000 + j))
        .collect();
    assert_eq!(
        all.len() as u64,
        2 * PER_WRITER,
        "lost or duplicated updates"
    );
    assert_eq!(all, expected);
    assert_eq!(count, 2 * PER_WRITER as i64);
    b.close().await;
}

/// Without compaction: each writer's updates are numbered in the order it
/// committed them, and the numbers are exactly 1..=N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_gap_free_commit_ordered_numbers() {
    let Some((db, a)) = pg().await else {
        return;
    };
    let b = tandem::store::open(&db.db_url()).await.unwrap();
    let doc = a.create("shared", 1, None).await.unwrap().unwrap();
    let other = a.create("other", 1, None).await.unwrap().unwrap();
    const PER_WRITER: u64 = 300;
    let spawn = |store: Arc<dyn Store>, node: u64| {
        std::thread::spawn(move || {
            let mut log = store.log_writer().unwrap();
            for j in 0..PER_WRITER {
                // Two documents per batch, in either order: one lock order
                // inside, so no deadlock.
                let mine = row(doc.id, encode(&BTreeSet::from([node * 1_000_000 + j])));
                let theirs = row(other.id, vec![]);
                let batch = if node == 1 {
                    vec![mine, theirs]
                } else {
                    vec![theirs, mine]
                };
                log.append(&batch, Track::Nothing).unwrap();
            }
        })
    };
    let w = [spawn(Arc::clone(&a), 1), spawn(Arc::clone(&b), 2)];
    for w in w {
        w.join().unwrap();
    }
    let read = a.read_log(doc.id).await.unwrap();
    let seqs: Vec<i64> = read.updates.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=2 * PER_WRITER as i64).collect::<Vec<_>>());
    for node in 1..=2u64 {
        let mine: Vec<u64> = read
            .updates
            .iter()
            .flat_map(|(_, u)| decode(u))
            .filter(|v| v / 1_000_000 == node)
            .collect();
        let in_order: Vec<u64> = (0..PER_WRITER).map(|j| node * 1_000_000 + j).collect();
        assert_eq!(mine, in_order);
    }
    let meta = a.get("shared").await.unwrap().unwrap();
    assert_eq!(meta.size_bytes, 2 * PER_WRITER as i64 * 8);
    b.close().await;
}

/// The server runs on PostgreSQL end to end: an edit over a socket is
/// stored, compacted, and read back after a restart.
#[actix_web::test]
async fn a_server_on_postgres_keeps_documents_across_a_restart() {
    let Some(dir) = TestDir::postgres().await else {
        return;
    };
    let app = spawn_app_in(Arc::new(dir), &["--compact-after-updates", "5"]).await;
    let mut a = app.client("pg").await;
    a.sync().await;
    let mut expected = String::new();
    for i in 0..30 {
        let s = format!("{i};");
        a.insert(expected.len() as u32, &s).await;
        expected.push_str(&s);
    }
    let mut b = app.client("pg").await;
    b.sync().await;
    b.wait_text(&expected).await;
    let (dir, _, _) = tokio::join!(app.stop(), a.ended(), b.ended());
    let app = spawn_app_in(dir, &[]).await;
    let mut c = app.client("pg").await;
    c.sync().await;
    assert_eq!(c.text(), expected);
    app.stop().await;
}

/// A password in the URL shows neither in the store's error nor in what
/// the binary prints when it cannot start, nor in `--help`.
#[tokio::test]
async fn a_password_in_the_url_is_never_printed() {
    let Some(base) = postgres_url() else {
        eprintln!("skipped: TANDEM_TEST_POSTGRES_URL is not set");
        return;
    };
    const SECRET: &str = "pw-that-must-not-leak";
    // Nothing listens on port 1; and a wrong password for the real server.
    let mut unreachable = url::Url::parse("postgres://tandem@127.0.0.1:1/x").unwrap();
    unreachable.set_password(Some(SECRET)).unwrap();
    let mut wrong = url::Url::parse(&with_database(&base, "tandem_no_such_db")).unwrap();
    wrong.set_username("no_such_user").unwrap();
    wrong.set_password(Some(SECRET)).unwrap();
    for url in [unreachable.to_string(), wrong.to_string()] {
        let err = match tandem::store::open(&url).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e,
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");

        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env("TANDEM_BIND", "127.0.0.1:0")
            .env("TANDEM_DATABASE_URL", &url)
            .env("RUST_LOG", "debug")
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--help")
        .env("TANDEM_DATABASE_URL", unreachable.to_string())
        .output()
        .expect("runs");
    assert!(!String::from_utf8_lossy(&help.stdout).contains(SECRET));
}

/// Runs one statement on the test server's maintenance database.
async fn admin(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_url().unwrap())
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Makes every new session of `db` read-only (or writable again) and ends
/// the sessions it has, as a failover to a standby (and back) would.
async fn set_read_only(db: &str, on: bool) {
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    admin(&format!("ALTER DATABASE {db} {setting}")).await;
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

/// SPEC §6 on PostgreSQL: when the database stops taking writes (here it
/// turns read-only and drops every session), `/readyz` says so, writes are
/// refused with 503, nothing stored is lost, and service resumes by itself
/// once it takes writes again.
#[actix_web::test]
async fn a_database_that_refuses_writes_is_reported_and_service_resumes() {
    use serde_json::Value;
    use yrs::{Doc, Text, Transact};
    let Some(dir) = TestDir::postgres().await else {
        return;
    };
    let name = dir.pg.as_ref().unwrap().name.clone();
    let app = spawn_app_in(Arc::new(dir), &[]).await;
    let http = reqwest::Client::new();
    let doc = Doc::new();
    let append = |s: &str| {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, s);
        txn.encode_update_v1()
    };
    let post = |update: Vec<u8>| {
        let r = http
            .post(app.http("/api/docs/k/update"))
            .header("content-type", "application/octet-stream")
            .body(update)
            .send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let readyz = || async {
        let r = http.get(app.http("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let r = http
        .post(app.http("/api/docs"))
        .json(&serde_json::json!({"id": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(post(append("safe;")).await, 200);

    set_read_only(&name, true).await;
    // Refused, not queued (the first may fail on a dropped session, also
    // storage failing); the document keeps what was stored.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut accepted = 0;
    loop {
        // Each from a client of its own, so that none depends on another.
        let other = Doc::new();
        let update = {
            let text = other.get_or_insert_text("t");
            let mut txn = other.transact_mut();
            text.insert(&mut txn, 0, "refused;");
            txn.encode_update_v1()
        };
        let status = post(update).await;
        assert!(status == 503 || status == 200, "{status}");
        if status == 200 {
            accepted += 1;
        }
        let (ready, body) = readyz().await;
        if status == 503 && ready == 503 {
            assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Known to fail now: refused at the door, never applied nor stored.
    let door = Doc::new();
    let refused = {
        let text = door.get_or_insert_text("t");
        let mut txn = door.transact_mut();
        text.insert(&mut txn, 0, "at-the-door;");
        txn.encode_update_v1()
    };
    assert_eq!(post(refused).await, 503);

    set_read_only(&name, false).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while readyz().await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fresh = Doc::new();
    let again = {
        let text = fresh.get_or_insert_text("t");
        let mut txn = fresh.transact_mut();
        text.insert(&mut txn, 0, "again;");
        txn.encode_update_v1()
    };
    assert_eq!(post(again).await, 200);
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &[]).await;
    let v: Value = reqwest::get(app.http("/api/docs/k/json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every 2xx stored. An update whose commit failed was already applied
    // (a CRDT update cannot be taken back): it got a 503, and is stored
    // once the database takes writes again, as on SQLite. One refused
    // before it was applied is not.
    let text = v["t"].as_str().unwrap();
    assert!(text.contains("safe;") && text.contains("again;"), "{text}");
    assert!(text.matches("refused;").count() >= accepted, "{text}");
    assert!(!text.contains("at-the-door;"), "{text}");
    app.stop().await;
}

/// Several nodes may start at once on a database that does not exist yet:
/// one creates it, the migrations run once, every node starts.
#[tokio::test]
async fn nodes_starting_at_once_on_a_new_database_all_start() {
    let Some(base) = postgres_url() else {
        eprintln!("skipped: TANDEM_TEST_POSTGRES_URL is not set");
        return;
    };
    // A database of its own, dropped at the end; removed first, so that
    // the nodes find none.
    let Some(dir) = TestDir::postgres().await else {
        return;
    };
    let name = dir.pg.as_ref().unwrap().name.clone();
    admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
    let url = with_database(&base, &name);
    let (a, b, c) = tokio::join!(
        tandem::store::open(&url),
        tandem::store::open(&url),
        tandem::store::open(&url)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let doc = a.create("d", 1, None).await.unwrap().unwrap();
    assert_eq!(b.get("d").await.unwrap().unwrap().id, doc.id);
    for store in [a, b, c] {
        store.close().await;
    }
}
