//! Renders a document's root types as JSON (SPEC §4 `GET /api/docs/{id}/json`):
//! Text -> string, Map -> object, Array -> array, XML -> string.
//!
//! A Yjs update does not say which type a root is; yrs learns it only when
//! code asks for `get_text`, `get_map`, … So for a root it has not been told
//! about, the type is inferred from its content: map entries and no list
//! items -> Map; list items that are characters -> Text; XML children ->
//! XML; other list items -> Array. A root whose content was all deleted
//! renders as an empty string (Text is by far the most common such root).

use serde_json::{Map, Value};
use yrs::branch::BranchPtr;
use yrs::{
    Any, Array as _, ArrayRef, GetString, Map as _, MapRef, Out, ReadTxn, TextRef, Transact,
    XmlFragmentRef,
};

use crate::doc::DocState;

impl DocState {
    /// Every root type, rendered as JSON, keyed by root name.
    pub fn to_json(&self) -> Value {
        let txn = self.doc().transact();
        let mut out = Map::new();
        for (name, root) in txn.root_refs() {
            out.insert(name.to_string(), render(&txn, root));
        }
        Value::Object(out)
    }
}

fn render<T: ReadTxn>(txn: &T, root: Out) -> Value {
    match root {
        Out::UndefinedRef(branch) => render_undefined(txn, branch),
        other => render_value(txn, other),
    }
}

/// Renders a value by walking its items. yrs' own `to_json` sizes an array
/// by the length it keeps by increments, and a crafted sequence of updates
/// can leave that length wrong (found by fuzzing: a text read "\0#" with a
/// length of 0); yrs then allocates by the wrong length or panics. Walking
/// needs no length. The recursion is as deep as shared types nest, which
/// `DocState` bounds.
fn render_value<T: ReadTxn>(txn: &T, value: Out) -> Value {
    match value {
        Out::Any(any) => any_to_json(&any),
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YArray(array) => Value::Array(array.iter(txn).map(|v| render_value(txn, v)).collect()),
        Out::YMap(map) => Value::Object(
            map.iter(txn)
                .map(|(key, v)| (key.to_string(), render_value(txn, v)))
                .collect(),
        ),
        Out::YXmlElement(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlText(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlFragment(xml) => Value::String(xml.get_string(txn)),
        Out::YDoc(doc) => serde_json::json!({ "guid": doc.guid().as_ref() }),
        Out::UndefinedRef(branch) => render_undefined(txn, branch),
    }
}

fn render_undefined<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Value {
    // Only Text (and XML text) holds character content; arrays hold values.
    let text = TextRef::from(branch).get_string(txn);
    if !text.is_empty() {
        return Value::String(text);
    }
    let items: Vec<Out> = ArrayRef::from(branch).iter(txn).collect();
    if items.is_empty() {
        let map = MapRef::from(branch);
        if map.len(txn) > 0 {
            return render_value(txn, Out::YMap(map));
        }
        return Value::String(String::new());
    }
    let is_xml = items
        .iter()
        .all(|v| matches!(v, Out::YXmlElement(_) | Out::YXmlText(_)));
    if is_xml {
        return Value::String(XmlFragmentRef::from(branch).get_string(txn));
    }
    Value::Array(items.into_iter().map(|v| render_value(txn, v)).collect())
}

fn any_to_json(any: &Any) -> Value {
    // `Any` is plain data (numbers, strings, lists, maps): serializing it cannot fail.
    serde_json::to_value(any).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yrs::types::xml::XmlFragment;
    use yrs::updates::encoder::Encode;
    use yrs::{Array, Doc, StateVector, Text, WriteTxn, XmlElementPrelim, XmlTextPrelim};

    #[test]
    fn renders_each_root_type_from_a_client_update() {
        let client = Doc::new();
        {
            let mut txn = client.transact_mut();
            let text = txn.get_or_insert_text("title");
            text.insert(&mut txn, 0, "Hello, wörld 👋");
            let map = txn.get_or_insert_map("meta");
            map.insert(&mut txn, "n", 3);
            map.insert(&mut txn, "tags", vec!["a", "b"]);
            let array = txn.get_or_insert_array("list");
            array.push_back(&mut txn, 1);
            array.push_back(&mut txn, "two");
            let xml = txn.get_or_insert_xml_fragment("body");
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, XmlTextPrelim::new("hi"));
            let gone = txn.get_or_insert_text("gone");
            gone.insert(&mut txn, 0, "x");
            gone.remove_range(&mut txn, 0, 1);
        }
        let update = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (state, _) = DocState::load(None, [update.as_slice()]).expect("loads");
        let json = state.to_json();
        assert_eq!(json["title"], json!("Hello, wörld 👋"));
        assert_eq!(json["meta"], json!({"n": 3, "tags": ["a", "b"]}));
        assert_eq!(json["list"], json!([1, "two"]));
        assert_eq!(json["body"], json!("<p>hi</p>"));
        assert_eq!(json["gone"], json!(""));
        let _ = client.transact().state_vector().encode_v1();
    }
}
