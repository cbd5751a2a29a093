//! The relay without io_uring (`TANDEM_IO_URING=false`): each socket gets
//! its own `send`, as where the kernel or a seccomp profile refuses io_uring.
//! A file of its own, because the setting holds for the whole process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[path = "it/common/mod.rs"]
mod common;

use common::spawn_app;

#[actix_web::test]
async fn without_io_uring_a_stalled_peer_is_dropped_and_the_readers_get_every_byte() {
    let app = spawn_app(&["--send-queue-bytes", "1048576", "--io-uring", "false"]).await;
    common::a_stalled_peer_among_readers(&app, 2).await;
    let mut a = app.client("many").await;
    let mut b = app.client("many").await;
    let mut c = app.client("many").await;
    for client in [&mut a, &mut b, &mut c] {
        client.sync().await;
    }
    a.insert(0, "one").await;
    b.wait_text("one").await;
    c.wait_text("one").await;
    app.stop().await;
}
