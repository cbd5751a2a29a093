//! The subcommands and the operations features, with the real binary on
//! real sockets: `backup` while a client writes, `export` then `import`
//! into a fresh database, `token`, `check`; ES256 client tokens with
//! issuer and audience checks; the access log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update};

const KEY: &str = "cli-test-key";

struct Server {
    child: Child,
    base: String,
    /// Every line the server wrote to standard output.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn db_url(db: &Path) -> String {
    format!("sqlite://{}", db.display())
}

fn start(db: &Path, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env("TANDEM_API_KEY", KEY)
        .env("TANDEM_DATABASE_URL", db_url(db))
        .envs(env.iter().copied())
        .env("TANDEM_BIND", "127.0.0.1:0")
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
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        base: format!("http://{addr}"),
        lines: kept,
    }
}

/// Runs `tandem args…` on `db` to its end.
fn tandem(db: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env("TANDEM_API_KEY", KEY)
        .env("TANDEM_DATABASE_URL", db_url(db))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn ws(&self, doc: &str, token: &str) -> String {
        format!(
            "{}/ws/{doc}?token={token}",
            self.base.replacen("http", "ws", 1)
        )
    }

    async fn create(&self, http: &reqwest::Client, doc: &str) {
        let r = http
            .post(self.url("/api/docs"))
            .bearer_auth(KEY)
            .json(&json!({ "id": doc }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{doc}");
    }

    async fn apply(&self, http: &reqwest::Client, doc: &str, update: Vec<u8>) {
        let r = http
            .post(self.url(&format!("/api/docs/{doc}/update")))
            .bearer_auth(KEY)
            .body(update)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{doc}");
    }

    async fn json(&self, http: &reqwest::Client, doc: &str) -> Value {
        let r = http
            .get(self.url(&format!("/api/docs/{doc}/json")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{doc}");
        r.json().await.unwrap()
    }

    async fn state(&self, http: &reqwest::Client, doc: &str) -> Vec<u8> {
        let r = http
            .get(self.url(&format!("/api/docs/{doc}/update")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{doc}");
        r.bytes().await.unwrap().to_vec()
    }

    /// Waits for an output line holding every one of `needles`.
    async fn wait_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no line with {needles:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Appends `s` to the text `t` of `doc`; returns the update.
fn append(doc: &Doc, s: &str) -> Vec<u8> {
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, s);
    txn.encode_update_v1()
}

fn text_of(state: &[u8]) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    let txn = doc.transact();
    text.get_string(&txn)
}

/// A document's state re-encoded from a fresh `Doc`, and its state vector.
fn canonical(state: &[u8]) -> (Vec<u8>, StateVector) {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).unwrap())
        .unwrap();
    let txn = doc.transact();
    (
        txn.encode_state_as_update_v1(&StateVector::default()),
        txn.state_vector(),
    )
}

#[tokio::test]
async fn a_backup_taken_while_a_client_writes_serves_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let http = reqwest::Client::new();
    let server = start(&db, &[]);
    let mut before = Vec::new();
    for i in 0..5 {
        let name = format!("doc-{i}");
        server.create(&http, &name).await;
        let doc = Doc::new();
        for j in 0..20 {
            server
                .apply(&http, &name, append(&doc, &format!("{i}.{j};")))
                .await;
        }
        before.push((name.clone(), server.json(&http, &name).await));
    }
    server.create(&http, "busy").await;

    // A client keeps writing through the API, before, during and after the backup.
    let acknowledged = Arc::new(Mutex::new(String::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (http, base, acknowledged, stop) = (
            http.clone(),
            server.base.clone(),
            Arc::clone(&acknowledged),
            stop.clone(),
        );
        tokio::spawn(async move {
            let doc = Doc::new();
            let mut n = 0u32;
            while !stop.is_cancelled() {
                let piece = format!("{n};");
                let r = http
                    .post(format!("{base}/api/docs/busy/update"))
                    .bearer_auth(KEY)
                    .body(append(&doc, &piece))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                acknowledged.lock().unwrap().push_str(&piece);
                n += 1;
            }
            n
        })
    };
    while acknowledged.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written_before = acknowledged.lock().unwrap().clone();
    let backup = dir.path().join("backup.db");
    let out = {
        let (db, backup) = (db.clone(), backup.clone());
        tokio::task::spawn_blocking(move || tandem(&db, &[], &["backup", backup.to_str().unwrap()]))
            .await
            .unwrap()
    };
    assert!(out.status.success(), "{}", stderr(&out));
    stop.cancel();
    let writes = writer.await.unwrap();
    assert!(writes > 0);

    // A second backup to the same file is refused, and the file kept.
    let len = std::fs::metadata(&backup).unwrap().len();
    let again = tandem(&db, &[], &["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(std::fs::metadata(&backup).unwrap().len(), len);
    drop(server);

    let restored = start(&backup, &[]);
    for (name, json) in &before {
        assert_eq!(&restored.json(&http, name).await, json, "{name}");
    }
    let busy = text_of(&restored.state(&http, "busy").await);
    assert!(
        busy.starts_with(&written_before),
        "the backup lost writes acknowledged before it began: {} < {}",
        busy.len(),
        written_before.len()
    );
}

/// Creates document `name` (the `i`th) and writes ten text appends and a
/// map through the API.
async fn fill(server: &Server, http: &reqwest::Client, name: &str, i: usize) {
    server.create(http, name).await;
    let doc = Doc::new();
    for j in 0..10 {
        server
            .apply(http, name, append(&doc, &format!("{i}/{j} ")))
            .await;
    }
    let map_update = {
        let map = doc.get_or_insert_map("m");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "k", format!("v{i}"));
        map.insert(&mut txn, "n", i64::try_from(i).unwrap());
        txn.encode_update_v1()
    };
    server.apply(http, name, map_update).await;
}

#[tokio::test]
async fn export_then_import_into_a_fresh_database_gives_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("source.db");
    let http = reqwest::Client::new();
    let server = start(&db, &[]);
    let long = "x".repeat(255);
    let names = ["notes", "Notes", "team:a@b.c~d", "..x", long.as_str()];
    for (i, name) in names.iter().enumerate() {
        fill(&server, &http, name, i).await;
    }
    // A WebSocket edit too.
    let token = String::from_utf8(tandem(&db, &[], &["token", "--doc", "notes"]).stdout).unwrap();
    let mut ws = common::Client::connect(&server.ws("notes", token.trim())).await;
    ws.sync().await;
    ws.insert(0, "from the socket ").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.json(&http, "notes").await["t"]
        .as_str()
        .unwrap()
        .starts_with("from the socket")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Exported while the server runs.
    let export = dir.path().join("export");
    let out = tandem(&db, &[], &["export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exported 5 documents"),
        "{}",
        stderr(&out)
    );
    let mut expected = Vec::new();
    for name in &names {
        expected.push((
            server.json(&http, name).await,
            canonical(&server.state(&http, name).await),
        ));
    }
    drop(ws);
    drop(server);
    let files: Vec<String> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 11, "{files:?}");
    assert!(
        files.iter().all(|f| f.len() < 255 && !f.starts_with('.')),
        "{files:?}"
    );
    // Distinct on a case-insensitive file system too.
    let folded: std::collections::HashSet<String> =
        files.iter().map(|f| f.to_lowercase()).collect();
    assert_eq!(folded.len(), files.len());

    let fresh = dir.path().join("fresh.db");
    let out = tandem(&fresh, &[], &["import", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = start(&fresh, &[]);
    for (name, (json, state)) in names.iter().zip(&expected) {
        assert_eq!(&server.json(&http, name).await, json, "{name}");
        assert_eq!(
            &canonical(&server.state(&http, name).await),
            state,
            "{name}"
        );
    }

    // Importing again is refused without --overwrite, and changes nothing.
    server
        .apply(&http, "notes", append(&Doc::new(), "local change"))
        .await;
    let changed = server.json(&http, "notes").await;
    let out = tandem(&fresh, &[], &["import", export.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
    assert_eq!(server.json(&http, "notes").await, changed);
    drop(server);
    // With it, the documents are replaced (not merged).
    let out = tandem(
        &fresh,
        &[],
        &["import", "--overwrite", export.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let server = start(&fresh, &[]);
    assert_eq!(server.json(&http, "notes").await, expected[0].0);
}

/// Moving between databases: every document exported from SQLite and
/// imported into PostgreSQL reads back with the same JSON and state.
#[tokio::test]
async fn export_from_sqlite_then_import_into_postgres_gives_the_same_documents() {
    let Some(pg) = common::db::PgDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("source.db");
    let http = reqwest::Client::new();
    let server = start(&db, &[]);
    let names = ["notes", "Notes", "team:a@b.c~d"];
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        fill(&server, &http, name, i).await;
        expected.push((
            server.json(&http, name).await,
            canonical(&server.state(&http, name).await),
        ));
    }
    let export = dir.path().join("export");
    let out = tandem(&db, &[], &["export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(server);

    let into_pg = [("TANDEM_DATABASE_URL", pg.url.as_str())];
    let out = tandem(&db, &into_pg, &["import", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = start(&db, &into_pg);
    for (name, (json, state)) in names.iter().zip(&expected) {
        assert_eq!(&server.json(&http, name).await, json, "{name}");
        assert_eq!(
            &canonical(&server.state(&http, name).await),
            state,
            "{name}"
        );
    }
    drop(server);
}

#[tokio::test]
async fn a_cli_token_opens_a_websocket_and_a_read_only_one_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let http = reqwest::Client::new();
    let server = start(&db, &[]);
    server.create(&http, "shared").await;
    let mint = |args: &[&str]| {
        let out = tandem(&db, &[], args);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let writer = mint(&["token", "--doc", "sha*", "--user", "u1"]);
    let reader = mint(&["token", "--doc", "shared", "--read-only", "--ttl", "10m"]);

    let mut w = common::Client::connect(&server.ws("shared", &writer)).await;
    w.sync().await;
    w.insert(0, "written").await;
    let mut r = common::Client::connect(&server.ws("shared", &reader)).await;
    r.sync().await;
    r.wait_text("written").await;
    r.insert(0, "NOT ").await;
    // Frames of one connection are handled in order: once this sync is
    // answered, the update before it has been dropped.
    r.sync().await;
    w.sync().await;
    assert_eq!(server.json(&http, "shared").await["t"], "written");
    assert_eq!(w.text(), "written");

    // Without a secret there is nothing the server would accept.
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_API_KEY")
        .env_remove("TANDEM_TOKEN_SECRET")
        .args(["token", "--doc", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn check_redacts_secrets_and_fails_on_a_bad_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let env = [
        ("TANDEM_API_KEY", "hunter2-api-key"),
        (
            "TANDEM_TOKEN_SECRET",
            "hunter2-token-secret-hunter2-token-secret",
        ),
    ];
    let out = tandem(&db, &env, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("redacted"), "{stdout}");
    assert!(stdout.contains("database: reachable"), "{stdout}");

    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    for url in [
        "mysql://localhost/x".to_string(),
        format!("sqlite://{}/sub/t.db", blocker.display()),
    ] {
        let out = tandem(&db, &[("TANDEM_DATABASE_URL", url.as_str())], &["check"]);
        assert!(!out.status.success(), "{url}");
        assert!(stderr(&out).contains("tandem:"), "{url}: {}", stderr(&out));
    }
}

/// `tandem migrate` creates the whole schema on a new database and exits;
/// run again it changes nothing; a server then starts on it.
#[tokio::test]
async fn migrate_creates_the_schema_once_and_a_server_starts_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let applied = |db: &Path| -> Vec<(i64, bool)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut q = conn
            .prepare("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let out = tandem(&db, &[], &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
        .unwrap()
        .count();
    let first = applied(&db);
    assert_eq!(first.len(), files, "{first:?}");
    assert!(first.iter().all(|(_, ok)| *ok), "{first:?}");
    let out = tandem(&db, &[], &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(applied(&db), first);
    let server = start(&db, &[]);
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    doc: &'a str,
    perm: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A P-256 key pair: the signing key (PKCS#8 DER) and the public key (PEM).
fn p256_pair() -> (EncodingKey, String) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = loop {
        if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break key;
        }
    };
    let der = secret.to_pkcs8_der().unwrap();
    let public = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (EncodingKey::from_ec_der(der.as_bytes()), public)
}

/// The status of a WebSocket handshake: 101 when accepted.
async fn handshake(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn es256_tokens_are_checked_with_their_public_key_issuer_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, public) = p256_pair();
    let (other, _) = p256_pair();
    let pem_file = dir.path().join("token.pub.pem");
    std::fs::write(&pem_file, &public).unwrap();
    let server = start(
        &dir.path().join("k.db"),
        &[
            ("TANDEM_TOKEN_PUBLIC_KEY", pem_file.to_str().unwrap()),
            ("TANDEM_TOKEN_ISSUER", "https://issuer.example"),
            ("TANDEM_TOKEN_AUDIENCE", "tandem"),
        ],
    );
    let exp = tandem::auth::now_secs() + 600;
    let sign = |key: &EncodingKey, alg: Algorithm, iss: Option<&str>, aud: Option<&str>| {
        let claims = Claims {
            doc: "signed",
            perm: "write",
            exp,
            iss,
            aud,
        };
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    };
    let iss = Some("https://issuer.example");
    let aud = Some("tandem");
    let good = sign(&signing, Algorithm::ES256, iss, aud);
    assert_eq!(handshake(&server.ws("signed", &good)).await, 101);
    for (why, token) in [
        ("another key", sign(&other, Algorithm::ES256, iss, aud)),
        (
            "wrong issuer",
            sign(&signing, Algorithm::ES256, Some("https://evil"), aud),
        ),
        ("no issuer", sign(&signing, Algorithm::ES256, None, aud)),
        (
            "wrong audience",
            sign(&signing, Algorithm::ES256, iss, Some("other")),
        ),
        ("no audience", sign(&signing, Algorithm::ES256, iss, None)),
        // HS256 is off without TANDEM_TOKEN_SECRET: not with the secret the
        // API key would give, nor with the public key's bytes as a secret.
        (
            "HS256 with the derived secret",
            sign(
                &EncodingKey::from_secret(&tandem::auth::token_secret_from_api_key(KEY)),
                Algorithm::HS256,
                iss,
                aud,
            ),
        ),
        (
            "HS256 with the public key as its secret",
            sign(
                &EncodingKey::from_secret(public.as_bytes()),
                Algorithm::HS256,
                iss,
                aud,
            ),
        ),
    ] {
        assert_eq!(handshake(&server.ws("signed", &token)).await, 401, "{why}");
    }
    // Nor can this server mint tokens it could not verify.
    let out = tandem(
        &dir.path().join("k.db"),
        &[("TANDEM_TOKEN_PUBLIC_KEY", public.as_str())],
        &["token", "--doc", "signed"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TANDEM_TOKEN_SECRET"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn with_a_secret_too_both_kinds_of_tokens_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, public) = p256_pair();
    let db = dir.path().join("b.db");
    let env = [
        ("TANDEM_TOKEN_PUBLIC_KEY", public.as_str()),
        (
            "TANDEM_TOKEN_SECRET",
            "an-hs256-secret-of-at-least-32-bytes!",
        ),
    ];
    let server = start(&db, &env);
    let es = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &Claims {
            doc: "d",
            perm: "read",
            exp: tandem::auth::now_secs() + 600,
            iss: None,
            aud: None,
        },
        &signing,
    )
    .unwrap();
    assert_eq!(handshake(&server.ws("d", &es)).await, 101);
    let out = tandem(&db, &env, &["token", "--doc", "d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hs = String::from_utf8(out.stdout).unwrap();
    assert_eq!(handshake(&server.ws("d", hs.trim())).await, 101);
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_without_the_query_string() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let http = reqwest::Client::new();
    let server = start(&db, &[]);
    let r = http
        .get(server.url("/readyz?token=query-secret-1"))
        .header("x-request-id", "req-given-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-given-1");
    // A refused API call gets an id of its own.
    let r = http.get(server.url("/api/docs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36);

    let out = tandem(&db, &[], &["token", "--doc", "logged"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut ws = common::Client::connect(&server.ws("logged", &token)).await;
    ws.sync().await;

    let line = server.wait_line(&["tandem::access", "req-given-1"]).await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["path"], "/readyz");
    assert_eq!(v["fields"]["method"], "GET");
    assert_eq!(v["fields"]["status"], 200);
    assert!(v["fields"]["latency_ms"].as_f64().is_some());
    server
        .wait_line(&["tandem::access", &generated, "401"])
        .await;
    let line = server.wait_line(&["tandem::access", "/ws/logged"]).await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["status"], 101);
    for line in server.lines.lock().unwrap().iter() {
        assert!(!line.contains("query-secret-1"), "{line}");
        assert!(!line.contains(&token), "{line}");
        if line.contains("tandem::access") {
            assert!(!line.contains("token="), "{line}");
        }
    }
}
