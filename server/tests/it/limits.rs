//! Limits of SPEC §6: document size, connections per document and in total,
//! message rate, and the bounded send queue of a slow client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use common::*;
use futures_util::SinkExt;
use tandem_crdt::protocol;
use tokio_tungstenite::tungstenite::Message;

#[actix_web::test]
async fn an_update_that_makes_the_document_too_large_is_refused() {
    let app = spawn_app(&["--max-document-bytes", "4096"]).await;
    let mut a = app.client("big").await;
    let mut b = app.client("big").await;
    a.sync().await;
    b.sync().await;
    a.insert(0, "small").await;
    b.wait_text("small").await;
    a.insert(5, &"x".repeat(8000)).await;
    assert_eq!(a.ended().await, close_code(4413));
    b.insert(5, "!").await;
    let mut fresh = app.client("big").await;
    fresh.sync().await;
    fresh.wait_text("small!").await;
    app.stop().await;
}

#[actix_web::test]
async fn one_connection_over_a_limit_is_closed_with_1013() {
    let app = spawn_app(&["--max-connections-per-doc", "2", "--max-connections", "3"]).await;
    let mut a = app.client("full").await;
    let mut b = app.client("full").await;
    a.sync().await;
    b.sync().await;
    let mut third = app.client("full").await;
    assert_eq!(third.ended().await, close_code(1013));
    // A third connection to another document fits the total of 3 …
    let mut other = app.client("other").await;
    other.sync().await;
    // … and a fourth does not.
    let mut fourth = app.client("another").await;
    assert_eq!(fourth.ended().await, close_code(1013));
    // The room carries on.
    a.insert(0, "still here").await;
    b.wait_text("still here").await;
    app.stop().await;
}

#[actix_web::test]
async fn a_connection_that_keeps_sending_too_fast_is_closed_with_1013() {
    let app = spawn_app(&["--max-messages-per-second", "10"]).await;
    let mut c = app.client("flood").await;
    c.sync().await;
    // A burst of 1,000 is admitted; 3,000 at once is not.
    for i in 0..3000u32 {
        let frame = protocol::encode_sync_step1(&[0]).to_vec();
        if c.ws.send(Message::Binary(frame.into())).await.is_err() {
            assert!(i > 1000, "closed after only {i} messages");
            break;
        }
    }
    assert_eq!(c.ended().await, close_code(1013));
    app.stop().await;
}

#[actix_web::test]
async fn a_burst_of_1000_messages_is_admitted_by_default() {
    let app = spawn_app(&[]).await;
    let mut a = app.client("burst").await;
    let mut b = app.client("burst").await;
    a.sync().await;
    b.sync().await;
    let mut expected = String::new();
    for i in 0..1000u32 {
        let s = format!("{} ", i % 10);
        a.insert(expected.len() as u32, &s).await;
        expected.push_str(&s);
    }
    b.wait_text(&expected).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_client_that_never_reads_is_dropped_with_1013_and_the_room_carries_on() {
    let app = spawn_app(&["--send-queue-bytes", "1048576"]).await;
    common::a_stalled_peer_among_readers(&app, 0).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_stalled_peer_among_readers_is_dropped_and_the_readers_get_every_byte() {
    let app = spawn_app(&["--send-queue-bytes", "1048576"]).await;
    common::a_stalled_peer_among_readers(&app, 2).await;
    app.stop().await;
}
