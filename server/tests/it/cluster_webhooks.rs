//! Webhooks exactly once per cluster (SPEC §7): several stores on one
//! PostgreSQL database stand for several nodes (each has its own pool, as a
//! node has). Each test gets a fresh database of the server
//! `TANDEM_TEST_POSTGRES_URL` names; without it, every test says it skipped
//! and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use tandem::store::Track;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::TestDir;
use tandem::store::{EndpointRow, Store};
use tandem::webhooks::events;

/// A fresh database and `n` stores on it (the nodes), or `None` when skipped.
async fn nodes(n: usize) -> Option<(TestDir, Vec<Arc<dyn Store>>)> {
    let dir = TestDir::postgres().await?;
    let mut stores = Vec::with_capacity(n);
    for _ in 0..n {
        stores.push(tandem::store::open(&dir.db_url()).await.unwrap());
    }
    Some((dir, stores))
}

fn endpoint(id: &str, events: &[&str]) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        url: format!("http://example.com/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        description: None,
        include_content: false,
        enabled: true,
        disabled_reason: None,
        secret: "whsec_AAAA".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: 1,
        updated_at: 1,
        doc_prefix: None,
    }
}

/// Records every due message to `endpoint` as delivered, as a sender would.
async fn deliver_all(store: &Arc<dyn Store>, endpoint: &str) {
    for m in store.lease_due(60_000, 1000, 1000, &[]).await.unwrap() {
        assert_eq!(m.endpoint_id, endpoint);
        let delivered = tandem::store::AttemptRecord {
            disabled_event: None,
            message_id: m.id.clone(),
            lease_token: m.lease_token.clone(),
            endpoint_id: m.endpoint_id.clone(),
            attempted_at: tandem::store::now_ms(),
            status_code: Some(200),
            latency_ms: 1,
            error: None,
            outcome: tandem::store::Outcome::Delivered,
        };
        store.record_attempt(&delivered).await.unwrap();
    }
}

/// The `data` of every message to `endpoint` of type `event_type`, oldest first.
async fn messages(
    store: &Arc<dyn Store>,
    endpoint: &str,
    event_type: &str,
) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = store
        .list_deliveries(
            endpoint,
            None,
            None,
            tandem::store::DeliveryLimits {
                count: 1000,
                bytes: usize::MAX,
            },
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.event_type == event_type)
        .map(|d| serde_json::from_str::<serde_json::Value>(&d.payload).unwrap()["data"].clone())
        .collect();
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_connections_on_several_nodes_create_a_document_once() {
    let Some((_db, stores)) = nodes(4).await else {
        return;
    };
    stores[0]
        .create_endpoint(&endpoint("ep", &[events::DOCUMENT_CREATED]))
        .await
        .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("doc-{i}")).collect();
    // Every node asks for every name at the same moment, as the first
    // connections of a document reaching several nodes at once would.
    let mut calls = tokio::task::JoinSet::new();
    for store in &stores {
        for _ in 0..2 {
            for name in &names {
                let store = Arc::clone(store);
                let name = name.clone();
                calls.spawn(async move {
                    let event = events::document_created(&name, 7, events::Source::WebSocket);
                    let found = store.find_or_create(&name, 7, Some(&event)).await.unwrap();
                    (name, found.id, found.created)
                });
            }
        }
    }
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids: BTreeMap<String, std::collections::BTreeSet<i64>> = BTreeMap::new();
    while let Some(r) = calls.join_next().await {
        let (name, id, was_created) = r.unwrap();
        *created.entry(name.clone()).or_default() += usize::from(was_created);
        ids.entry(name).or_default().insert(id);
    }
    for name in &names {
        assert_eq!(created[name], 1, "{name} created once");
        assert_eq!(ids[name].len(), 1, "{name} is one document");
    }
    let sent = messages(&stores[0], "ep", events::DOCUMENT_CREATED).await;
    let mut per_name: BTreeMap<String, usize> = BTreeMap::new();
    for data in &sent {
        *per_name
            .entry(data["doc"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_name.len(), names.len());
    assert!(per_name.values().all(|n| *n == 1), "{per_name:?}");
    for store in &stores {
        store.close().await;
    }
}

fn settings(debounce: Duration) -> tandem::config::WebhookSettings {
    tandem::config::WebhookSettings {
        retry_schedule: tandem::config::RetrySchedule(vec![Duration::from_secs(1)]),
        timeout: Duration::from_secs(1),
        debounce,
        max_wait: Duration::from_secs(30),
        allow_private: true,
        concurrency: 1,
        max_content_bytes: 256 * 1024,
        log_retention: Duration::from_secs(86_400),
    }
}

/// An update by `user`, appended by `log` as a node's persister would, and
/// noted the way it notes them.
fn append(
    log: &mut Box<dyn tandem::store::LogWriter>,
    hooks: &tandem::webhooks::Webhooks,
    doc: i64,
    user: &str,
) {
    let update = tandem::store::PendingUpdate {
        doc_id: doc,
        data: bytes::Bytes::from_static(&[0, 0, 0]),
        user: Some(Arc::from(user)),
    };
    log.append(&[update], Track::Changes).unwrap();
    hooks.note_changes([doc], tandem::store::now_ms());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_document_updated_per_window_counts_every_nodes_changes() {
    let Some((_db, stores)) = nodes(2).await else {
        return;
    };
    stores[0]
        .create_endpoint(&endpoint("ep", &[events::DOCUMENT_UPDATED]))
        .await
        .unwrap();
    let doc = stores[0].create("d", 1, None).await.unwrap().unwrap().id;
    let debounce = Duration::from_millis(500);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut hooks = Vec::new();
    let mut logs = Vec::new();
    for store in &stores {
        let h =
            tandem::webhooks::Webhooks::start(Arc::clone(store), settings(debounce), no_history())
                .await
                .unwrap();
        tokio::spawn(tandem::webhooks::outbox::run_debouncer(
            Arc::clone(&h),
            shutdown.clone(),
        ));
        hooks.push(h);
        logs.push(store.log_writer().unwrap());
    }
    let step = Duration::from_millis(200);
    // Node 0 writes once; node 1 keeps writing, each change within the
    // debounce of the one before, so the window stays open until its last.
    append(&mut logs[0], &hooks[0], doc, "alice");
    for _ in 0..4 {
        tokio::time::sleep(step).await;
        append(&mut logs[1], &hooks[1], doc, "bob");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        messages(&stores[0], "ep", events::DOCUMENT_UPDATED)
            .await
            .is_empty(),
        "nothing is sent before the debounce after the last change, whichever node wrote it"
    );
    tokio::time::sleep(debounce + Duration::from_millis(700)).await;
    let sent = messages(&stores[0], "ep", events::DOCUMENT_UPDATED).await;
    assert_eq!(sent.len(), 1, "one event for the window: {sent:?}");
    assert_eq!(sent[0]["updates"], 5);
    assert_eq!(sent[0]["bytes"], 15);
    assert_eq!(sent[0]["users"], serde_json::json!(["alice", "bob"]));
    // Delivered (else the next window's report would collapse into it).
    deliver_all(&stores[0], "ep").await;

    // The next window is reported once too, by whichever node gets it.
    append(&mut logs[1], &hooks[1], doc, "carol");
    tokio::time::sleep(debounce + Duration::from_millis(700)).await;
    let sent = messages(&stores[0], "ep", events::DOCUMENT_UPDATED).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["updates"], 1);
    assert_eq!(sent[1]["users"], serde_json::json!(["carol"]));
    shutdown.cancel();
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test]
async fn a_sender_whose_lease_was_taken_over_records_nothing() {
    let Some((_db, stores)) = nodes(2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    a.create_endpoint(&endpoint("ep", &["*"])).await.unwrap();
    a.enqueue_events(&[events::test("ep", 1)], 1).await.unwrap();
    let first = a.lease_due(300, 10, 10, &[]).await.unwrap().remove(0);
    // Node a's attempt outlives its lease; node b leases the message again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = b.lease_due(60_000, 10, 10, &[]).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease_token, first.lease_token);
    let record = |m: &tandem::store::DueMessage, outcome| tandem::store::AttemptRecord {
        disabled_event: None,
        message_id: m.id.clone(),
        lease_token: m.lease_token.clone(),
        endpoint_id: "ep".into(),
        attempted_at: 2,
        status_code: Some(500),
        latency_ms: 1,
        error: Some("late".into()),
        outcome,
    };
    let log = |store: &Arc<dyn Store>| {
        let store = Arc::clone(store);
        async move {
            let d = store
                .list_deliveries(
                    "ep",
                    None,
                    None,
                    tandem::store::DeliveryLimits {
                        count: 10,
                        bytes: usize::MAX,
                    },
                )
                .await
                .unwrap()
                .items
                .remove(0);
            (d.status, d.attempts.len(), d.next_attempt_at)
        }
    };
    let leased = log(a).await;
    // The late finisher's result is dropped: the message stays leased to b.
    assert!(!a
        .record_attempt(&record(
            &first,
            tandem::store::Outcome::GaveUp {
                disable_reason: "late".into()
            }
        ))
        .await
        .unwrap());
    assert_eq!(log(a).await, leased);
    assert!(a.get_endpoint("ep").await.unwrap().unwrap().enabled);
    // b's result stands, and a's, arriving after it, changes nothing.
    assert!(!b
        .record_attempt(&record(&second, tandem::store::Outcome::Delivered))
        .await
        .unwrap());
    let delivered = log(a).await;
    assert_eq!((delivered.0.as_str(), delivered.1), ("delivered", 1));
    assert!(!a
        .record_attempt(&record(&first, tandem::store::Outcome::RetryIn(0)))
        .await
        .unwrap());
    assert_eq!(log(a).await, delivered);
    for store in &stores {
        store.close().await;
    }
}

/// Waits up to a second for `check`, polling.
async fn within_a_second(what: &str, check: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not within 1 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_on_one_node_govern_every_node_within_a_second() {
    let Some((_db, stores)) = nodes(2).await else {
        return;
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut hooks = Vec::new();
    for store in &stores {
        let h = tandem::webhooks::Webhooks::start(
            Arc::clone(store),
            settings(Duration::from_millis(500)),
            no_history(),
        )
        .await
        .unwrap();
        tokio::spawn(Arc::clone(&h).watch_config(shutdown.clone()));
        hooks.push(h);
    }
    let (a, b) = (&hooks[0], &hooks[1]);
    assert!(!b.wants(events::DOCUMENT_CREATED));

    // Created through node a (as the API does: store, then a's reload).
    a.store()
        .create_endpoint(&endpoint("ep", &[events::DOCUMENT_CREATED]))
        .await
        .unwrap();
    a.refresh().await.unwrap();
    within_a_second("b sees the new endpoint", || {
        b.wants(events::DOCUMENT_CREATED)
    })
    .await;

    // Changed.
    let patch = tandem::store::EndpointPatch {
        events: Some(vec![events::CLIENT_CONNECTED.to_string()]),
        ..Default::default()
    };
    a.store().update_endpoint("ep", &patch, 2).await.unwrap();
    a.refresh().await.unwrap();
    within_a_second("b sees the changed events", || {
        b.wants(events::CLIENT_CONNECTED) && !b.wants(events::DOCUMENT_CREATED)
    })
    .await;

    // Disabled: b reloads, and still wants the event (it is held for the
    // endpoint, for `recover`).
    let off = tandem::store::EndpointPatch {
        enabled: Some(false),
        ..Default::default()
    };
    let before = b.config_version();
    a.store().update_endpoint("ep", &off, 3).await.unwrap();
    a.refresh().await.unwrap();
    within_a_second("b sees it disabled", || {
        b.config_version() > before && b.wants(events::CLIENT_CONNECTED)
    })
    .await;
    let on = tandem::store::EndpointPatch {
        enabled: Some(true),
        ..Default::default()
    };
    let before = b.config_version();
    a.store().update_endpoint("ep", &on, 4).await.unwrap();
    a.refresh().await.unwrap();
    within_a_second("b sees it enabled", || {
        b.config_version() > before && b.wants(events::CLIENT_CONNECTED)
    })
    .await;

    // A new secret changes no subscription, but it is a change all the same.
    let before = b.config_version();
    a.store()
        .rotate_secret("ep", "whsec_BBBB", 5, 5)
        .await
        .unwrap()
        .unwrap();
    a.refresh().await.unwrap();
    within_a_second("b reloads after a rotation", || b.config_version() > before).await;

    // Deleted.
    assert!(a.store().delete_endpoint("ep").await.unwrap());
    a.refresh().await.unwrap();
    within_a_second("b sees it deleted", || !b.wants(events::CLIENT_CONNECTED)).await;
    shutdown.cancel();
    for store in &stores {
        store.close().await;
    }
}

/// These tests count `document.updated` alone.
fn no_history() -> tandem::config::HistorySettings {
    tandem::config::HistorySettings {
        enabled: false,
        interval: Duration::from_secs(10),
        retention: Duration::from_secs(86_400),
    }
}
