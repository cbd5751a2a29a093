//! The real `tandem` binary as a child process: an update applied through
//! the HTTP API is durable the moment its 2xx arrives (SIGKILL right after
//! loses nothing), a deletion too; WebSocket edits are put on the disk
//! within `TANDEM_SYNC_INTERVAL`; and a bad database URL stops the start
//! with a message and a non-zero exit.
//!
//! The SIGKILL test runs on the backend `TANDEM_TEST_BACKEND` selects; the
//! others are SQLite's by nature: they count fsyncs of the file (PostgreSQL
//! commits synchronously, so its `sync` is empty), fill a tmpfs, or check
//! SQLite's URL handling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Text, Transact, Update};

const KEY: &str = "process-test-key";

struct Server {
    child: Child,
    base: String,
}

/// The URL of a SQLite file at `db`.
fn sqlite(db: &std::path::Path) -> String {
    format!("sqlite://{}", db.display())
}

fn start(url: &str) -> Server {
    start_with(url, &[])
}

fn start_with(url: &str, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .envs(env.iter().copied())
        .env("TANDEM_BIND", "127.0.0.1:0")
        .env("TANDEM_DATABASE_URL", url)
        .env("TANDEM_API_KEY", KEY)
        .env("TANDEM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split('"').next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

impl Server {
    /// A counter or a histogram's `_count` from `/metrics`; 0 when absent.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// Waits until `/metrics` shows `name` at `at_least`; panics after 10 s.
    async fn metric_reaches(&self, name: &str, at_least: f64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let v = self.metric(name).await;
            if v >= at_least {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{name} stayed at {v}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A WebSocket connection to `doc`, synced.
    async fn client(&self, http: &reqwest::Client, doc: &str) -> common::Client {
        let token: serde_json::Value = http
            .post(format!("{}/api/tokens", self.base))
            .bearer_auth(KEY)
            .json(&json!({"doc": doc, "perm": "write"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ws = self.base.replacen("http", "ws", 1);
        let token = token["token"].as_str().unwrap();
        let mut c = common::Client::connect(&format!("{ws}/ws/{doc}?token={token}")).await;
        c.sync().await;
        c
    }
}

const COMMITS: &str = "tandem_persist_batch_updates_count";
const SYNCS: &str = "tandem_sync_seconds_count";

#[tokio::test]
async fn websocket_edits_wait_for_the_sync_interval_and_api_updates_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start_with(
        &sqlite(&dir.path().join("tandem.db")),
        &[("TANDEM_SYNC_INTERVAL", "1h")],
    );
    let mut c = server.client(&http, "s").await;
    c.insert(0, "ws").await;
    server.metric_reaches(COMMITS, 1.0).await;
    // Committed, but with an hour to go, not yet synced.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(server.metric(SYNCS).await, 0.0);

    // An API update is on the disk before its 2xx: the sync comes at once.
    let r = http
        .post(format!("{}/api/docs/s/update", server.base))
        .bearer_auth(KEY)
        .body(update(0, "api", &Doc::new()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.metric(SYNCS).await, 1.0);
    assert_eq!(server.metric(COMMITS).await, 2.0);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn a_websocket_edit_is_synced_after_the_interval_without_any_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start_with(
        &sqlite(&dir.path().join("tandem.db")),
        &[("TANDEM_SYNC_INTERVAL", "300ms")],
    );
    let mut c = server.client(&http, "s").await;
    c.insert(0, "a").await;
    server.metric_reaches(COMMITS, 1.0).await;
    server.metric_reaches(SYNCS, 1.0).await;
    // Nothing new committed: no more syncs.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(server.metric(SYNCS).await, 1.0);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn with_an_interval_of_zero_every_commit_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start_with(
        &sqlite(&dir.path().join("tandem.db")),
        &[("TANDEM_SYNC_INTERVAL", "0s")],
    );
    let mut c = server.client(&http, "s").await;
    for i in 0..5u32 {
        c.insert(i, "x").await;
        server.metric_reaches(COMMITS, f64::from(i + 1)).await;
        server.metric_reaches(SYNCS, f64::from(i + 1)).await;
    }
    assert_eq!(server.metric(SYNCS).await, server.metric(COMMITS).await);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn update(at: u32, s: &str, doc: &Doc) -> Vec<u8> {
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, at, s);
    txn.encode_update_v1()
}

#[tokio::test]
async fn an_api_update_survives_sigkill_right_after_its_2xx() {
    // On the backend the switch selects (common::db).
    let dir = common::TestDir::new().await;
    let db = dir.db_url();
    let http = reqwest::Client::new();
    let mut server = start(&db);
    let r = http
        .post(format!("{}/api/docs", server.base))
        .bearer_auth(KEY)
        .json(&json!({"id": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client = Doc::new();
    let mut expected = String::new();
    for i in 0..20 {
        let s = format!("{i};");
        let body = update(expected.len() as u32, &s, &client);
        expected.push_str(&s);
        let r = http
            .post(format!("{}/api/docs/k/update", server.base))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // SIGKILL the moment the last 2xx arrived.
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut server = start(&db);
    let bytes = http
        .get(format!("{}/api/docs/k/update", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&bytes).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    assert_eq!(text.get_string(&doc.transact()), expected);

    // A deletion is durable too.
    let r = http
        .delete(format!("{}/api/docs/k", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut server = start(&db);
    let r = http
        .get(format!("{}/api/docs/k", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn an_unusable_database_url_stops_the_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a folder must be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    for url in [
        format!("sqlite://{}/sub/tandem.db", blocker.display()),
        "mysql://localhost/x".to_string(),
        "sqlite::memory:".to_string(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env("TANDEM_BIND", "127.0.0.1:0")
            .env("TANDEM_DATABASE_URL", &url)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TANDEM_DATABASE_URL") || stderr.contains("cannot"),
            "{url}: {stderr}"
        );
    }
    // And a good one creates its folder and file.
    let db = dir.path().join("new/folder/tandem.db");
    let mut server = start(&sqlite(&db));
    assert!(db.exists());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A client holding an idle keep-alive connection (a browser, a load
/// balancer's health check, Node's `fetch`) does not hold up a SIGTERM: the
/// idle connection is closed at once and the server exits promptly, not
/// when the connection's keep-alive runs out.
#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_delay_a_stop() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&sqlite(&dir.path().join("tandem.db")));
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 512];
    let n = conn.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // The connection stays open and idle.
    let stopped = std::time::Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        if stopped.elapsed() > std::time::Duration::from_secs(20) {
            server.child.kill().unwrap();
            panic!("still running 20 s after SIGTERM");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        stopped.elapsed() < std::time::Duration::from_millis(1500),
        "a stop with one idle connection took {:?}",
        stopped.elapsed()
    );
    drop(dir);
}

/// With the disk full, an accepted update cannot be written: a SIGTERM
/// still stops the server within its deadline (it does not retry forever),
/// and the exit status says that the final flush failed.
#[tokio::test]
async fn a_stop_with_failing_storage_ends_in_time_and_exits_non_zero() {
    let Some(disk) = common::disk::TmpDisk::mount("16m") else {
        return;
    };
    let http = reqwest::Client::new();
    let mut server = start_with(
        &sqlite(&disk.path().join("tandem.db")),
        &[("TANDEM_SHUTDOWN_TIMEOUT", "2s")],
    );
    let r = http
        .post(format!("{}/api/docs", server.base))
        .bearer_auth(KEY)
        .json(&json!({"id": "f"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    disk.fill();
    // Applied and queued, but never written: not durable, so a 503.
    let r = http
        .post(format!("{}/api/docs/f/update", server.base))
        .bearer_auth(KEY)
        .body(update(0, &"x".repeat(1 << 20), &Doc::new()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    let stopped = std::time::Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > std::time::Duration::from_secs(20) {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            panic!("still running 20 s after SIGTERM");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(15),
        "stopped after {:?}",
        stopped.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
}

/// Distributions start services with a soft limit of 1,024 open files; the
/// server raises its own to the hard limit at start, so that connections
/// are not refused by the kernel long before `TANDEM_MAX_CONNECTIONS`.
#[test]
fn the_server_raises_its_soft_limit_on_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tandem.db");
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$0\"",
            env!("CARGO_BIN_EXE_tandem"),
        ])
        .env("TANDEM_BIND", "127.0.0.1:0")
        .env("TANDEM_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("TANDEM_API_KEY", KEY)
        .env("TANDEM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().unwrap();
    let mut said = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        said |= line.contains("raised the soft limit on open files");
        if line.contains("listening on http://") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .expect("a soft limit");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(soft > 256, "soft limit still {soft}");
    assert!(said, "the raise is logged");
}
