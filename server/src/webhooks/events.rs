//! Webhook events (SPEC §5): their types and bodies. Each body is the
//! envelope `{"type", "timestamp", "data"}`, serialized once when the event
//! happens, so every attempt sends the same bytes.

use serde_json::{json, Value};

use crate::store::{DocChanges, NewEvent};
use crate::time::rfc3339;

pub const DOCUMENT_CREATED: &str = "document.created";
pub const DOCUMENT_UPDATED: &str = "document.updated";
pub const DOCUMENT_DELETED: &str = "document.deleted";
pub const CLIENT_CONNECTED: &str = "client.connected";
pub const CLIENT_DISCONNECTED: &str = "client.disconnected";
pub const DOCUMENT_RESTORED: &str = "document.restored";
pub const WEBHOOK_TEST: &str = "webhook.test";
pub const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook.endpoint_disabled";

/// Every event type an endpoint may subscribe to (or `*` for all).
pub const ALL: [&str; 8] = [
    DOCUMENT_CREATED,
    DOCUMENT_UPDATED,
    DOCUMENT_DELETED,
    DOCUMENT_RESTORED,
    CLIENT_CONNECTED,
    CLIENT_DISCONNECTED,
    WEBHOOK_TEST,
    WEBHOOK_ENDPOINT_DISABLED,
];

/// Where a document was created from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    WebSocket,
    Api,
}

fn envelope(event_type: &'static str, now: i64, data: Value) -> String {
    json!({ "type": event_type, "timestamp": rfc3339(now), "data": data }).to_string()
}

/// An event; `doc` names the document it is about, if any (endpoints'
/// `doc_prefix` filters on it).
fn event(event_type: &'static str, doc: Option<&str>, now: i64, data: Value) -> NewEvent {
    NewEvent {
        event_type,
        doc: doc.map(str::to_owned),
        payload: envelope(event_type, now, data),
        payload_with_content: None,
    }
}

pub fn document_created(doc: &str, created_at: i64, source: Source) -> NewEvent {
    let source = match source {
        Source::WebSocket => "websocket",
        Source::Api => "api",
    };
    event(
        DOCUMENT_CREATED,
        Some(doc),
        created_at,
        json!({ "doc": doc, "created_at": rfc3339(created_at), "source": source }),
    )
}

pub fn document_deleted(doc: &str, now: i64) -> NewEvent {
    event(
        DOCUMENT_DELETED,
        Some(doc),
        now,
        json!({ "doc": doc, "deleted_at": rfc3339(now) }),
    )
}

/// A document's content became a version's (SPEC §9): `version` is the
/// `restore` version made after it, `restored_from` the one restored.
pub fn document_restored(
    doc: &str,
    version: i64,
    restored_from: i64,
    by: Option<&str>,
    now: i64,
) -> NewEvent {
    event(
        DOCUMENT_RESTORED,
        Some(doc),
        now,
        json!({
            "doc": doc,
            "version": version.to_string(),
            "restored_from": restored_from.to_string(),
            "user": by,
            "restored_at": rfc3339(now),
        }),
    )
}

/// A connection joined (`connected`) or left a room.
pub struct ClientEvent<'a> {
    pub connected: bool,
    pub doc: &'a str,
    pub connection: &'a str,
    pub user: Option<&'a str>,
    pub read_only: bool,
    /// Connections in the room after this one joined or left.
    pub clients: usize,
}

pub fn client(e: &ClientEvent<'_>, now: i64) -> NewEvent {
    let event_type = if e.connected {
        CLIENT_CONNECTED
    } else {
        CLIENT_DISCONNECTED
    };
    event(
        event_type,
        Some(e.doc),
        now,
        json!({
            "doc": e.doc,
            "connection": e.connection,
            "user": e.user,
            "read_only": e.read_only,
            "clients": e.clients,
        }),
    )
}

/// The content of a `document.updated` for endpoints that asked for it.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    /// Not rendered: no endpoint wants it.
    None,
    Some(&'a Value),
    /// Rendered but larger than `TANDEM_WEBHOOK_MAX_CONTENT_BYTES`: the
    /// receiver fetches it from the API.
    Omitted,
}

/// `document.updated`; `content` goes only to endpoints that asked for it.
pub fn document_updated(changes: &DocChanges, content: Content<'_>, now: i64) -> NewEvent {
    let mut data = json!({
        "doc": changes.name,
        "updates": changes.updates,
        "bytes": changes.bytes,
        "users": changes.users,
        "first_change_at": rfc3339(changes.first_change_at),
        "last_change_at": rfc3339(changes.last_change_at),
        "version": changes.version.map(|v| v.to_string()),
    });
    let payload = envelope(DOCUMENT_UPDATED, now, data.clone());
    let payload_with_content = match content {
        Content::None => None,
        Content::Some(c) => {
            data["content"] = c.clone();
            Some(envelope(DOCUMENT_UPDATED, now, data))
        }
        Content::Omitted => {
            data["content_omitted"] = Value::Bool(true);
            Some(envelope(DOCUMENT_UPDATED, now, data))
        }
    };
    NewEvent {
        event_type: DOCUMENT_UPDATED,
        doc: Some(changes.name.clone()),
        payload,
        payload_with_content,
    }
}

/// One `document.updated` body standing for two undelivered ones of the
/// same endpoint and document (SPEC §5: they collapse while the endpoint is
/// backlogged or disabled): the counts summed, the users merged, the window
/// from the older's first change to the newer's last, and everything else
/// (content, version, timestamp) the newer's. `collapsed` says how many
/// reports it stands for. `None` if either is not such a body (a stored row
/// this server did not write): then nothing is merged.
pub fn merge_updated(older: &str, newer: &str) -> Option<String> {
    let older: Value = serde_json::from_str(older).ok()?;
    let mut newer: Value = serde_json::from_str(newer).ok()?;
    if older["type"] != DOCUMENT_UPDATED || newer["type"] != DOCUMENT_UPDATED {
        return None;
    }
    let old = older.get("data")?.as_object()?;
    let new = newer.get_mut("data")?.as_object_mut()?;
    if old.get("doc")? != new.get("doc")? {
        return None;
    }
    let sum = |key: &str| -> Option<Value> {
        let total = old
            .get(key)?
            .as_i64()?
            .checked_add(new.get(key)?.as_i64()?)?;
        Some(Value::from(total))
    };
    let updates = sum("updates")?;
    let bytes = sum("bytes")?;
    let reports = |data: &serde_json::Map<String, Value>| {
        data.get("collapsed").and_then(Value::as_i64).unwrap_or(1)
    };
    let collapsed = reports(old).saturating_add(reports(new));
    let mut users: Vec<&str> = old
        .get("users")?
        .as_array()?
        .iter()
        .chain(new.get("users")?.as_array()?.iter())
        .map(|u| u.as_str())
        .collect::<Option<_>>()?;
    users.sort_unstable();
    users.dedup();
    let users = Value::from(users);
    let first_change_at = old.get("first_change_at")?.clone();
    // A report without a version keeps the older one's: it still names
    // the newest version the changes are in.
    let version = match new.get("version") {
        Some(Value::String(_)) => None,
        _ => old.get("version").cloned(),
    };
    new.insert("updates".into(), updates);
    new.insert("bytes".into(), bytes);
    new.insert("users".into(), users);
    new.insert("first_change_at".into(), first_change_at);
    new.insert("collapsed".into(), Value::from(collapsed));
    if let Some(version) = version {
        new.insert("version".into(), version);
    }
    Some(newer.to_string())
}

/// An endpoint was disabled by the server (every attempt of a message
/// failed, or it answered 410); sent to the other endpoints that want it.
pub fn endpoint_disabled(endpoint_id: &str, reason: &str, now: i64) -> NewEvent {
    event(
        WEBHOOK_ENDPOINT_DISABLED,
        None,
        now,
        json!({ "endpoint": endpoint_id, "reason": reason, "disabled_at": rfc3339(now) }),
    )
}

pub fn test(endpoint_id: &str, now: i64) -> NewEvent {
    event(WEBHOOK_TEST, None, now, json!({ "endpoint": endpoint_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_envelope() {
        let e = document_created("a:b", 0, Source::Api);
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["type"], "document.created");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["doc"], "a:b");
        assert_eq!(v["data"]["source"], "api");
    }

    #[test]
    fn content_only_in_the_content_variant() {
        let changes = DocChanges {
            version: None,
            doc_id: 1,
            name: "d".into(),
            updates: 3,
            bytes: 40,
            users: vec!["alice".into()],
            first_change_at: 1000,
            last_change_at: 2000,
        };
        let e = document_updated(&changes, Content::Some(&json!({"text": "hi"})), 3000);
        let plain: Value = serde_json::from_str(&e.payload).unwrap();
        let full: Value = serde_json::from_str(e.payload_with_content.as_deref().unwrap()).unwrap();
        assert!(plain["data"].get("content").is_none());
        assert_eq!(full["data"]["content"]["text"], "hi");
        assert_eq!(full["data"]["users"], json!(["alice"]));
    }

    fn updated(
        updates: i64,
        users: &[&str],
        first: i64,
        last: i64,
        version: Option<i64>,
    ) -> String {
        let changes = DocChanges {
            version,
            doc_id: 1,
            name: "d".into(),
            updates,
            bytes: updates * 10,
            users: users.iter().map(|u| u.to_string()).collect(),
            first_change_at: first,
            last_change_at: last,
        };
        let content = json!({ "text": format!("after {last}") });
        let e = document_updated(&changes, Content::Some(&content), last + 1);
        e.payload_with_content.unwrap()
    }

    #[test]
    fn collapsing_sums_counts_merges_users_and_keeps_the_newest_content() {
        let a = updated(3, &["bob", "alice"], 1000, 2000, Some(7));
        let b = updated(2, &["carol", "alice"], 3000, 4000, None);
        let ab: Value = serde_json::from_str(&merge_updated(&a, &b).unwrap()).unwrap();
        let data = &ab["data"];
        assert_eq!(data["updates"], 5);
        assert_eq!(data["bytes"], 50);
        assert_eq!(data["users"], json!(["alice", "bob", "carol"]));
        assert_eq!(data["first_change_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(data["last_change_at"], "1970-01-01T00:00:04.000Z");
        assert_eq!(data["content"]["text"], "after 4000");
        assert_eq!(data["version"], "7");
        assert_eq!(data["collapsed"], 2);
        assert_eq!(ab["timestamp"], "1970-01-01T00:00:04.001Z");
        // Merging a third counts every report.
        let c = updated(1, &[], 5000, 6000, Some(9));
        let abc: Value =
            serde_json::from_str(&merge_updated(&ab.to_string(), &c).unwrap()).unwrap();
        assert_eq!(abc["data"]["updates"], 6);
        assert_eq!(abc["data"]["collapsed"], 3);
        assert_eq!(abc["data"]["version"], "9");
    }

    #[test]
    fn only_two_updated_bodies_of_one_document_merge() {
        let a = updated(3, &["bob"], 1000, 2000, None);
        let created = document_created("d", 0, Source::Api).payload;
        assert!(merge_updated(&created, &a).is_none());
        assert!(merge_updated(&a, "not json").is_none());
        let other = a.replace("\"doc\":\"d\"", "\"doc\":\"e\"");
        assert!(merge_updated(&a, &other).is_none());
        let overflow = a.replace("\"updates\":3", &format!("\"updates\":{}", i64::MAX));
        assert!(merge_updated(&overflow, &a).is_none());
    }
}
