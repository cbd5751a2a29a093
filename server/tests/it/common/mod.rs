//! Test helpers: `spawn_app()` starts the real server on 127.0.0.1:0 with a
//! fresh SQLite file, or a fresh PostgreSQL database with
//! `TANDEM_TEST_BACKEND=postgres` (see `db`; logs silent unless `TEST_LOG`
//! is set); `Client` is a raw WebSocket client holding a `yrs` document,
//! speaking y-protocols.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tandem::app::App;
use tandem::config::Settings;
use tandem_crdt::protocol::{self, Incoming};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    pub db_url: String,
    pub dir: std::sync::Arc<TestDir>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

/// A server on a fresh database of the backend the switch selects.
pub async fn spawn_app(extra: &[&str]) -> TestApp {
    spawn_app_in(std::sync::Arc::new(TestDir::new().await), extra).await
}

/// A server on a fresh SQLite file, whatever the switch: for tests that
/// look into the file.
pub async fn spawn_app_sqlite(extra: &[&str]) -> TestApp {
    spawn_app_in(std::sync::Arc::new(TestDir::sqlite()), extra).await
}

/// Starts a server on the database of `dir` (to restart one, stop it and
/// call this again with the same `dir`).
pub async fn spawn_app_in(dir: std::sync::Arc<TestDir>, extra: &[&str]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tandem::telemetry::init(tandem::config::LogFormat::Pretty);
    }
    let db_url = dir.db_url();
    let mut args = vec![
        "tandem",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &db_url,
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    let settings = Settings::try_parse_from(args).expect("test settings parse");
    let app = App::build(settings).await.expect("server starts");
    let addr = app.addr();
    let shutdown = app.shutdown_token();
    let done = actix_web::rt::spawn(async move {
        app.run_until_stopped().await.expect("server runs");
    });
    TestApp {
        addr,
        db_url,
        dir,
        shutdown,
        done,
    }
}

impl TestApp {
    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop, as on SIGTERM; waits until the server has finished.
    pub async fn stop(self) -> std::sync::Arc<TestDir> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("server stops in time")
            .expect("server task ends cleanly");
        self.dir
    }

    pub async fn client(&self, doc: &str) -> Client {
        Client::connect(&self.ws_url(doc)).await
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub doc: Doc,
    /// Awareness frames received, decoded.
    pub awareness: Vec<tandem_crdt::AwarenessUpdate>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        Client {
            ws,
            doc: Doc::new(),
            awareness: Vec::new(),
        }
    }

    /// The y-websocket handshake: send sync step 1, apply the server's step 2.
    pub async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send(protocol::encode_sync_step1(&sv).to_vec()).await;
        let mut got_step2 = false;
        self.recv_until(|m| {
            if matches!(m, Incoming::SyncStep2(_)) {
                got_step2 = true;
            }
            got_step2
        })
        .await;
    }

    pub async fn send(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Edits the text `t` locally and sends the update.
    pub async fn insert(&mut self, at: u32, s: &str) {
        let update = {
            let text = self.doc.get_or_insert_text("t");
            let mut txn = self.doc.transact_mut();
            text.insert(&mut txn, at, s);
            txn.encode_update_v1()
        };
        self.send(protocol::encode_update(&update).to_vec()).await;
    }

    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("t");
        let txn = self.doc.transact();
        text.get_string(&txn)
    }

    /// Reads messages (applying updates, recording awareness) until `done`
    /// returns true for one; panics after `WAIT`.
    pub async fn recv_until(&mut self, mut done: impl FnMut(&Incoming) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection open")
                .expect("valid frame");
            let Message::Binary(bytes) = msg else {
                continue;
            };
            let frame = bytes::Bytes::copy_from_slice(&bytes);
            for m in protocol::decode_frame(&frame).expect("server frames decode") {
                self.absorb(&m);
                if done(&m) {
                    return;
                }
            }
        }
    }

    fn absorb(&mut self, m: &Incoming) {
        match m {
            Incoming::SyncStep2(u) | Incoming::Update(u) => {
                let update = Update::decode_v1(u).expect("server update decodes");
                self.doc
                    .transact_mut()
                    .apply_update(update)
                    .expect("applies");
            }
            Incoming::Awareness { update, .. } => self.awareness.push(update.clone()),
            _ => {}
        }
    }

    /// Waits until the text equals `expected`.
    pub async fn wait_text(&mut self, expected: &str) {
        if self.text() == expected {
            return;
        }
        let doc = self.doc.clone();
        let expected = expected.to_string();
        self.recv_until(move |_| {
            let text = doc.get_or_insert_text("t");
            let txn = doc.transact();
            text.get_string(&txn) == expected
        })
        .await;
    }

    /// Reads until the server closes the connection; returns how.
    pub async fn ended(&mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The encoded full state (for comparing documents).
    pub fn state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

/// One writer, one peer that never reads and `readers` that do, in one room:
/// the stalled peer is dropped once its socket and queue are full, the
/// writer is never held up, the readers get every byte, and a client that
/// joins afterwards gets the whole text. (Short writes to a reader are rare
/// here; `fanout`'s unit tests force them.)
pub async fn a_stalled_peer_among_readers(app: &TestApp, readers: usize) {
    let mut writer = app.client("slow").await;
    writer.sync().await;
    let mut stalled = app.client("slow").await;
    stalled.sync().await;
    // Enough to fill the kernel's socket buffers (which grow to several MiB
    // on loopback) and then the 1 MiB queue.
    let chunk = "y".repeat(16384);
    let expected = chunk.repeat(800);
    let mut reading = Vec::new();
    // How much of the text each reader has: the readers share this thread
    // with the writer and the server, and one left behind by a megabyte
    // would be dropped as slow, which is not what this tests.
    let mut progress = Vec::new();
    for _ in 0..readers {
        let mut reader = app.client("slow").await;
        reader.sync().await;
        let expected = expected.clone();
        let has = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        progress.push(std::sync::Arc::clone(&has));
        reading.push(actix_web::rt::spawn(async move {
            let doc = reader.doc.clone();
            let want = expected.len();
            reader
                .recv_until(move |_| {
                    let text = doc.get_or_insert_text("t");
                    let len = text.get_string(&doc.transact()).len();
                    has.store(len, std::sync::atomic::Ordering::Relaxed);
                    len == want
                })
                .await;
            assert_eq!(reader.text(), expected);
        }));
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..800u32 {
            writer.insert(i * 16384, &chunk).await;
            // The readers share this thread: let them read, and keep them
            // within half the send queue of the writer.
            tokio::task::yield_now().await;
            let behind = (i as usize + 1).saturating_sub(32) * chunk.len();
            while progress
                .iter()
                .any(|p| p.load(std::sync::atomic::Ordering::Relaxed) < behind)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
    .await
    .expect("the writer is never held up by a stalled peer");
    // The room answers the writer's sync step 1 after every update the
    // writer sent before it, so a client joining after that answer gets the
    // whole text in its sync step 2 and nothing behind it. Joining earlier,
    // it could be sent the writer's last updates behind a sync step 2 of
    // megabytes, overflow its 1 MiB queue while still reading that, and be
    // dropped as slow (seen once in CI).
    writer.sync().await;
    // Everything the writer sent is in the room: once a fresh client has it,
    // the room has pushed all of it towards the stalled peer too (reading
    // the stalled peer before then would let it catch up instead).
    let mut fresh = app.client("slow").await;
    fresh.sync().await;
    fresh.wait_text(&expected).await;
    // The stalled peer finds a close with 1013 at the end of what it got.
    // With readers on this thread the writer's loop often takes longer than
    // the server's grace of a second for that close, and the peer is dropped.
    let ended = stalled.ended().await;
    if readers == 0 {
        assert_eq!(ended, close_code(1013));
    } else {
        assert!(
            ended == close_code(1013) || ended == Ended::Dropped,
            "{ended:?}"
        );
    }
    for reader in reading {
        reader.await.expect("every reader has the whole text");
    }
}

/// An awareness message announcing one client's state.
pub fn awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let update = tandem_crdt::AwarenessUpdate {
        entries: vec![tandem_crdt::AwarenessEntry {
            client,
            clock,
            json: json.into(),
        }],
    };
    protocol::encode_awareness(&update.encode()).to_vec()
}

pub fn close_code(code: u16) -> Ended {
    Ended::Closed(code)
}

#[allow(unused)]
fn _assert_close_code_type(_: WsCloseCode) {}
pub mod db;
pub mod disk;

#[allow(unused_imports)] // each test crate uses some of them
pub use db::{query_pair, test_store, TestDir};
