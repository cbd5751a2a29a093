//! The Redis side of the cluster: one connection publishes (pipelining
//! whatever queued meanwhile), one subscribes to the cluster's channel and
//! to each resident document's. Both reconnect by themselves with backoff;
//! when the subscription comes back, every resident document is caught up
//! from the database, since anything published meanwhile was lost.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{Body, Frame};
use super::{Cluster, Inbound, Outgoing, MAX_CARRIED_BYTES};
use crate::store::DocId;

/// How long one Redis call may take before the connection counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits between attempts to reconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How often the subscriber checks that its connection is alive: a
/// connection cut without a reset would otherwise look merely quiet.
const PING_EVERY: Duration = Duration::from_secs(3);

/// Frames pipelined in one round trip at most.
const PIPELINE: usize = 512;

/// How long a node's announced count lives without being announced again.
const CLIENTS_TTL_SECS: i64 = 24 * 3600;

fn config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(Some(CALL_TIMEOUT))
}

pub(super) async fn publish_loop(
    cluster: Arc<Cluster>,
    client: redis::Client,
    mut queue: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut retry_at = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        let first = tokio::select! {
            m = queue.recv() => m,
            _ = stop.cancelled() => {
                // What is queued now (the last commits, a goodbye) still goes.
                queue.close();
                queue.recv().await
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PIPELINE {
            match queue.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for out in batch.drain(..) {
            add(&cluster, &mut pipe, out);
        }
        if pipe.is_empty() {
            continue;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match client
                .get_multiplexed_async_connection_with_config(&config())
                .await
            {
                Ok(c) => {
                    tracing::info!("publishing to Redis");
                    *lock(&cluster.redis) = Some(c.clone());
                    conn = Some(c);
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot reach Redis to publish");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            // Lost: the other nodes catch up from the database.
            cluster.metrics.cluster_dropped.increment(1);
            continue;
        };
        if let Err(e) = pipe.query_async::<()>(c).await {
            tracing::warn!(error = %e, "publishing to Redis failed; reconnecting");
            cluster.metrics.cluster_dropped.increment(1);
            conn = None;
            *lock(&cluster.redis) = None;
            retry_at = Instant::now() + backoff;
        }
    }
}

/// Adds what `out` sends to `pipe`; tells the local room the numbers of
/// its own committed updates.
fn add(cluster: &Cluster, pipe: &mut redis::Pipeline, out: Outgoing) {
    let (channel, body) = match out {
        Outgoing::Committed {
            doc_id,
            first,
            updates,
        } => {
            let last = first + (updates.len() as u64).saturating_sub(1);
            if !cluster.deliver(doc_id, Inbound::Committed { first, last }) {
                // The room will see a hole and fill it from the database.
                tracing::debug!(doc_id, "commit numbers not delivered: the room is busy");
            }
            let bytes: usize = updates.iter().map(Bytes::len).sum();
            let body = if bytes > MAX_CARRIED_BYTES {
                Body::Doorbell { last_seq: last }
            } else {
                Body::Updates {
                    first_seq: first,
                    updates,
                }
            };
            (cluster.channel(doc_id), body)
        }
        Outgoing::Frame { doc_id, body } => {
            if let Body::Clients(n) = body {
                let key = cluster.clients_key(doc_id);
                pipe.hset(&key, cluster.node, n)
                    .ignore()
                    .expire(&key, CLIENTS_TTL_SECS)
                    .ignore();
            }
            (cluster.channel(doc_id), body)
        }
        Outgoing::Cluster(body) => (cluster.cluster_channel(), body),
    };
    let frame = Frame {
        node: cluster.node,
        body,
    };
    pipe.publish(channel, frame.encode().as_ref()).ignore();
}

pub(super) async fn subscribe_loop(
    cluster: Arc<Cluster>,
    client: redis::Client,
    mut changed: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut ever_up = false;
    loop {
        let connected = tokio::select! {
            c = call(client.get_async_pubsub()) => c,
            _ = stop.cancelled() => return,
        };
        let pubsub = match connected {
            Ok(p) => p,
            Err(e) => {
                if backoff == BACKOFF_MIN {
                    tracing::warn!(error = %e, "cannot subscribe to Redis; serving through the database alone until it is back");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed: HashSet<DocId> = HashSet::new();
        let started = async {
            call(sink.subscribe(cluster.cluster_channel())).await?;
            sync(&cluster, &mut sink, &mut subscribed).await
        };
        if let Err(e) = started.await {
            tracing::warn!(error = %e, "subscribing to Redis failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        backoff = BACKOFF_MIN;
        cluster.redis_up.store(true, Ordering::Relaxed);
        crate::metrics::set_redis_connected(true);
        if ever_up {
            tracing::info!("subscribed to Redis again; catching up from the database");
        } else {
            tracing::info!("subscribed to Redis");
        }
        ever_up = true;
        // Whatever was published while this node was not subscribed is
        // lost to it: the database has it.
        cluster.reconnected();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let lost = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => dispatch(&cluster, &msg),
                    None => break "the subscription's connection closed".to_string(),
                },
                Some(()) = changed.recv() => {
                    while changed.try_recv().is_ok() {}
                    if let Err(e) = sync(&cluster, &mut sink, &mut subscribed).await {
                        break e;
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = call(sink.ping::<redis::Value>()).await {
                        break e;
                    }
                }
                _ = stop.cancelled() => return,
            }
        };
        cluster.redis_up.store(false, Ordering::Relaxed);
        crate::metrics::set_redis_connected(false);
        tracing::warn!(reason = %lost, "lost the Redis subscription; reconnecting, and catching up through the database meanwhile");
    }
}

/// A Redis call with a deadline.
async fn call<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("Redis did not answer in time".into()),
    }
}

/// Subscribes to the channels of documents that became resident and
/// leaves those of documents that are not any more.
async fn sync(
    cluster: &Cluster,
    sink: &mut redis::aio::PubSubSink,
    subscribed: &mut HashSet<DocId>,
) -> Result<(), String> {
    let wanted: HashSet<DocId> = cluster.resident().keys().copied().collect();
    let join: Vec<String> = wanted
        .difference(subscribed)
        .map(|&id| cluster.channel(id))
        .collect();
    let leave: Vec<String> = subscribed
        .difference(&wanted)
        .map(|&id| cluster.channel(id))
        .collect();
    for chunk in join.chunks(PIPELINE) {
        call(sink.subscribe(chunk)).await?;
    }
    for chunk in leave.chunks(PIPELINE) {
        call(sink.unsubscribe(chunk)).await?;
    }
    *subscribed = wanted;
    Ok(())
}

fn dispatch(cluster: &Arc<Cluster>, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let Some(rest) = channel.strip_prefix(cluster.namespace.as_str()) else {
        return;
    };
    let doc_id = match rest {
        "c" => None,
        _ => match rest
            .strip_prefix("d:")
            .and_then(|id| id.parse::<DocId>().ok())
        {
            Some(id) => Some(id),
            None => return,
        },
    };
    match Frame::decode(&Bytes::copy_from_slice(msg.get_payload_bytes())) {
        Ok(frame) => cluster.received(doc_id, frame),
        Err(e) => {
            cluster.metrics.cluster_malformed.increment(1);
            tracing::warn!(channel, error = %e, "ignored a malformed message from Redis");
        }
    }
}

/// See `Cluster::clients_elsewhere`.
pub(super) async fn clients_elsewhere(cluster: &Cluster, docs: &[DocId]) -> Vec<usize> {
    let none = vec![0; docs.len()];
    let existing = lock(&cluster.redis).clone();
    let mut conn = match existing {
        Some(conn) => conn,
        // The publisher connects when it first has something to say.
        None => match call(
            cluster
                .client
                .get_multiplexed_async_connection_with_config(&config()),
        )
        .await
        {
            Ok(conn) => {
                *lock(&cluster.redis) = Some(conn.clone());
                conn
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach Redis to read counts");
                return none;
            }
        },
    };
    let mut pipe = redis::pipe();
    for &doc_id in docs {
        pipe.hgetall(cluster.clients_key(doc_id));
    }
    let counts: Vec<std::collections::HashMap<u64, u64>> =
        match call(pipe.query_async(&mut conn)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "could not read counts from Redis");
                return none;
            }
        };
    let live = lock(&cluster.live).clone();
    counts
        .into_iter()
        .map(|by_node| {
            by_node
                .into_iter()
                .filter(|(node, _)| *node != cluster.node && live.contains(node))
                .map(|(_, n)| usize::try_from(n).unwrap_or(0))
                .sum()
        })
        .collect()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
