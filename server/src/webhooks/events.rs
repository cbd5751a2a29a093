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

fn event(event_type: &'static str, now: i64, data: Value) -> NewEvent {
    NewEvent {
        event_type,
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
        created_at,
        json!({ "doc": doc, "created_at": rfc3339(created_at), "source": source }),
    )
}

pub fn document_deleted(doc: &str, now: i64) -> NewEvent {
    event(
        DOCUMENT_DELETED,
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
        payload,
        payload_with_content,
    }
}

/// An endpoint was disabled by the server (every attempt of a message
/// failed, or it answered 410); sent to the other endpoints that want it.
pub fn endpoint_disabled(endpoint_id: &str, reason: &str, now: i64) -> NewEvent {
    event(
        WEBHOOK_ENDPOINT_DISABLED,
        now,
        json!({ "endpoint": endpoint_id, "reason": reason, "disabled_at": rfc3339(now) }),
    )
}

pub fn test(endpoint_id: &str, now: i64) -> NewEvent {
    event(WEBHOOK_TEST, now, json!({ "endpoint": endpoint_id }))
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
}
