//! Renders a document's root types as JSON (SPEC §4 `GET /api/docs/{id}/json`):
//! Text -> string, Map -> object, Array -> array, XML -> string.
//!
//! A Yjs update does not say which type a root is; yrs learns it only when
//! code asks for `get_text`, `get_map`, … So for a root it has not been told
//! about, the type is inferred from its content: map entries and no list
//! items -> Map; list items that are characters -> Text; XML children ->
//! XML; other list items -> Array. A root whose content was all deleted
//! renders as an empty string (Text is by far the most common such root).

use std::fmt::Write as _;

use serde_json::{Map, Value};
use yrs::branch::{Branch, BranchPtr};
use yrs::types::xml::Xml as _;
use yrs::{
    Any, Array as _, ArrayRef, GetString, Map as _, MapRef, Out, ReadTxn, Text as _, TextRef,
    Transact, XmlTextRef,
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
        xml @ (Out::YXmlElement(_) | Out::YXmlText(_) | Out::YXmlFragment(_)) => {
            let mut out = String::new();
            write_xml(txn, xml, &mut out);
            Value::String(out)
        }
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
        let mut out = String::new();
        for child in items {
            write_xml(txn, child, &mut out);
        }
        return Value::String(out);
    }
    Value::Array(items.into_iter().map(|v| render_value(txn, v)).collect())
}

/// Writes XML as yrs' `get_string` does, with two differences that make
/// the string depend on the document alone: attributes and formatting come
/// in key order, as Yjs' `toString()` writes them (yrs iterates hash maps,
/// whose order differs from one copy of a document to the next), and a
/// value inside XML that is neither XML nor plain data is written as its
/// JSON (yrs prints a subdocument with the random client ID of the copy in
/// memory; found by fuzzing).
fn write_xml<T: ReadTxn>(txn: &T, value: Out, out: &mut String) {
    match value {
        Out::YXmlElement(element) => {
            let tag = element
                .try_tag()
                .map(|tag| tag.to_string())
                .unwrap_or_default();
            let mut attributes: Vec<(&str, Out)> = element.attributes(txn).collect();
            attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let _ = write!(out, "<{tag}");
            for (key, value) in attributes {
                let _ = write!(out, " {key}=\"{}\"", plain(txn, value));
            }
            out.push('>');
            write_children(txn, element.as_ref(), out);
            let _ = write!(out, "</{tag}>");
        }
        Out::YXmlFragment(fragment) => write_children(txn, fragment.as_ref(), out),
        Out::YXmlText(text) => write_xml_text(txn, &text, out),
        other => out.push_str(&plain(txn, other)),
    }
}

fn write_children<T: ReadTxn>(txn: &T, branch: &Branch, out: &mut String) {
    for child in ArrayRef::from(BranchPtr::from(branch)).iter(txn) {
        write_xml(txn, child, out);
    }
}

/// Text with its formatting as tags around each run, as yrs writes it.
fn write_xml_text<T: ReadTxn>(txn: &T, text: &XmlTextRef, out: &mut String) {
    for chunk in text.diff(txn, |_| ()) {
        let mut formats: Vec<(&str, &Any)> = chunk
            .attributes
            .iter()
            .flat_map(|attributes| attributes.iter())
            .map(|(key, value)| (key.as_ref(), value))
            .collect();
        formats.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, value) in &formats {
            let _ = write!(out, "<{name}");
            if let Any::Map(attributes) = value {
                let mut attributes: Vec<_> = attributes.iter().collect();
                attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (key, value) in attributes {
                    let _ = write!(out, " {key}=\"{}\"", plain_any(value));
                }
            }
            out.push('>');
        }
        // yrs writes only plain data from a text, not embedded types.
        if let Out::Any(any) = &chunk.insert {
            out.push_str(&plain_any(any));
        }
        for (name, _) in formats.iter().rev() {
            let _ = write!(out, "</{name}>");
        }
    }
}

/// A value inside XML that is not XML itself.
fn plain<T: ReadTxn>(txn: &T, value: Out) -> String {
    match value {
        Out::Any(any) => plain_any(&any),
        Out::YText(text) => text.get_string(txn),
        other => render_value(txn, other).to_string(),
    }
}

/// Plain data as yrs prints it, except lists and maps, as JSON (with
/// keys in order).
fn plain_any(any: &Any) -> String {
    match any {
        Any::Array(_) | Any::Map(_) => any_to_json(any).to_string(),
        scalar => scalar.to_string(),
    }
}

fn any_to_json(any: &Any) -> Value {
    // `Any` is plain data (numbers, strings, lists, maps): serializing it cannot fail.
    serde_json::to_value(any).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
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

    /// Two loads of one update: each is a separate copy in memory.
    fn rendered_twice(update: &[u8]) -> (Value, Value) {
        let (a, _) = DocState::load(None, [update]).expect("loads");
        let (b, _) = DocState::load(None, [update]).expect("loads");
        (a.to_json(), b.to_json())
    }

    #[test]
    fn xml_renders_the_same_from_every_copy_of_a_document() {
        use yrs::types::Attrs;
        use yrs::{Any, Xml as _, XmlTextRef};
        let client = Doc::new();
        {
            let mut txn = client.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("body");
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
            for key in ["h", "g", "f", "e", "d", "c", "b", "a"] {
                p.insert_attribute(&mut txn, key, key);
            }
            let text: XmlTextRef = p.push_back(&mut txn, XmlTextPrelim::new(""));
            let link: HashMap<String, Any> = ["href", "target", "rel", "class", "title"]
                .into_iter()
                .map(|key| (key.to_string(), Any::from(key)))
                .collect();
            let formats: Attrs = [
                ("link".into(), Any::from(link)),
                ("bold".into(), Any::Bool(true)),
                ("em".into(), Any::Bool(true)),
            ]
            .into_iter()
            .collect();
            text.insert_with_attributes(&mut txn, 0, "linked", formats);
            // A subdocument among the element's children, which yrs printed
            // with the client ID of whichever copy it was.
            let children = ArrayRef::from(BranchPtr::from(AsRef::<Branch>::as_ref(&p)));
            children.push_back(&mut txn, Doc::new());
        }
        let update = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (first, second) = rendered_twice(&update);
        assert_eq!(first, second);
        let body = first["body"].as_str().expect("a string");
        assert!(
            body.starts_with(
                r#"<p a="a" b="b" c="c" d="d" e="e" f="f" g="g" h="h"><bold><em><link class="class" href="href" rel="rel" target="target" title="title">linked</link></em></bold>{"guid":"#
            ),
            "{body}"
        );
        assert!(body.ends_with(r#""}</p>"#), "{body}");
    }
}
