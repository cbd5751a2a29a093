//! The webhook outbox against a real database (SQLite, or PostgreSQL with
//! `TANDEM_TEST_BACKEND=postgres`): fan-out by subscription,
//! leases that keep two senders from sending one attempt twice, the retry
//! and give-up bookkeeping, and document changes written with the updates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed call is the failure

use std::sync::Arc;

use crate::common;

use tandem::store::Track;

use tandem::store::{
    AttemptRecord, ChangesStamp, Debounce, EndpointPatch, EndpointRow, NewEvent, Outcome,
    PendingUpdate, Report, Retried, Store,
};

/// Changes are due at once.
const NOW: Debounce = Debounce {
    debounce_ms: 0,
    max_wait_ms: 0,
    history_ms: None,
};
use tandem::webhooks::events;

async fn store() -> (common::TestDir, Arc<dyn Store>) {
    common::test_store().await
}

fn endpoint(id: &str, events: &[&str], include_content: bool) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        url: format!("http://example.com/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        description: None,
        include_content,
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

fn event(event_type: &'static str) -> NewEvent {
    NewEvent {
        event_type,
        doc: None,
        payload: format!(r#"{{"type":"{event_type}"}}"#),
        payload_with_content: Some(format!(r#"{{"type":"{event_type}","content":1}}"#)),
    }
}

async fn all_due(store: &Arc<dyn Store>) -> Vec<tandem::store::DueMessage> {
    store.lease_due(60_000, 1000, 1000, &[]).await.unwrap()
}

#[tokio::test]
async fn events_fan_out_to_enabled_subscribers_only() {
    let (_dir, store) = store().await;
    store
        .create_endpoint(&endpoint("ep_all", &["*"], true))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("ep_deleted", &[events::DOCUMENT_DELETED], false))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("ep_off", &["*"], false))
        .await
        .unwrap();
    store
        .update_endpoint(
            "ep_off",
            &EndpointPatch {
                enabled: Some(false),
                ..Default::default()
            },
            2,
        )
        .await
        .unwrap();

    store
        .enqueue_events(
            &[
                event(events::DOCUMENT_UPDATED),
                event(events::DOCUMENT_DELETED),
            ],
            10,
        )
        .await
        .unwrap();
    let mut due: Vec<(String, String)> = all_due(&store)
        .await
        .into_iter()
        .map(|m| (m.endpoint_id, m.payload))
        .collect();
    due.sort();
    assert_eq!(
        due,
        vec![
            (
                "ep_all".into(),
                r#"{"type":"document.deleted","content":1}"#.into()
            ),
            (
                "ep_all".into(),
                r#"{"type":"document.updated","content":1}"#.into()
            ),
            ("ep_deleted".into(), r#"{"type":"document.deleted"}"#.into()),
        ],
        "include_content picks the content body; disabled and unsubscribed endpoints get nothing"
    );
}

#[tokio::test]
async fn a_leased_message_is_not_leased_again_until_the_lease_ends() {
    let (_dir, store) = store().await;
    store
        .create_endpoint(&endpoint("ep", &["*"], false))
        .await
        .unwrap();
    store
        .enqueue_events(&[event(events::WEBHOOK_TEST)], 100)
        .await
        .unwrap();
    let first = store.lease_due(300, 10, 10, &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.lease_due(300, 10, 10, &[]).await.unwrap().is_empty());
    // A sender that crashed mid-attempt: the message comes back after the
    // lease, under a new token.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let again = store.lease_due(60_000, 10, 10, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_ne!(again[0].lease_token, first[0].lease_token);
    // A busy endpoint is skipped.
    store
        .enqueue_events(&[event(events::WEBHOOK_TEST)], 100)
        .await
        .unwrap();
    assert!(store
        .lease_due(60_000, 10, 10, &["ep".to_string()])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn at_most_per_endpoint_messages_are_leased_per_endpoint() {
    let (_dir, store) = store().await;
    for id in ["a", "b"] {
        store
            .create_endpoint(&endpoint(id, &["*"], false))
            .await
            .unwrap();
    }
    let burst: Vec<NewEvent> = (0..10).map(|_| event(events::WEBHOOK_TEST)).collect();
    store.enqueue_events(&burst, 1).await.unwrap();
    let leased = store.lease_due(60_000, 100, 3, &[]).await.unwrap();
    let count = |id: &str| leased.iter().filter(|m| m.endpoint_id == id).count();
    assert_eq!((count("a"), count("b")), (3, 3));
}

#[tokio::test]
async fn giving_up_disables_only_without_a_success_since_the_first_attempt() {
    let (_dir, store) = store().await;
    store
        .create_endpoint(&endpoint("ep", &["*"], false))
        .await
        .unwrap();
    store
        .enqueue_events(
            &[event(events::WEBHOOK_TEST), event(events::WEBHOOK_TEST)],
            1,
        )
        .await
        .unwrap();
    let leased = store.lease_due(60_000, 10, 10, &[]).await.unwrap();
    let (m1, m2) = (&leased[0], &leased[1]);
    let record = |m: &tandem::store::DueMessage, at: i64, outcome: Outcome| AttemptRecord {
        disabled_event: None,
        message_id: m.id.clone(),
        lease_token: m.lease_token.clone(),
        endpoint_id: "ep".into(),
        attempted_at: at,
        status_code: Some(500),
        latency_ms: 3,
        error: Some("the endpoint answered 500".into()),
        outcome,
    };
    // m2 succeeds after m1's first attempt: m1 giving up does not disable.
    let mut ok = record(m2, 15, Outcome::Delivered);
    ok.status_code = Some(200);
    ok.error = None;
    assert!(!store.record_attempt(&ok).await.unwrap());
    let gave_up = Outcome::GaveUp {
        disable_reason: "all failed".into(),
    };
    assert!(!store
        .record_attempt(&record(m1, 30, gave_up.clone()))
        .await
        .unwrap());
    assert!(store.get_endpoint("ep").await.unwrap().unwrap().enabled);

    // A message whose every attempt failed with no success since: disabled.
    store
        .enqueue_events(&[event(events::WEBHOOK_TEST)], 40)
        .await
        .unwrap();
    // Its first attempt is later than the success, by the store's clock.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let m3 = store
        .lease_due(60_000, 10, 10, &[])
        .await
        .unwrap()
        .remove(0);
    assert!(!store
        .record_attempt(&record(&m3, 50, Outcome::RetryIn(0)))
        .await
        .unwrap());
    let m3 = store
        .lease_due(60_000, 10, 10, &[])
        .await
        .unwrap()
        .remove(0);
    assert!(store
        .record_attempt(&record(&m3, 56, gave_up))
        .await
        .unwrap());
    let e = store.get_endpoint("ep").await.unwrap().unwrap();
    assert!(!e.enabled);
    assert_eq!(e.disabled_reason.as_deref(), Some("all failed"));

    let log = store
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
        .items;
    let m3_log = log.iter().find(|d| d.id == m3.id).unwrap();
    assert_eq!(m3_log.status, "failed");
    assert_eq!(m3_log.attempts.len(), 2);
    assert!(m3_log.attempts[0].next_retry_at.is_some());
    assert_eq!(m3_log.attempts[1].next_retry_at, None);
    // A disabled endpoint's messages are not leased; re-enabling clears the reason.
    store
        .enqueue_events(&[event(events::WEBHOOK_TEST)], 70)
        .await
        .unwrap();
    assert!(store
        .enqueue_events(&[event(events::WEBHOOK_TEST)], 70)
        .await
        .is_ok());
    assert!(all_due(&store).await.is_empty());
    let e = store
        .update_endpoint(
            "ep",
            &EndpointPatch {
                enabled: Some(true),
                ..Default::default()
            },
            90,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(e.enabled && e.disabled_reason.is_none());
    // A manual retry makes the failed message due again, same id.
    assert_eq!(
        store.retry_message("ep", &m3.id, 100).await.unwrap(),
        Retried::Queued
    );
    assert!(all_due(&store).await.iter().any(|m| m.id == m3.id));
    assert_eq!(
        store.retry_message("ep", "msg_nope", 100).await.unwrap(),
        Retried::NotFound
    );
}

#[tokio::test]
async fn document_changes_are_written_with_the_updates_and_reported_once() {
    let (_dir, store) = store().await;
    store
        .create_endpoint(&endpoint("ep", &[events::DOCUMENT_UPDATED], false))
        .await
        .unwrap();
    let doc = store.create("d", 1, None).await.unwrap().unwrap();
    let update = |user: Option<&str>| PendingUpdate {
        doc_id: doc.id,
        data: bytes::Bytes::from_static(&[0, 0]),
        user: user.map(Arc::from),
    };
    let mut log = store.log_writer().unwrap();
    log.append(
        &[update(Some("bob")), update(Some("alice"))],
        Track::Changes,
    )
    .unwrap();
    let rendered = store.pending_reports(NOW, 10).await.unwrap()[0].stamp;
    assert_eq!((rendered.updates, rendered.bytes), (2, 4));
    log.append(&[update(None), update(Some("bob"))], Track::Changes)
        .unwrap();
    // Not tracked: nobody listened when it was written.
    log.append(&[update(Some("carol"))], Track::Nothing)
        .unwrap();
    let pending = store.pending_changes().await.unwrap();
    assert_eq!(pending.len(), 1);

    let seen = std::sync::Mutex::new(None);
    let build = |c: &tandem::store::DocChanges| {
        *seen.lock().unwrap() = Some(c.clone());
        events::document_updated(c, events::Content::None, 5)
    };
    // Not due yet: the last change is younger than the debounce.
    let later = Debounce {
        debounce_ms: 60_000,
        max_wait_ms: 60_000,
        history_ms: None,
    };
    assert_eq!(
        store
            .report_changes(doc.id, later, None, 5, &build)
            .await
            .unwrap(),
        Report::Nothing
    );
    let pending = store.pending_reports(later, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].due_in_ms > 50_000, "{pending:?}");
    let stamp = pending[0].stamp;
    assert_eq!(stamp.updates, 4);
    // Due, but another window than the one the caller rendered (another
    // reporter took that one): nothing is written.
    let other_window = ChangesStamp {
        first_change_at: stamp.first_change_at - 1,
        ..stamp
    };
    assert_eq!(
        store
            .report_changes(doc.id, NOW, Some(other_window), 5, &build)
            .await
            .unwrap(),
        Report::Changed(stamp)
    );
    assert!(seen.lock().unwrap().is_none());
    // Content rendered after the first append holds its two updates: the
    // report counts those, and the two written since stay for the next
    // one, with the users who wrote them.
    assert_eq!(
        store
            .report_changes(doc.id, NOW, Some(rendered), 5, &build)
            .await
            .unwrap(),
        Report::Sent
    );
    let c = seen.lock().unwrap().take().unwrap();
    assert_eq!((c.updates, c.bytes), (2, 4));
    assert_eq!(c.users, vec!["alice".to_string(), "bob".to_string()]);
    assert_eq!(c.name, "d");
    assert_eq!(
        (c.first_change_at, c.last_change_at),
        (rendered.first_change_at, rendered.last_change_at)
    );
    let rest = store.pending_reports(NOW, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].stamp.updates, rest[0].stamp.bytes), (2, 4));
    assert_eq!(rest[0].stamp.first_change_at, rendered.last_change_at);
    assert_eq!(
        store
            .report_changes(doc.id, NOW, Some(rest[0].stamp), 6, &build)
            .await
            .unwrap(),
        Report::Sent
    );
    let c = seen.lock().unwrap().take().unwrap();
    assert_eq!((c.updates, c.bytes), (2, 4));
    assert_eq!(c.users, vec!["bob".to_string()]);
    assert_eq!(
        store
            .report_changes(doc.id, NOW, None, 7, &build)
            .await
            .unwrap(),
        Report::Nothing
    );
    assert!(store.pending_changes().await.unwrap().is_empty());
    let due = all_due(&store).await;
    // Both wait for one endpoint: the second collapsed into the first.
    assert_eq!(due.len(), 1);
    assert!(
        due[0].payload.contains(r#""updates":4"#),
        "{}",
        due[0].payload
    );
    assert!(due[0].payload.contains(r#""users":["alice","bob"]"#));

    // Deleting the document takes its unreported changes with it.
    log.append(&[update(Some("x"))], Track::Changes).unwrap();
    assert!(store.delete("d", None).await.unwrap());
    assert!(store.pending_changes().await.unwrap().is_empty());
}

#[tokio::test]
async fn created_and_deleted_events_share_the_documents_transaction() {
    let (_dir, store) = store().await;
    store
        .create_endpoint(&endpoint("ep", &["*"], false))
        .await
        .unwrap();
    let created = events::document_created("d", 7, events::Source::Api);
    assert!(store
        .create("d", 7, Some(&created))
        .await
        .unwrap()
        .is_some());
    // The name is taken: no document, and no second event.
    assert!(store
        .create("d", 8, Some(&created))
        .await
        .unwrap()
        .is_none());
    let deleted = events::document_deleted("d", 9);
    assert!(store.delete("d", Some(&deleted)).await.unwrap());
    assert!(!store.delete("d", Some(&deleted)).await.unwrap());
    let mut types: Vec<String> = store
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
        .into_iter()
        .map(|d| d.event_type)
        .collect();
    types.sort();
    assert_eq!(types, vec!["document.created", "document.deleted"]);
}
