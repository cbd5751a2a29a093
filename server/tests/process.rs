//! The real `tandem` binary as a child process: an update applied through
//! the HTTP API is durable the moment its 2xx arrives (SIGKILL right after
//! loses nothing), a deletion too, and a bad database URL stops the start
//! with a message and a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

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

fn start(db: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
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

fn update(at: u32, s: &str, doc: &Doc) -> Vec<u8> {
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, at, s);
    txn.encode_update_v1()
}

#[tokio::test]
async fn an_api_update_survives_sigkill_right_after_its_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tandem.db");
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
    let mut server = start(&db);
    assert!(db.exists());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
