//! Durability: restarts keep everything, compaction folds the log without
//! changing the document, and idle rooms unload and reload intact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use tandem::store::Track;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tandem::store::{sqlite::SqliteStore, DocMeta, LogWriter, PendingUpdate, Store};
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact};

/// A fresh database file with one document, `d`, and an author whose text
/// edits go straight into that document's update log, one row each.
struct TextLog {
    _dir: TestDir,
    url: String,
    store: Arc<dyn Store>,
    doc: DocMeta,
    log: Box<dyn LogWriter>,
    author: yrs::Doc,
    /// The text every row written so far adds up to.
    expected: String,
}

impl TextLog {
    async fn new() -> Self {
        let (dir, store) = test_store().await;
        let url = dir.db_url();
        let doc = store.create("d", 1, None).await.unwrap().unwrap();
        let log = store.log_writer().unwrap();
        TextLog {
            _dir: dir,
            url,
            store,
            doc,
            log,
            author: yrs::Doc::new(),
            expected: String::new(),
        }
    }

    /// Appends `piece` to the text, as one committed row of the log.
    fn append(&mut self, piece: &str) {
        let text = self.author.get_or_insert_text("t");
        let update = {
            let mut txn = self.author.transact_mut();
            text.insert(&mut txn, self.expected.len() as u32, piece);
            txn.encode_update_v1()
        };
        self.expected.push_str(piece);
        let row = PendingUpdate {
            doc_id: self.doc.id,
            data: bytes::Bytes::from(update),
            user: None,
        };
        self.log.append(&[row], Track::Nothing).unwrap();
    }
}

/// The text that stored rows (a snapshot, then updates) add up to.
fn text_of<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> String {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    {
        let mut txn = doc.transact_mut();
        for row in rows {
            txn.apply_update(yrs::Update::decode_v1(row).unwrap())
                .unwrap();
        }
    }
    let txn = doc.transact();
    text.get_string(&txn)
}

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

/// A room loads a log of several pages (1,000 rows each) whole: with
/// compaction off, 2,600 edits stay 2,600 rows, and after a restart a new
/// client gets every one of them.
#[actix_web::test]
async fn a_log_of_several_pages_reloads_whole() {
    // Compaction off, and no rate limit for one client sending 2,600 edits.
    let no_compaction = [
        "--compact-after-updates",
        "4294967295",
        "--max-messages-per-second",
        "0",
    ];
    let app = spawn_app(&no_compaction).await;
    let mut a = app.client("long").await;
    a.sync().await;
    let mut expected = String::new();
    for i in 0..2600 {
        let s = format!("{i};");
        a.insert(expected.len() as u32, &s).await;
        expected.push_str(&s);
    }
    let mut b = app.client("long").await;
    b.sync().await;
    b.wait_text(&expected).await;
    let (dir, _, _) = tokio::join!(app.stop(), a.ended(), b.ended());
    let app = spawn_app_in(dir, &no_compaction).await;
    let (rows, snapshots) = query_pair(
        &app.db_url,
        "SELECT (SELECT COUNT(*) FROM doc_updates), (SELECT COUNT(*) FROM doc_snapshots)",
    )
    .await;
    assert_eq!(
        (rows, snapshots),
        (2600, 0),
        "the log is 2,600 rows, uncompacted"
    );
    let mut c = app.client("long").await;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (log, snapshots) = query_pair(
            &app.db_url,
            "SELECT (SELECT COUNT(*) FROM doc_updates), (SELECT COUNT(*) FROM doc_snapshots)",
        )
        .await;
        if snapshots == 1 && log < 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted: {log} rows, {snapshots} snapshots"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

/// Row ids are positions in a document's log (versions point at them), so
/// they never go back, even once compaction has deleted every row: SQLite
/// alone would hand out the largest id left plus one, at or below the
/// snapshot's `upto_id`; the log's writer numbers rows past it, and so does
/// a writer opened afterwards. Nothing is lost or folded twice.
/// SQLite only: PostgreSQL numbers each document's log and never reuses
/// a number.
#[tokio::test]
async fn log_ids_never_go_back_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = SqliteStore::open(&url).await.unwrap();
    let doc = store.create("d", 1, None).await.unwrap().unwrap();
    let mut log = store.log_writer().unwrap();
    let row = |data: &'static [u8]| PendingUpdate {
        doc_id: doc.id,
        data: bytes::Bytes::from_static(data),
        user: None,
    };
    log.append(&[row(b"a"), row(b"b"), row(b"c")], Track::Nothing)
        .unwrap();
    let first = store.read_log(doc.id).await.unwrap();
    let upto = first.updates.last().unwrap().0;
    // An update accepted while the compactor merges: it keeps its row.
    log.append(&[row(b"d")], Track::Nothing).unwrap();
    store
        .write_snapshot(doc.id, b"abc", upto, &[])
        .await
        .unwrap();
    let second = store.read_log(doc.id).await.unwrap();
    assert_eq!(second.snapshot.as_deref(), Some(&b"abc"[..]));
    let after: Vec<&[u8]> = second.updates.iter().map(|(_, u)| u.as_slice()).collect();
    assert_eq!(after, vec![&b"d"[..]]);
    assert!(second.updates[0].0 > upto);

    // Fold the rest: the log is empty, and the next id still comes after
    // the snapshot's `upto_id`, from this writer and from a new one.
    let upto = second.updates[0].0;
    store
        .write_snapshot(doc.id, b"abcd", upto, &[])
        .await
        .unwrap();
    drop(log);
    let mut log = store.log_writer().unwrap();
    log.append(&[row(b"e")], Track::Nothing).unwrap();
    let third = store.read_log(doc.id).await.unwrap();
    assert_eq!(third.snapshot.as_deref(), Some(&b"abcd"[..]));
    assert_eq!(third.updates.len(), 1);
    assert_eq!(third.updates[0].1, b"e");
    assert!(third.updates[0].0 > upto, "ids never go back");
    // The next compaction folds exactly that row.
    store
        .write_snapshot(doc.id, b"abcde", third.updates[0].0, &[])
        .await
        .unwrap();
    let fourth = store.read_log(doc.id).await.unwrap();
    assert_eq!(fourth.snapshot.as_deref(), Some(&b"abcde"[..]));
    assert!(fourth.updates.is_empty());
    // The counters: the compactions subtracted what they folded before
    // the writer added what it appended; the sum is exact all the same.
    log.append(&[row(b"fg")], Track::Nothing).unwrap();
    log.sync().unwrap();
    let meta = store.get("d").await.unwrap().unwrap();
    assert_eq!(meta.size_bytes, 5 + 2);
    assert_eq!(counters(&url, doc.id).await, (1, 7, 0));
}

/// Compaction folds a long log a page of rows at a time; the snapshot it
/// leaves holds every update, and the log is empty.
#[tokio::test]
async fn compaction_folds_a_long_log_in_pages() {
    let mut t = TextLog::new().await;
    for i in 0..25 {
        t.append(&format!("{i};"));
    }
    t.log.sync().unwrap();
    // One page of 10: the oldest 10 rows go, 15 stay.
    let head = t
        .store
        .read_log_head(t.doc.id, tandem::store::PageLimits::rows(10))
        .await
        .unwrap();
    assert_eq!(head.updates.len(), 10);
    tandem::persist::compactor::compact_document(
        &t.store,
        t.doc.id,
        tandem::store::PageLimits::rows(10),
        true,
    )
    .await
    .unwrap();
    let after = t.store.read_log(t.doc.id).await.unwrap();
    assert!(
        after.updates.is_empty(),
        "{} rows left",
        after.updates.len()
    );
    let snapshot = after.snapshot.expect("a snapshot");
    assert_eq!(text_of([snapshot.as_slice()]), t.expected);
    assert_eq!(
        counters(&t.url, t.doc.id).await,
        (0, snapshot.len() as i64, 0)
    );
}

/// A document's `(log_count, size_bytes, counts_pending)`, read from its
/// database. PostgreSQL has no `counts_pending`: its appends update the
/// counters in their own transaction, so it is always 0 there.
async fn counters(url: &str, doc_id: i64) -> (i64, i64, i64) {
    if url.starts_with("postgres") {
        let (log_count, size_bytes) = query_pair(
            url,
            &format!("SELECT log_count, size_bytes FROM documents WHERE id = {doc_id}"),
        )
        .await;
        return (log_count, size_bytes, 0);
    }
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let row =
        sqlx::query_as("SELECT log_count, size_bytes, counts_pending FROM documents WHERE id = $1")
            .bind(doc_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    row
}

/// A writer that goes away before it syncs (a crash, or an error that
/// drops it) leaves its documents marked; the next start, or the next
/// writer, recounts them. SQLite only: PostgreSQL updates the counters
/// in the append's own transaction.
#[tokio::test]
async fn counters_lost_with_a_writer_are_recounted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = SqliteStore::open(&url).await.unwrap();
    let a = store.create("a", 1, None).await.unwrap().unwrap();
    let b = store.create("b", 1, None).await.unwrap().unwrap();
    let row = |doc_id, data: &'static [u8]| PendingUpdate {
        doc_id,
        data: bytes::Bytes::from_static(data),
        user: None,
    };
    let mut log = store.log_writer().unwrap();
    log.append(&[row(a.id, b"xx"), row(b.id, b"yyy")], Track::Nothing)
        .unwrap();
    log.sync().unwrap();
    assert_eq!(counters(&url, a.id).await, (1, 2, 0));
    // Appended, not synced: the counters lag, the marks are set.
    log.append(&[row(a.id, b"xxxx")], Track::Nothing).unwrap();
    log.append(&[row(a.id, b"x")], Track::Nothing).unwrap();
    log.append(&[row(b.id, b"y")], Track::Nothing).unwrap();
    assert_eq!(counters(&url, a.id).await, (1, 2, 1));
    assert_eq!(counters(&url, b.id).await, (1, 3, 1));
    drop(log);
    // A new writer recounts before it appends.
    let mut log = store.log_writer().unwrap();
    assert_eq!(counters(&url, a.id).await, (3, 7, 0));
    assert_eq!(counters(&url, b.id).await, (2, 4, 0));
    log.append(&[row(b.id, b"zz")], Track::Nothing).unwrap();
    drop(log);
    store.close().await;
    // So does the next start.
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(counters(&url, b.id).await, (3, 6, 0));
    assert_eq!(store.get("b").await.unwrap().unwrap().size_bytes, 6);
}

/// A database written before migration 0004 (AUTOINCREMENT ids) keeps its
/// log, ids, snapshot and counters across the migration. SQLite only: a
/// migration of SQLite's own.
#[tokio::test]
async fn the_plain_rowid_migration_keeps_an_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let url = format!("sqlite://{}", db.display());
    // Migrations 0001-0003 only, as an older Tandem left them.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0004" {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO documents (name, created_at, updated_at) VALUES ('d', 1, 1)")
            .execute(&pool)
            .await
            .unwrap();
        for data in [&b"one"[..], b"two", b"three"] {
            sqlx::query("INSERT INTO doc_updates (doc_id, data) VALUES (1, ?)")
                .bind(data)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("DELETE FROM doc_updates WHERE id = 1")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&url).await.unwrap();
    let meta = store.get("d").await.unwrap().unwrap();
    let log = store.read_log(meta.id).await.unwrap();
    let rows: Vec<(i64, &[u8])> = log
        .updates
        .iter()
        .map(|(i, u)| (*i, u.as_slice()))
        .collect();
    assert_eq!(rows, vec![(2, &b"two"[..]), (3, &b"three"[..])]);
    // The counters follow the writer's sync.
    let mut writer = store.log_writer().unwrap();
    writer
        .append(
            &[tandem::store::PendingUpdate {
                doc_id: meta.id,
                data: bytes::Bytes::from_static(b"four"),
                user: None,
            }],
            Track::Nothing,
        )
        .unwrap();
    let log = store.read_log(meta.id).await.unwrap();
    assert_eq!(log.updates.last().unwrap(), &(4, b"four".to_vec()));
    let unsynced = store.get("d").await.unwrap().unwrap();
    assert_eq!(unsynced.size_bytes, meta.size_bytes);
    writer.sync().unwrap();
    let after = store.get("d").await.unwrap().unwrap();
    assert_eq!(after.size_bytes, meta.size_bytes + 4);
}

/// A load that runs while compaction commits page after page still sees
/// every update: the snapshot and the log come from one read transaction,
/// so a load never pairs an old snapshot with a log a newer snapshot has
/// already shortened. The test checks that it caught loads mid-compaction
/// (a snapshot and a non-empty log at once); without them it proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_during_compaction_see_every_update() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tandem::store::PageLimits;
    let mut t = TextLog::new().await;
    for i in 0..3000 {
        t.append(&format!("{i};"));
    }
    t.log.sync().unwrap();
    let (store, doc, expected) = (t.store.clone(), t.doc.clone(), t.expected.clone());

    // Pages of 5 rows: 600 commits, each a new snapshot and a shorter log.
    let done = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                tandem::persist::compactor::compact_document(
                    &store,
                    doc.id,
                    tandem::store::PageLimits::rows(5),
                    true,
                )
                .await
                .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut loads = 0;
    // Loads that ran while compaction was midway: [whole, paged].
    let mut mid_compaction = [0; 2];
    while !done.load(Ordering::SeqCst) {
        // Odd loads read as rooms do, in pages (small ones, so that
        // compaction commits while a load is part way through).
        let paged = loads % 2 == 1;
        let rows: Vec<Vec<u8>> = if paged {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1);
            let limits = PageLimits {
                rows: 50,
                bytes: 1 << 20,
            };
            let reader = {
                let store = store.clone();
                tokio::spawn(async move { store.read_log_pages(doc.id, limits, tx).await })
            };
            let mut rows = Vec::new();
            while let Some(page) = rx.recv().await {
                rows.extend(page);
                tokio::task::yield_now().await;
            }
            reader.await.unwrap().unwrap();
            rows
        } else {
            let read = store.read_log(doc.id).await.unwrap();
            let updates = read.updates.into_iter().map(|(_, u)| u);
            read.snapshot.into_iter().chain(updates).collect()
        };
        // 3,000 rows: not compacted yet; 1: a snapshot alone, compacted.
        if rows.len() > 1 && rows.len() < 3000 {
            mid_compaction[usize::from(paged)] += 1;
        }
        let got = text_of(rows.iter().map(Vec::as_slice));
        assert!(
            got == expected,
            "load {loads} (paged: {paged}) lost updates: {} of {} characters ({} rows)",
            got.len(),
            expected.len(),
            rows.len()
        );
        loads += 1;
    }
    compactor.await.unwrap();
    assert!(
        mid_compaction.iter().all(|&n| n >= 3),
        "only {mid_compaction:?} (whole, paged) of {loads} loads ran while compaction was midway"
    );
    assert!(store.read_log(doc.id).await.unwrap().updates.is_empty());
}

/// A log read a page at a time gives the same rows as one read, snapshot
/// first, in pages within their limits; a reader whose receiver is gone
/// stops without an error.
#[tokio::test]
async fn a_log_is_read_in_pages_within_their_limits() {
    use tandem::store::PageLimits;
    let mut t = TextLog::new().await;
    let piece = |i: usize| format!("{i}:{}", "x".repeat(i % 40));
    // A snapshot of the first 30 rows, then 97 rows after it.
    for i in 0..30 {
        t.append(&piece(i));
    }
    tandem::persist::compactor::compact_document(
        &t.store,
        t.doc.id,
        tandem::store::PageLimits::rows(100),
        true,
    )
    .await
    .unwrap();
    for i in 30..127 {
        t.append(&piece(i));
    }
    t.log.sync().unwrap();
    let (store, doc) = (t.store.clone(), t.doc.clone());
    let whole = store.read_log(doc.id).await.unwrap();
    let mut expected: Vec<Vec<u8>> = whole.snapshot.into_iter().collect();
    assert_eq!(expected.len(), 1, "a snapshot");
    expected.extend(whole.updates.into_iter().map(|(_, u)| u));
    assert_eq!(expected.len(), 98);

    for limits in [
        PageLimits {
            rows: 10,
            bytes: 1 << 20,
        },
        PageLimits {
            rows: 1000,
            bytes: 200,
        },
        PageLimits { rows: 1, bytes: 1 },
    ] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let reader = {
            let store = store.clone();
            tokio::spawn(async move { store.read_log_pages(doc.id, limits, tx).await })
        };
        let mut pages = Vec::new();
        while let Some(page) = rx.recv().await {
            pages.push(page);
        }
        reader.await.unwrap().unwrap();
        for page in &pages {
            assert!(!page.is_empty());
            assert!(
                page.len() <= limits.rows,
                "{} rows in a page, limits {limits:?}",
                page.len()
            );
            // Only the last row may take a page over its byte limit.
            let before_last: usize = page[..page.len() - 1].iter().map(Vec::len).sum();
            assert!(before_last < limits.bytes, "limits {limits:?}");
        }
        assert!(pages.len() > 1, "limits {limits:?} gave one page");
        let rows: Vec<Vec<u8>> = pages.into_iter().flatten().collect();
        assert_eq!(rows, expected, "limits {limits:?}");
    }

    // The receiver goes away after one page: the reader stops, no error.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let reader = {
        let store = store.clone();
        let limits = PageLimits {
            rows: 5,
            bytes: 1 << 20,
        };
        tokio::spawn(async move { store.read_log_pages(doc.id, limits, tx).await })
    };
    assert_eq!(rx.recv().await.unwrap().len(), 5);
    drop(rx);
    reader.await.unwrap().unwrap();
}

/// Loads whose pages are slow to be applied keep their read transactions
/// open; more of them than the store has connections must not make every
/// other call wait.
#[actix_web::test]
async fn loads_waiting_on_their_pages_leave_the_store_free() {
    use tandem::store::PageLimits;
    let mut t = TextLog::new().await;
    for i in 0..20 {
        t.append(&format!("{i},"));
    }
    t.log.sync().unwrap();
    let (store, doc) = (t.store.clone(), t.doc.clone());
    let one_row = PageLimits { rows: 1, bytes: 1 };
    // Six loads whose receivers never take a page: each fills its channel
    // and then waits, inside its read transaction, for room in it.
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let store = store.clone();
        let reader = tokio::spawn(async move { store.read_log_pages(doc.id, one_row, tx).await });
        waiting.push((rx, reader));
    }
    let stuck = |waiting: &Vec<(tokio::sync::mpsc::Receiver<_>, _)>| {
        waiting.iter().filter(|(rx, _)| rx.len() == 1).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stuck(&waiting) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loads did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Without connections of their own these would wait for a free one
    // (sqlx gives up after 30 s); the timeouts only catch that hang.
    let free = Duration::from_secs(5);
    let got = tokio::time::timeout(free, store.get("d")).await;
    assert_eq!(
        got.expect("a read waited behind the loads")
            .unwrap()
            .unwrap()
            .id,
        doc.id
    );
    let created = tokio::time::timeout(free, store.create("other", 2, None)).await;
    assert!(created
        .expect("a write waited behind the loads")
        .unwrap()
        .is_some());
    // The loads carry on as their receivers take pages: each gets the whole log.
    for (mut rx, reader) in waiting {
        let mut rows = 0;
        while rx.recv().await.is_some() {
            rows += 1;
        }
        reader.await.unwrap().unwrap();
        assert_eq!(rows, 20);
    }
}

/// Sockets still joining their rooms when the server stops are told the
/// same as joined ones: 1001, not "try again later".
#[actix_web::test]
async fn a_socket_joining_during_a_graceful_stop_is_closed_with_1001() {
    let app = spawn_app(&[]).await;
    let mut clients = Vec::new();
    for i in 0..40 {
        clients.push(app.client(&format!("joining-{i}")).await);
    }
    let ends = futures_util::future::join_all(clients.iter_mut().map(|c| c.ended()));
    let (_, ends) = tokio::join!(app.stop(), ends);
    for (i, end) in ends.into_iter().enumerate() {
        assert_eq!(end, close_code(1001), "client {i}");
    }
}
