//! Delivery: leases due messages from the outbox, sends each signed
//! (Standard Webhooks) with a bounded number in flight per endpoint, and
//! records every attempt with its outcome. A lease moves the message's next
//! attempt past the time an attempt can take, so a crash mid-attempt only
//! delays it (at-least-once); several nodes sharing a database never send
//! the same attempt twice. Each lease has a token, and an attempt is
//! recorded only under the token it was leased with: a sender so late that
//! its lease ran out and another sender leased the message again records
//! nothing over the newer attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{events, signer, ssrf, Webhooks};
use crate::store::{now_ms, AttemptRecord, DueMessage, EndpointRow, Outcome};

/// How often the outbox is polled, while some endpoint is enabled, when
/// nothing wakes the dispatcher (retries falling due, messages written by
/// another process): new messages get their first attempt within a second.
const POLL: Duration = Duration::from_millis(250);
/// Messages leased per round.
const BATCH: u32 = 256;
/// Added to the timeout to make a lease.
const LEASE_MARGIN_MS: i64 = 5_000;
/// Kept from a receiver's answer, for the delivery log.
const MAX_ERROR_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct Dispatcher {
    hooks: Arc<Webhooks>,
    client: reqwest::Client,
    /// Attempts leased per endpoint (sent, or waiting for a slot).
    in_flight: Mutex<HashMap<String, u32>>,
    /// The slots: `TANDEM_WEBHOOK_CONCURRENCY` attempts at once per endpoint.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per endpoint, whether each of its latest attempts from this node
    /// succeeded (newest last): its success ratio.
    recent: Mutex<HashMap<String, VecDeque<bool>>>,
}

/// Attempts the success ratio is taken over.
const RATIO_WINDOW: usize = 100;

impl Dispatcher {
    pub fn new(hooks: Arc<Webhooks>) -> Result<Arc<Self>, DeliveryError> {
        let settings = &hooks.settings;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .user_agent(concat!("Tandem-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private {
            builder = builder.dns_resolver(Arc::new(ssrf::GuardedResolver));
        }
        Ok(Arc::new(Dispatcher {
            client: builder.build()?,
            hooks,
            in_flight: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }))
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes an attempt's outcome; returns the endpoint's success ratio
    /// over its last `RATIO_WINDOW` attempts.
    fn success_ratio(&self, endpoint: &str, delivered: bool) -> f64 {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let window = recent.entry(endpoint.to_string()).or_default();
        if window.len() == RATIO_WINDOW {
            window.pop_front();
        }
        window.push_back(delivered);
        let delivered = window.iter().filter(|d| **d).count();
        delivered as f64 / window.len() as f64
    }

    /// A deleted endpoint's success ratio goes with it.
    fn forget_deleted_endpoints(&self) {
        self.hooks
            .retain_endpoints(&mut self.recent.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn slots(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let per_endpoint = self.hooks.settings.concurrency as usize;
        Arc::clone(
            slots
                .entry(endpoint.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(per_endpoint))),
        )
    }

    /// Leases and sends until shutdown; attempts in flight then finish
    /// (they are bounded by the timeout) and are recorded.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let per_endpoint = self.hooks.settings.concurrency;
        // Longer than an attempt can wait for its slot (a batch leases at
        // most `concurrency` per endpoint beyond those in flight) and then
        // take; after a crash mid-attempt the message is due again once it
        // runs out.
        let lease = i64::try_from((self.hooks.settings.timeout * 2).as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(LEASE_MARGIN_MS);
        loop {
            let busy: Vec<String> = self
                .in_flight()
                .iter()
                .filter(|(_, n)| **n >= per_endpoint)
                .map(|(id, _)| id.clone())
                .collect();
            let leased = self
                .hooks
                .store
                .lease_due(lease, BATCH, per_endpoint, &busy)
                .await;
            match leased {
                Ok(messages) => {
                    let full_batch = messages.len() == BATCH as usize;
                    let mut endpoints: HashMap<String, Option<Arc<EndpointRow>>> = HashMap::new();
                    for message in messages {
                        let endpoint = match endpoints.get(&message.endpoint_id) {
                            Some(e) => e.clone(),
                            None => {
                                let e = self
                                    .hooks
                                    .store
                                    .get_endpoint(&message.endpoint_id)
                                    .await
                                    .ok()
                                    .flatten()
                                    .map(Arc::new);
                                endpoints.insert(message.endpoint_id.clone(), e.clone());
                                e
                            }
                        };
                        // Deleted meanwhile: its messages went with it.
                        let Some(endpoint) = endpoint else { continue };
                        *self.in_flight().entry(endpoint.id.clone()).or_default() += 1;
                        let this = Arc::clone(&self);
                        let slots = self.slots(&endpoint.id);
                        tracker.spawn(async move {
                            let id = endpoint.id.clone();
                            // Never closed, so acquiring cannot fail.
                            if let Ok(_slot) = slots.acquire().await {
                                this.attempt(&endpoint, message).await;
                            }
                            let mut in_flight = this.in_flight();
                            if let Some(n) = in_flight.get_mut(&id) {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    // Nobody holds or waits for its slots
                                    // (each attempt counts here first): the
                                    // next one makes them afresh, so an
                                    // endpoint deleted since leaves nothing.
                                    in_flight.remove(&id);
                                    this.slots
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .remove(&id);
                                }
                            }
                            drop(in_flight);
                            this.hooks.dispatch_wake.notify_one();
                        });
                    }
                    if full_batch {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the webhook outbox failed"),
            }
            self.forget_deleted_endpoints();
            // With no endpoint enabled there is nothing to send until one is
            // (which wakes the dispatcher): an idle server does not poll.
            let poll = if self.hooks.any_enabled() {
                POLL
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = self.hooks.dispatch_wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    /// One attempt: send, then record the outcome.
    async fn attempt(&self, endpoint: &EndpointRow, message: DueMessage) {
        let started = Instant::now();
        let attempted_at = now_ms();
        let result = self.send(endpoint, &message, attempted_at).await;
        let elapsed = started.elapsed();
        let latency_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        let (status_code, retry_after, error) = match result {
            Ok(answer) if (200..300).contains(&answer.status) => (Some(answer.status), None, None),
            Ok(answer) => (
                Some(answer.status),
                answer.retry_after,
                Some(format!("the endpoint answered {}", answer.status)),
            ),
            Err(e) => (None, None, Some(e)),
        };
        let ratio = self.success_ratio(&endpoint.id, error.is_none());
        crate::metrics::webhook_attempt(
            &endpoint.id,
            error.is_none(),
            elapsed.as_secs_f64(),
            ratio,
        );
        let schedule = &self.hooks.settings.retry_schedule.0;
        let made = message.attempts.saturating_add(1);
        let outcome = if error.is_none() {
            Outcome::Delivered
        } else if status_code == Some(410) {
            // Standard Webhooks: 410 Gone means the receiver wants no more.
            Outcome::Gone {
                disable_reason: format!("the endpoint answered 410 Gone to message {}", message.id),
            }
        } else if let Some(wait) = schedule.get(made as usize - 1) {
            Outcome::RetryIn(retry_wait(*wait, retry_after, schedule))
        } else {
            Outcome::GaveUp {
                disable_reason: format!(
                    "message {} failed all {made} attempts, the last: {}",
                    message.id,
                    error.as_deref().unwrap_or("unknown error")
                ),
            }
        };
        match &outcome {
            Outcome::Delivered => {
                tracing::debug!(endpoint = %endpoint.id, message = %message.id, latency_ms, "webhook delivered")
            }
            _ => {
                tracing::info!(endpoint = %endpoint.id, message = %message.id, attempt = made, error = error.as_deref().unwrap_or(""), "webhook attempt failed")
            }
        }
        let disabled_event = match &outcome {
            Outcome::GaveUp { disable_reason } | Outcome::Gone { disable_reason }
                if self.hooks.wants(events::WEBHOOK_ENDPOINT_DISABLED) =>
            {
                Some(events::endpoint_disabled(
                    &endpoint.id,
                    disable_reason,
                    now_ms(),
                ))
            }
            _ => None,
        };
        let record = AttemptRecord {
            disabled_event,
            message_id: message.id.clone(),
            lease_token: message.lease_token.clone(),
            endpoint_id: endpoint.id.clone(),
            attempted_at,
            status_code,
            latency_ms,
            error,
            outcome,
        };
        match self.hooks.store.record_attempt(&record).await {
            Ok(true) => {
                tracing::warn!(endpoint = %endpoint.id, url = %endpoint.url, "webhook endpoint disabled: it answered 410 Gone, or every attempt of a message failed");
                if let Err(e) = self.hooks.refresh().await {
                    tracing::warn!(error = %e, "reloading webhook endpoints failed");
                }
            }
            Ok(false) => {}
            // The lease runs out and the message is tried again.
            Err(e) => {
                tracing::error!(message = %message.id, error = %e, "recording a webhook attempt failed")
            }
        }
    }

    /// Sends one message; the endpoint's answer, or why there was none.
    async fn send(
        &self,
        endpoint: &EndpointRow,
        message: &DueMessage,
        now_ms: i64,
    ) -> Result<Answer, String> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("invalid URL: {e}"))?;
        if !self.hooks.settings.allow_private {
            // Literal addresses are connected to without resolving.
            if let Some(ip) = ssrf::literal_ip(&url).filter(|ip| ssrf::is_forbidden(*ip)) {
                return Err(format!("the address {ip} is forbidden: loopback, private and internal addresses are refused unless TANDEM_WEBHOOK_ALLOW_PRIVATE is set"));
            }
        }
        let timestamp = now_ms / 1000;
        let mut secrets = vec![endpoint.secret.as_str()];
        if let (Some(previous), Some(until)) = (
            endpoint.previous_secret.as_deref(),
            endpoint.previous_secret_expires_at,
        ) {
            if until > now_ms {
                secrets.push(previous);
            }
        }
        let signature =
            signer::signature_header(&secrets, &message.id, timestamp, &message.payload);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        // Only where the status asks to come back later (Standard Webhooks).
        let retry_after = if status == 429 || status == 503 {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
        } else {
            None
        };
        Ok(Answer {
            status,
            retry_after,
        })
    }
}

/// What an endpoint answered.
struct Answer {
    status: u16,
    /// Its `Retry-After`, on a 429 or 503.
    retry_after: Option<Duration>,
}

/// `Retry-After`: delay-seconds or an HTTP date; `None` if it is neither.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt: the schedule's (with jitter), or
/// longer where the endpoint asked, but never longer than the schedule's
/// longest wait (a receiver cannot park a message for ever). Milliseconds.
fn retry_wait(scheduled: Duration, asked: Option<Duration>, schedule: &[Duration]) -> i64 {
    let jittered = jittered(scheduled);
    let Some(asked) = asked else {
        return jittered;
    };
    let longest = schedule.iter().max().copied().unwrap_or(scheduled);
    let asked = i64::try_from(asked.min(longest).as_millis()).unwrap_or(i64::MAX);
    jittered.max(asked)
}

/// A request error with its causes, which say what went wrong (the SSRF
/// guard's refusal is one of them).
fn describe(e: reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// `wait` ±20 %, in milliseconds.
fn jittered(wait: Duration) -> i64 {
    let ms = wait.as_millis() as f64;
    let factor = rand::rng().random_range(0.8..=1.2);
    (ms * factor) as i64
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_is_held_to_the_schedule() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let schedule = [Duration::from_secs(5), Duration::from_secs(60)];
        // Asked for longer than the schedule: waits what it asked...
        assert_eq!(
            retry_wait(
                Duration::from_secs(5),
                Some(Duration::from_secs(30)),
                &schedule
            ),
            30_000
        );
        // ...but never past the schedule's longest wait.
        assert_eq!(
            retry_wait(
                Duration::from_secs(5),
                Some(Duration::from_secs(3600)),
                &schedule
            ),
            60_000
        );
        // Asked for less: the schedule's wait (±20 %).
        let w = retry_wait(
            Duration::from_secs(5),
            Some(Duration::from_secs(1)),
            &schedule,
        );
        assert!((4_000..=6_000).contains(&w), "{w}");
    }
}

#[cfg(test)]
mod per_endpoint_state_tests {
    use super::*;
    use crate::config::Settings;
    use clap::Parser;

    #[tokio::test]
    async fn a_deleted_endpoints_success_ratio_is_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = crate::store::open(&url).await.expect("opens");
        let settings = Settings::try_parse_from(["tandem"]).expect("settings");
        let hooks = Webhooks::start(Arc::clone(&store), settings.webhooks, settings.history)
            .await
            .expect("starts");
        for id in ["kept", "deleted"] {
            let endpoint = EndpointRow {
                id: id.into(),
                url: format!("http://example.com/{id}"),
                events: vec!["*".into()],
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
            };
            store.create_endpoint(&endpoint).await.expect("created");
        }
        hooks.refresh().await.expect("refreshed");
        let dispatcher = Dispatcher::new(Arc::clone(&hooks)).expect("dispatcher");
        assert_eq!(dispatcher.success_ratio("kept", true), 1.0);
        assert_eq!(dispatcher.success_ratio("deleted", false), 0.0);
        dispatcher.forget_deleted_endpoints();
        assert_eq!(dispatcher.recent.lock().expect("lock").len(), 2);
        assert!(store.delete_endpoint("deleted").await.expect("deletes"));
        hooks.refresh().await.expect("refreshed");
        dispatcher.forget_deleted_endpoints();
        let recent = dispatcher.recent.lock().expect("lock");
        assert_eq!(recent.keys().collect::<Vec<_>>(), vec!["kept"]);
    }
}
