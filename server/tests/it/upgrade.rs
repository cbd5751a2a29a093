//! The upgrade hook (`routes/ws.rs::take_over`) on raw TCP: what a client
//! sends right behind its upgrade request is read, and an upgrade request
//! the app does not answer with 101 gets the app's own response.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::time::Duration;

use common::spawn_app;
use tandem_crdt::protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A masked client frame (RFC 6455 §5.2) with a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let len = u8::try_from(payload.len()).expect("short payload");
    assert!(len < 126);
    let mut out = vec![0x80 | opcode, 0x80 | len];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads until `pred` holds for what arrived, or fails after 10 s.
async fn read_until(stream: &mut TcpStream, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !pred(&got) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed early; got {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("in time");
    got
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[actix_web::test]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    let app = spawn_app(&[]).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    // The request and a sync step 1 in one write: the frame arrives in the
    // HTTP layer's read buffer, which the session takes over.
    let step1 = protocol::encode_sync_step1(&[0]);
    let mut bytes = upgrade_request("/ws/early").into_bytes();
    bytes.extend(client_frame(0x2, &step1));
    stream.write_all(&bytes).await.expect("write");

    let got = read_until(&mut stream, |got| {
        // 101, then the server's step 1, then its step 2 (message 0, sync 1).
        find(got, b"\r\n\r\n").is_some_and(|end| {
            got[end..]
                .windows(4)
                .any(|w| w[0] == 0x82 && w[2] == protocol::MSG_SYNC && w[3] == 1)
        })
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_upgrade_the_app_refuses_gets_its_json_error_and_a_close() {
    let app = spawn_app(&[]).await;
    for (path, status) in [
        ("/nowhere", "404"),
        ("/ws/bad%20name", "400"),
        ("/healthz", "200"),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        stream
            .write_all(upgrade_request(path).as_bytes())
            .await
            .expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("the server closes the connection")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {text}"
        );
        assert!(text.contains("connection: close"), "{path}: {text}");
        if status != "200" {
            assert!(text.contains("\"error\""), "{path}: {text}");
        }
    }
    app.stop().await;
}
