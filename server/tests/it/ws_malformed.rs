//! Every malformed input closes only its own connection, with the right
//! code, stores nothing, and leaves the room and its other clients working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use common::*;
use futures_util::SinkExt;
use tandem_crdt::protocol;
use tokio_tungstenite::tungstenite::Message;
use yrs::encoding::write::Write;

/// Sets up a room with an honest writer and reader sharing "before", lets
/// `attack` misbehave on a third connection, and checks the outcome.
async fn attack_room(app: &TestApp, doc: &str, expected: u16, attack: Message) {
    let mut writer = app.client(doc).await;
    let mut reader = app.client(doc).await;
    writer.sync().await;
    reader.sync().await;
    writer.insert(0, "before").await;
    reader.wait_text("before").await;

    let mut bad = app.client(doc).await;
    bad.ws.send(attack).await.expect("send");
    assert_eq!(bad.ended().await, close_code(expected), "{doc}");

    // The room carries on.
    writer.insert(6, " after").await;
    reader.wait_text("before after").await;
    let mut fresh = app.client(doc).await;
    fresh.sync().await;
    assert_eq!(fresh.text(), "before after", "{doc}");
    for mut c in [writer, reader, fresh] {
        c.ws.close(None).await.expect("close");
    }
}

fn bin(bytes: Vec<u8>) -> Message {
    Message::Binary(bytes.into())
}

#[actix_web::test]
async fn each_malformed_input_closes_only_its_connection() {
    let app = spawn_app(&["--max-message-bytes", "65536"]).await;
    let mut length_beyond = vec![0u8, 2];
    length_beyond.write_var(1000u32);
    length_beyond.extend_from_slice(&[1, 2, 3]);
    let garbage_update = protocol::encode_update(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x99]).to_vec();
    let awareness_not_json = {
        let mut body = Vec::new();
        body.write_var(1u32);
        body.write_var(77u64);
        body.write_var(1u32);
        body.write_string("{oops");
        protocol::encode_awareness(&body).to_vec()
    };
    let cases: Vec<(&str, u16, Message)> = vec![
        (
            "random-bytes",
            4400,
            bin(vec![0x17, 0xa3, 0x00, 0x42, 0xff, 0x08, 0x13]),
        ),
        ("truncated-varint", 4400, bin(vec![0x00, 0x02, 0xff])),
        ("length-beyond-frame", 4400, bin(length_beyond)),
        ("garbage-update", 4400, bin(garbage_update)),
        (
            "garbage-step2",
            4400,
            bin(protocol::encode_sync_step2(&[9, 9, 9, 9]).to_vec()),
        ),
        ("awareness-not-json", 4400, bin(awareness_not_json)),
        ("unknown-type", 4400, bin(vec![0x07, 0x00])),
        ("text-frame", 4400, Message::Text("hello".into())),
        ("too-large", 4413, bin(vec![0u8; 1 << 20])),
    ];
    for (doc, code, attack) in cases {
        attack_room(&app, doc, code, attack).await;
    }
    // After a restart, every room holds exactly what honest clients wrote.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, &[]).await;
    for doc in [
        "random-bytes",
        "garbage-update",
        "awareness-not-json",
        "too-large",
    ] {
        let mut c = app.client(doc).await;
        c.sync().await;
        assert_eq!(c.text(), "before after", "{doc} after restart");
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_huge_declared_frame_is_refused_without_reading_it() {
    let app = spawn_app(&[]).await;
    let mut c = app.client("huge").await;
    // 100 MiB declared; only the header is ever sent.
    let mut raw = Vec::new();
    raw.push(0x82u8);
    raw.push(0x80 | 127);
    raw.extend_from_slice(&(100u64 << 20).to_be_bytes());
    raw.extend_from_slice(&[0, 0, 0, 0]); // mask
    use tokio::io::AsyncWriteExt;
    match c.ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&raw).await.expect("write"),
        _ => unreachable!("plain TCP in tests"),
    }
    assert_eq!(c.ended().await, close_code(4413));
    app.stop().await;
}
