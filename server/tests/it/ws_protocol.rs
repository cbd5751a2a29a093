//! The y-websocket protocol against the real server: handshake, relay,
//! awareness, query-awareness, isolation, and name checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use common::*;
use tandem_crdt::protocol::{self, Incoming};

#[actix_web::test]
async fn server_sends_sync_step1_first_and_answers_step1_with_step2() {
    let app = spawn_app(&[]).await;
    let mut c = app.client("hello").await;
    let mut first = None;
    c.recv_until(|m| {
        first = Some(m.clone());
        true
    })
    .await;
    assert!(matches!(first, Some(Incoming::SyncStep1(_))), "{first:?}");
    c.sync().await;
    app.stop().await;
}

#[actix_web::test]
async fn updates_reach_the_other_clients_and_late_joiners() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("doc").await;
    let mut b = app.client("doc").await;
    a.sync().await;
    b.sync().await;
    a.insert(0, "hello").await;
    b.wait_text("hello").await;
    b.insert(5, " world").await;
    a.wait_text("hello world").await;
    let mut late = app.client("doc").await;
    late.sync().await;
    assert_eq!(late.text(), "hello world");
    app.stop().await;
}

#[actix_web::test]
async fn awareness_is_echoed_relayed_queried_and_removed_on_close() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("aw").await;
    let mut b = app.client("aw").await;
    a.sync().await;
    b.sync().await;
    a.send(awareness(4242, 1, r#"{"user":{"name":"ann"}}"#))
        .await;
    // The sender hears its own state back (the stock client's liveness signal).
    a.recv_until(|m| matches!(m, Incoming::Awareness { update, .. } if update.entries.iter().any(|e| e.client == 4242)))
        .await;
    b.recv_until(|m| matches!(m, Incoming::Awareness { update, .. } if update.entries.iter().any(|e| e.client == 4242)))
        .await;

    // A late joiner gets the current states on connect, and again on query.
    let mut late = app.client("aw").await;
    late.recv_until(|m| matches!(m, Incoming::Awareness { update, .. } if update.entries.iter().any(|e| e.client == 4242 && e.json.contains("ann"))))
        .await;
    late.send(vec![protocol::MSG_QUERY_AWARENESS]).await;
    late.recv_until(|m| matches!(m, Incoming::Awareness { update, .. } if update.entries.iter().any(|e| e.client == 4242)))
        .await;

    // Closing `a` removes its client for everyone else.
    a.ws.close(None).await.expect("close");
    b.recv_until(|m| matches!(m, Incoming::Awareness { update, .. } if update.entries.iter().any(|e| e.client == 4242 && &*e.json == "null")))
        .await;
    app.stop().await;
}

#[actix_web::test]
async fn rooms_are_isolated() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("room-a").await;
    let mut b = app.client("room-b").await;
    a.sync().await;
    b.sync().await;
    a.insert(0, "only in a").await;
    b.insert(0, "only in b").await;
    let mut a2 = app.client("room-a").await;
    a2.sync().await;
    a2.wait_text("only in a").await;
    let mut b2 = app.client("room-b").await;
    b2.sync().await;
    b2.wait_text("only in b").await;
    // Case-sensitive names are different documents.
    let mut upper = app.client("ROOM-A").await;
    upper.sync().await;
    assert_eq!(upper.text(), "");
    app.stop().await;
}

#[actix_web::test]
async fn invalid_names_are_refused_with_400_before_the_upgrade() {
    let app = spawn_app(&[]).await;
    let long = "x".repeat(256);
    for bad in ["a%20b", "a/b", "%C3%A9", long.as_str()] {
        let err = tokio_tungstenite::connect_async(app.ws_url(bad))
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status(), 400, "{bad}");
                let body =
                    String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
                assert!(body.contains("invalid_document_name"), "{bad}: {body}");
            }
            other => panic!("{bad}: expected HTTP 400, got {other:?}"),
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_idle_connection_gets_the_keepalive_every_ping_interval() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app(&["--ping-interval", "1s", "--ping-timeout", "3s"]).await;
    let mut c = app.client("quiet").await;
    c.sync().await;
    // Ticks at 1, 2 and 3 s: the first follows the join's own frames; the
    // next two must each carry a keepalive (the stock client reconnects
    // after 30 s without an application message).
    let mut keepalives = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(3600);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, c.ws.next()).await {
        if let Message::Binary(bytes) = msg.expect("valid frame") {
            if bytes.as_ref() == [protocol::MSG_AWARENESS, 1, 0] {
                keepalives += 1;
            }
        }
    }
    assert!(keepalives >= 2, "{keepalives} keepalives in 3.6 s");
    app.stop().await;
}

#[actix_web::test]
async fn a_reader_hears_from_the_server_at_least_every_ping_interval() {
    use futures_util::StreamExt;

    // SPEC §2: the stock client reconnects after 30 s without a message, so
    // every connection hears from the server at least every ping interval
    // (15 s by default). A writer edits every 1.5 s; between its edits the
    // reader must still hear something within each 1 s interval. (A
    // keepalive sent at a tick only when nothing went out since the last
    // tick left gaps of up to two intervals.)
    let app = spawn_app(&["--ping-interval", "1s", "--ping-timeout", "3s"]).await;
    let mut writer = app.client("heard").await;
    writer.sync().await;
    let mut reader = app.client("heard").await;
    reader.sync().await;
    let start = tokio::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(8);
    let mut edit = tokio::time::interval(std::time::Duration::from_millis(1500));
    let mut last = start;
    let mut widest = std::time::Duration::ZERO;
    let mut edits = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = edit.tick() => {
                writer.insert(0, "x").await;
                edits += 1;
            }
            msg = reader.ws.next() => {
                let Some(Ok(msg)) = msg else { panic!("the reader's connection ended: {msg:?}") };
                // Pings are invisible to page code: only messages count.
                if !msg.is_binary() {
                    continue;
                }
                let now = tokio::time::Instant::now();
                widest = widest.max(now - last);
                last = now;
            }
            _ = writer.ws.next() => {}
        }
    }
    widest = widest.max(deadline - last);
    assert!(edits >= 5, "{edits} edits");
    // The interval, and a quarter of it for the machine's scheduling.
    assert!(
        widest <= std::time::Duration::from_millis(1250),
        "the reader heard nothing for {widest:?}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn only_idle_connections_are_pinged_and_an_unanswered_ping_closes_one() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app(&["--ping-interval", "1s", "--ping-timeout", "2s"]).await;
    let mut talking = app.client("pings").await;
    talking.sync().await;
    let mut answering = app.client("pings").await;
    answering.sync().await;
    let mut silent = app.client("pings").await;
    silent.sync().await;

    // For 4.5 s: one client sends a keepalive every 300 ms, one only reads
    // (and so answers pings), one reads nothing at all.
    let mut talking_pings = 0;
    let mut answering_pings = 0;
    let mut answering_closed = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(4500);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                talking
                    .ws
                    .send(Message::Binary(vec![protocol::MSG_AWARENESS, 1, 0].into()))
                    .await
                    .expect("sends");
            }
            msg = talking.ws.next() => {
                if let Some(Ok(Message::Ping(_))) = msg {
                    talking_pings += 1;
                }
            }
            msg = answering.ws.next() => match msg {
                Some(Ok(Message::Ping(_))) => answering_pings += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => answering_closed = true,
                _ => {}
            },
        }
    }
    assert_eq!(
        talking_pings, 0,
        "a client heard from every interval is not pinged"
    );
    assert!(answering_pings >= 1, "an idle client is pinged");
    assert!(!answering_closed, "a client that answers its pings stays");
    // The silent one left its pings unanswered for over 2 s: closed. (Its
    // close frame may never be read: reading makes tungstenite send the
    // pongs it owes, the closed socket answers with a reset, and the reset
    // discards what was buffered.) The server counts the other two.
    let clients = || async {
        let meta: serde_json::Value = reqwest::get(app.http("/api/docs/pings"))
            .await
            .expect("answers")
            .json()
            .await
            .expect("json");
        meta["clients"].as_u64()
    };
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while clients().await != Some(2) && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        clients().await,
        Some(2),
        "the silent client is closed for its unanswered pings"
    );
    drop(silent);
    app.stop().await;
}
