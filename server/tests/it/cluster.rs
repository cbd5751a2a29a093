//! Several nodes on one PostgreSQL database and one Redis (SPEC §7), each a
//! real server in this process with a key prefix of its own in Redis:
//! updates, awareness, deletes and counts cross nodes, and a node that
//! cannot reach Redis catches up through the database. Skipped, saying so,
//! without `TANDEM_TEST_POSTGRES_URL` and `TANDEM_TEST_REDIS_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use tandem_crdt::protocol::{self, Incoming};
use tandem_crdt::{AwarenessEntry, AwarenessUpdate};
use tokio_tungstenite::tungstenite::Message;

fn redis_url() -> Option<String> {
    let url = std::env::var("TANDEM_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: TANDEM_TEST_REDIS_URL is not set");
    }
    url
}

/// A fresh database and Redis prefix, and the settings a node needs.
struct Cluster {
    dir: Arc<TestDir>,
    redis: String,
    prefix: String,
}

impl Cluster {
    async fn new() -> Option<Cluster> {
        let redis = redis_url()?;
        let dir = TestDir::postgres().await?;
        Some(Cluster {
            dir: Arc::new(dir),
            redis,
            prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        })
    }

    async fn node(&self) -> TestApp {
        self.node_with_redis(&self.redis.clone()).await
    }

    async fn node_with_redis(&self, redis: &str) -> TestApp {
        spawn_app_in(
            Arc::clone(&self.dir),
            &["--redis-url", redis, "--redis-prefix", &self.prefix],
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The counts' keys expire by themselves; removed here all the same.
        if let Ok(client) = redis::Client::open(self.redis.as_str()) {
            if let Ok(mut conn) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.prefix))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        }
    }
}

/// Reads until an awareness message names `client` with a state that
/// `matches`.
async fn wait_awareness(c: &mut Client, client: u64, matches: impl Fn(&str) -> bool) {
    c.recv_until(|m| match m {
        Incoming::Awareness { update, .. } => update
            .entries
            .iter()
            .any(|e| e.client == client && matches(&e.json)),
        _ => false,
    })
    .await;
}

#[actix_web::test]
async fn updates_and_awareness_cross_nodes_and_a_late_joiner_gets_everything() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a_node = cluster.node().await;
    let b_node = cluster.node().await;
    let mut a = a_node.client("shared").await;
    a.sync().await;
    let mut b = b_node.client("shared").await;
    b.sync().await;

    a.insert(0, "from a;").await;
    b.wait_text("from a;").await;
    b.insert(7, "from b;").await;
    a.wait_text("from a;from b;").await;

    // Awareness crosses, and so does its removal when the connection ends.
    a.send(awareness(777, 1, r#"{"user":"ann"}"#)).await;
    wait_awareness(&mut b, 777, |s| s.contains("ann")).await;
    b.send(awareness(888, 1, r#"{"user":"bob"}"#)).await;
    wait_awareness(&mut a, 888, |s| s.contains("bob")).await;

    // A third node that opens the document afterwards gets the text, and
    // the awareness of both others when it joins.
    let c_node = cluster.node().await;
    let mut c = c_node.client("shared").await;
    c.sync().await;
    assert_eq!(c.text(), "from a;from b;");
    c.send(vec![3]).await; // query awareness
    let seen = Instant::now();
    loop {
        let known: Vec<u64> = c
            .awareness
            .iter()
            .flat_map(|u| {
                u.entries
                    .iter()
                    .filter(|e| &*e.json != "null")
                    .map(|e| e.client)
            })
            .collect();
        if known.contains(&777) && known.contains(&888) {
            break;
        }
        assert!(
            seen.elapsed() < WAIT,
            "the third node's client saw awareness of {known:?}"
        );
        c.recv_until(|m| matches!(m, Incoming::Awareness { .. }))
            .await;
    }

    drop(a);
    wait_awareness(&mut b, 777, |s| s == "null").await;
    drop(b);
    drop(c);
    c_node.stop().await;
    b_node.stop().await;
    a_node.stop().await;
}

#[actix_web::test]
async fn a_node_that_cannot_reach_redis_serves_through_the_database() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a_node = cluster.node().await;
    // Nothing listens on port 1.
    let b_node = cluster.node_with_redis("redis://127.0.0.1:1").await;
    let ready = reqwest::get(b_node.http("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "Redis alone never makes a node unready"
    );
    let mut a = a_node.client("cut-off").await;
    a.sync().await;
    let mut b = b_node.client("cut-off").await;
    b.sync().await;
    let started = Instant::now();
    a.insert(0, "through the database").await;
    b.wait_text("through the database").await;
    let a_to_b = started.elapsed();
    let started = Instant::now();
    b.insert(0, "and back: ").await;
    a.wait_text("and back: through the database").await;
    let b_to_a = started.elapsed();
    assert!(
        a_to_b < Duration::from_secs(5) && b_to_a < Duration::from_secs(5),
        "without Redis, updates took {a_to_b:?} and {b_to_a:?} to cross"
    );
    drop((a, b));
    b_node.stop().await;
    a_node.stop().await;
}

#[actix_web::test]
async fn a_delete_on_one_node_closes_the_documents_sockets_on_every_node_with_4404() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a_node = cluster.node().await;
    let b_node = cluster.node().await;
    let mut a = a_node.client("doomed").await;
    a.sync().await;
    let mut b = b_node.client("doomed").await;
    b.sync().await;
    a.insert(0, "x").await;
    b.wait_text("x").await;
    let deleted = reqwest::Client::new()
        .delete(a_node.http("/api/docs/doomed"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let started = Instant::now();
    assert_eq!(b.ended().await, close_code(4404));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(a.ended().await, close_code(4404));
    b_node.stop().await;
    a_node.stop().await;
}

async fn clients(node: &TestApp, doc: &str) -> u64 {
    let body: serde_json::Value = reqwest::get(node.http(&format!("/api/docs/{doc}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["clients"].as_u64().unwrap()
}

#[actix_web::test]
async fn connections_are_counted_across_nodes() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a_node = cluster.node().await;
    let b_node = cluster.node().await;
    let c_node = cluster.node().await;
    let mut a = a_node.client("counted").await;
    a.sync().await;
    let mut b1 = b_node.client("counted").await;
    b1.sync().await;
    let mut b2 = b_node.client("counted").await;
    b2.sync().await;
    // A and B hold the document; C does not, and asks Redis.
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = [
            clients(&a_node, "counted").await,
            clients(&b_node, "counted").await,
            clients(&c_node, "counted").await,
        ];
        if seen == [3, 3, 3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts on the three nodes: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b2);
    let deadline = Instant::now() + WAIT;
    while clients(&a_node, "counted").await != 2 {
        assert!(
            Instant::now() < deadline,
            "a closed connection still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b1));
    c_node.stop().await;
    b_node.stop().await;
    a_node.stop().await;
}

/// Kills every Redis connection but its own: the nodes' publishers and
/// subscribers (and those of other tests, which must cope too).
fn kill_redis_connections(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    for kind in ["pubsub", "normal"] {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query(&mut conn)
            .unwrap();
    }
}

#[actix_web::test]
async fn edits_cross_within_two_seconds_after_redis_drops_every_connection() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let a_node = cluster.node().await;
    let b_node = cluster.node().await;
    let mut a = a_node.client("killed").await;
    a.sync().await;
    let mut b = b_node.client("killed").await;
    b.sync().await;
    let mut expected = String::new();
    for round in 0..5 {
        let piece = format!("before {round};");
        a.insert(expected.len() as u32, &piece).await;
        expected.push_str(&piece);
        kill_redis_connections(&cluster.redis);
        let piece = format!("after {round};");
        a.insert(expected.len() as u32, &piece).await;
        expected.push_str(&piece);
        let started = Instant::now();
        b.wait_text(&expected).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round}: the edit took {:?} to cross",
            started.elapsed()
        );
    }
    drop((a, b));
    b_node.stop().await;
    a_node.stop().await;
}

/// A node that dies without a word: its awareness disappears from the
/// others once its heartbeats lapse. The dead node is played by hand: a
/// row in `cluster_nodes` that never beats again, and its frames on the
/// document's channel.
#[actix_web::test]
async fn a_dead_nodes_awareness_disappears_within_fifteen_seconds() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let node = cluster.node().await;
    let mut c = node.client("haunted").await;
    c.sync().await;
    let db_url = cluster.dir.db_url();
    let (cluster_id, doc_id, ghost) = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
        let cluster_id: String = sqlx::query_scalar("SELECT id FROM cluster_identity")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let doc_id: i64 = sqlx::query_scalar("SELECT id FROM documents WHERE name = 'haunted'")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let ghost: i64 =
            sqlx::query_scalar("INSERT INTO cluster_nodes DEFAULT VALUES RETURNING id")
                .fetch_one(&mut db)
                .await
                .unwrap();
        (cluster_id, doc_id, ghost)
    };
    let state = AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client: 4242,
            clock: 1,
            json: r#"{"user":"ghost"}"#.into(),
        }],
    };
    let frame = tandem::cluster::frame::Frame {
        node: ghost as u64,
        body: tandem::cluster::frame::Body::Awareness(state.encode().into()),
    };
    let channel = format!("{}tandem:{cluster_id}:d:{doc_id}", cluster.prefix);
    let redis = redis::Client::open(cluster.redis.as_str()).unwrap();
    let mut conn = redis.get_connection().unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(frame.encode().as_ref())
        .query(&mut conn)
        .unwrap();
    wait_awareness(&mut c, 4242, |s| s.contains("ghost")).await;
    // Its beat (made at insert) lapses after 10 s; nodes look every 2 s.
    let seen = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    'removed: loop {
        let msg = tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .expect("the dead node's awareness is still there after 15 s")
            .expect("connection open")
            .expect("valid frame");
        let Message::Binary(bytes) = msg else {
            continue;
        };
        let frame = bytes::Bytes::copy_from_slice(&bytes);
        for m in protocol::decode_frame(&frame).unwrap() {
            if let Incoming::Awareness { update, .. } = m {
                if update
                    .entries
                    .iter()
                    .any(|e| e.client == 4242 && &*e.json == "null")
                {
                    break 'removed;
                }
            }
        }
    }
    eprintln!("dead node's awareness removed after {:?}", seen.elapsed());
    drop(c);
    node.stop().await;
}

/// A node whose row is gone (removed after a long pause, or by hand) makes
/// it again with its next beat, so the others do not count it dead.
#[actix_web::test]
async fn a_node_whose_row_is_gone_beats_it_back() {
    use sqlx::Connection;
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let node = cluster.node().await;
    let mut db = sqlx::PgConnection::connect(&cluster.dir.db_url())
        .await
        .unwrap();
    sqlx::query("DELETE FROM cluster_nodes")
        .execute(&mut db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_nodes")
            .fetch_one(&mut db)
            .await
            .unwrap();
        if rows == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node's row did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(db);
    node.stop().await;
}
