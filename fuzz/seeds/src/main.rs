//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! (files named `seed-*`), from real editing traces and hand-made protocol
//! messages, tokens and URLs.
//!
//! `cargo run --release -- /work/shared/traces` (from `fuzz/seeds/`).
//! The traces are josephg/editing-traces' sequential `*.json.gz` files.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_crdt::protocol::{
    encode_awareness, encode_sync_step1, encode_sync_step2, encode_update,
};
use yrs::encoding::write::Write;
use yrs::types::xml::Xml;
use yrs::types::Attrs;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, OffsetKind, Options, ReadTxn,
    StateVector, Text, TextPrelim, Transact, WriteTxn, XmlElementPrelim, XmlFragment,
    XmlTextPrelim,
};

type Seeds = Vec<(String, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let traces = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/work/shared/traces"), PathBuf::from);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let updates = update_seeds(&traces)?;
    let frames = protocol_seeds(&updates);
    let targets: Vec<(&str, Seeds)> = vec![
        ("ws_frames", ws_seeds(&frames)),
        ("y_protocol", frames),
        ("apply_update", updates),
        ("doc_name", name_seeds()),
        ("token", token_seeds()),
        ("webhook_url", url_seeds()),
    ];
    for (target, seeds) in targets {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

/// `ctl • [u16 LE length • bytes]*`, as the `apply_update` harness
/// (`split_parts` in fuzz/src/lib.rs) reads it.
fn join_parts<T: AsRef<[u8]>>(ctl: u8, parts: &[T]) -> Vec<u8> {
    let mut out = vec![ctl];
    for part in parts {
        let part = part.as_ref();
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&part[..usize::from(len)]);
    }
    out
}

fn utf16_doc(client: u64) -> Doc {
    Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(client),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// The first `txns` transactions of a sequential trace, one update each.
fn replay(
    path: &Path,
    client: u64,
    txns: usize,
) -> Result<(Doc, Vec<Vec<u8>>), Box<dyn std::error::Error>> {
    let file = std::fs::File::open(path)?;
    let trace: Value = serde_json::from_reader(flate2::read::GzDecoder::new(file))?;
    let doc = utf16_doc(client);
    let text = doc.get_or_insert_text("content");
    let mut updates = Vec::new();
    for txn in trace["txns"].as_array().into_iter().flatten().take(txns) {
        let mut t = doc.transact_mut();
        for patch in txn["patches"].as_array().into_iter().flatten() {
            let pos = patch[0].as_u64().unwrap_or(0) as u32;
            let del = patch[1].as_u64().unwrap_or(0) as u32;
            let ins = patch[2].as_str().unwrap_or("");
            if del > 0 {
                text.remove_range(&mut t, pos, del);
            }
            if !ins.is_empty() {
                text.insert(&mut t, pos, ins);
            }
        }
        updates.push(t.encode_update_v1());
    }
    Ok((doc, updates))
}

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn update_seeds(traces: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let mut seeds = Seeds::new();
    let ctl = 0x0c; // 1 MiB
    for (i, (file, txns)) in [
        ("sveltecomponent.json.gz", 40),
        ("json-crdt-patch.json.gz", 120),
        ("seph-blog1.json.gz", 60),
        ("friendsforever_flat.json.gz", 200),
    ]
    .into_iter()
    .enumerate()
    {
        let (doc, updates) = replay(&traces.join(file), 100 + i as u64, txns)?;
        let stem = file.trim_end_matches(".json.gz");
        // Runs of consecutive keystroke updates.
        for (j, run) in updates.chunks(12).take(3).enumerate() {
            seeds.push((format!("trace-{stem}-{j}"), join_parts(ctl, run)));
        }
        // The same run out of order: later updates wait for earlier ones.
        let mut reversed: Vec<_> = updates.iter().skip(1).take(6).cloned().collect();
        reversed.reverse();
        seeds.push((format!("trace-{stem}-pending"), join_parts(ctl, &reversed)));
        // A whole snapshot, then a small limit that refuses the next update.
        let snapshot = state(&doc);
        if snapshot.len() < 60_000 {
            seeds.push((
                format!("trace-{stem}-snapshot"),
                join_parts(ctl, &[snapshot.clone()]),
            ));
            let (more_doc, _) = replay(&traces.join(file), 100 + i as u64, txns + 5)?;
            let sv = doc.transact().state_vector();
            let diff = more_doc.transact().encode_state_as_update_v1(&sv);
            seeds.push((
                format!("trace-{stem}-limit"),
                join_parts(0x08, &[snapshot, diff]),
            ));
        }
    }
    // Two clients editing the same text at once, merged.
    {
        let a = utf16_doc(1);
        let b = utf16_doc(2);
        let ta = a.get_or_insert_text("content");
        let tb = b.get_or_insert_text("content");
        let base = {
            let mut t = a.transact_mut();
            ta.insert(&mut t, 0, "shared base text");
            t.encode_update_v1()
        };
        apply(&b, &base);
        let ua = {
            let mut t = a.transact_mut();
            ta.insert(&mut t, 7, "A👋");
            ta.remove_range(&mut t, 0, 2);
            t.encode_update_v1()
        };
        let ub = {
            let mut t = b.transact_mut();
            tb.insert(&mut t, 7, "Bé");
            tb.remove_range(&mut t, 10, 3);
            t.encode_update_v1()
        };
        seeds.push((
            "concurrent".into(),
            join_parts(ctl, &[base.clone(), ua.clone(), ub.clone()]),
        ));
        seeds.push((
            "concurrent-pending".into(),
            join_parts(ctl, &[ub, ua, base]),
        ));
    }
    // Nested values: `Any` inside maps and arrays, shared types inside
    // shared types, XML, formatting, embeds, binary, a subdocument.
    for (name, update) in nested_updates() {
        seeds.push((format!("nested-{name}"), join_parts(ctl, &[update])));
    }
    // Around the nesting limit (128), as bytes.
    for depth in [3, 127, 128, 129] {
        seeds.push((
            format!("nested-any-depth-{depth}"),
            join_parts(ctl, &[nested_any(depth)]),
        ));
    }
    // Empty update, and an update that is only a delete set.
    seeds.push(("empty".into(), join_parts(ctl, &[vec![0u8, 0]])));
    Ok(seeds)
}

fn apply(doc: &Doc, update: &[u8]) {
    use yrs::updates::decoder::Decode;
    if let Ok(u) = yrs::Update::decode_v1(update) {
        let _ = doc.transact_mut().apply_update(u);
    }
}

/// A map entry holding `depth` nested arrays (yrs' `Any` encoding).
fn nested_any(depth: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.write_var(1u32);
    u.write_var(1u32);
    u.write_var(7u64);
    u.write_var(0u32);
    u.write_u8(8 | 0b0010_0000); // Any content, with a parent sub
    u.write_var(1u32);
    u.write_string("m");
    u.write_string("k");
    u.write_var(1u32);
    for _ in 0..depth {
        u.write_u8(117); // array
        u.write_var(1u32);
    }
    u.write_u8(126); // null
    u.write_var(0u32);
    u
}

fn nested_updates() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let any_doc = utf16_doc(11);
    {
        let mut t = any_doc.transact_mut();
        let m = t.get_or_insert_map("meta");
        let mut deep = Any::from("leaf");
        for level in 0..8 {
            deep = if level % 2 == 0 {
                Any::from(vec![deep, Any::from(level), Any::Null, Any::from(1.5)])
            } else {
                Any::from(std::collections::HashMap::from([
                    ("k".to_string(), deep),
                    ("b".to_string(), Any::from(true)),
                    ("big".to_string(), Any::from(1i64 << 60)),
                ]))
            };
        }
        m.insert(&mut t, "deep", deep);
        m.insert(&mut t, "bytes", Any::from(vec![0u8, 1, 2, 255]));
        m.insert(&mut t, "undefined", Any::Undefined);
        m.insert(&mut t, "text", "héllo 👋");
    }
    out.push(("any", state(&any_doc)));

    let types = utf16_doc(12);
    {
        let mut t = types.transact_mut();
        let root = t.get_or_insert_map("root");
        let list = root.insert(&mut t, "list", ArrayPrelim::default());
        let inner = list.push_back(&mut t, MapPrelim::default());
        let text = inner.insert(&mut t, "title", TextPrelim::new("nested text"));
        text.insert(&mut t, 0, ">> ");
        let deeper = inner.insert(&mut t, "deeper", ArrayPrelim::default());
        deeper.push_back(&mut t, ArrayPrelim::from([1, 2, 3]));
        list.push_back(&mut t, 42);
        root.insert(&mut t, "gone", MapPrelim::default());
        root.remove(&mut t, "gone");
    }
    out.push(("types", state(&types)));

    let rich = utf16_doc(13);
    {
        let mut t = rich.transact_mut();
        let text = t.get_or_insert_text("rich");
        text.insert(&mut t, 0, "bold and plain");
        let bold = Attrs::from([("bold".into(), Any::from(true))]);
        text.format(&mut t, 0, 4, bold);
        text.insert_embed(
            &mut t,
            4,
            Any::from(std::collections::HashMap::from([(
                "image".to_string(),
                Any::from("https://example.com/a.png"),
            )])),
        );
        let xml = t.get_or_insert_xml_fragment("body");
        let p = xml.push_back(&mut t, XmlElementPrelim::empty("p"));
        p.insert_attribute(&mut t, "class", "lead");
        p.push_back(&mut t, XmlTextPrelim::new("para"));
        let arr = t.get_or_insert_array("arr");
        arr.push_back(&mut t, Any::from(vec![9u8, 8, 7]));
        arr.push_back(&mut t, Doc::new());
        arr.remove(&mut t, 0);
    }
    out.push(("rich", state(&rich)));
    let text = rich.get_or_insert_text("rich");
    let _ = text.get_string(&rich.transact());
    out
}

/// Frames of every message type, from the update seeds' documents.
fn protocol_seeds(updates: &Seeds) -> Seeds {
    let mut seeds = Seeds::new();
    let doc = utf16_doc(21);
    let text = doc.get_or_insert_text("content");
    let update = {
        let mut t = doc.transact_mut();
        text.insert(&mut t, 0, "hello");
        t.encode_update_v1()
    };
    let sv = doc.transact().state_vector().encode_v1();
    let empty_sv = StateVector::default().encode_v1();
    let awareness = |entries: &[(u64, u32, &str)]| {
        let mut v = Vec::new();
        v.write_var(entries.len());
        for (client, clock, json) in entries {
            v.write_var(*client);
            v.write_var(*clock);
            v.write_string(json);
        }
        v
    };
    let user = r##"{"user":{"name":"Ada","color":"#30bced"},"cursor":{"anchor":{"type":{"client":21,"clock":0},"tname":null,"item":{"client":21,"clock":3},"assoc":0}}}"##;
    let one = awareness(&[(21, 1, user)]);
    let three = awareness(&[
        (21, 2, user),
        (22, 1, r#"{"n":[1,2,{"x":null}]}"#),
        (23, 5, "null"),
    ]);
    let leave = awareness(&[(21, 3, "null")]);
    let dup = awareness(&[(24, 1, "{}"), (24, 2, "[]")]);
    let big = awareness(&[(25, 1, &format!(r#"{{"s":"{}"}}"#, "x".repeat(600)))]);
    let mut add = |name: &str, ctl: u8, parts: &[&[u8]]| {
        let mut v = vec![ctl];
        for p in parts {
            v.extend_from_slice(p);
        }
        seeds.push((name.to_string(), v));
    };
    add("step1-empty", 0, &[&encode_sync_step1(&empty_sv)]);
    add("step1", 0, &[&encode_sync_step1(&sv)]);
    add("step2", 0, &[&encode_sync_step2(&update)]);
    add("update", 0, &[&encode_update(&update)]);
    add("awareness", 0, &[&encode_awareness(&one)]);
    add("awareness-three", 0, &[&encode_awareness(&three)]);
    add(
        "awareness-room",
        0,
        &[
            &encode_awareness(&one),
            &encode_awareness(&three),
            &encode_awareness(&dup),
            &encode_awareness(&big),
            &encode_awareness(&leave),
            &encode_awareness(&one),
        ],
    );
    add("query", 0, &[&[3]]);
    add(
        "mixed",
        0,
        &[
            &encode_sync_step1(&sv),
            &encode_sync_step2(&update),
            &encode_update(&update),
            &encode_awareness(&one),
            &[3],
        ],
    );
    add(
        "limited",
        2,
        &[&encode_update(&update), &encode_update(&update), &[3]],
    );
    for (name, u) in updates
        .iter()
        .filter(|(n, _)| n.starts_with("nested-") && !n.contains("depth-12"))
    {
        // The update itself, without the control byte and length prefix.
        let body = u.get(3..).unwrap_or_default();
        add(&format!("update-{name}"), 0, &[&encode_update(body)]);
    }
    seeds
}

/// A masked client frame.
fn ws_frame(fin: bool, op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 | op } else { op }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn ws_seeds(frames: &Seeds) -> Seeds {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut seeds = Seeds::new();
    let ctl_big = 0x7c; // 64 KiB messages, whole reads
    for (name, f) in frames.iter().take(12) {
        let body = f.get(1..).unwrap_or_default();
        seeds.push((
            format!("binary-{name}"),
            [&[ctl_big][..], &ws_frame(true, 2, body, key)].concat(),
        ));
    }
    let payload: Vec<u8> = frames
        .iter()
        .find(|(n, _)| n == "mixed")
        .map(|(_, f)| f[1..].to_vec())
        .unwrap_or_default();
    let (a, b) = payload.split_at(payload.len() / 2);
    let fragmented = [
        ws_frame(false, 2, a, key),
        ws_frame(true, 9, b"ping", key),
        ws_frame(true, 0, b, key),
        ws_frame(true, 10, b"", key),
        ws_frame(true, 1, b"text", key),
        ws_frame(true, 8, &[3, 232], key),
    ]
    .concat();
    for ctl in [0x0c, 0x1c, 0x3c, 0xec, 0x04] {
        seeds.push((
            format!("fragmented-{ctl:02x}"),
            [&[ctl][..], &fragmented].concat(),
        ));
    }
    let long = vec![0u8; 300];
    seeds.push((
        "len16".into(),
        [&[0x2c][..], &ws_frame(true, 2, &long, key)].concat(),
    ));
    let long = vec![1u8; 70_000];
    let mut frame = ws_frame(true, 2, &long, key);
    frame.truncate(20);
    seeds.push(("len64-over-limit".into(), [&[0x0c][..], &frame].concat()));
    seeds
}

fn name_seeds() -> Seeds {
    let names = [
        "a",
        "Doc",
        "team:x",
        "a-b_c.d~e:f@g",
        "team:*",
        "*",
        "a b",
        "a/b",
        "é",
        "a%20",
        "a*b",
        "**",
        "",
    ];
    let mut seeds: Seeds = names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{i:02}"), n.as_bytes().to_vec()))
        .collect();
    seeds.push(("len255".into(), "x".repeat(255).into_bytes()));
    seeds.push(("len256".into(), "x".repeat(256).into_bytes()));
    seeds.push((
        "len255-star".into(),
        format!("{}*", "x".repeat(255)).into_bytes(),
    ));
    seeds.push(("not-utf8".into(), vec![b'a', 0xff, b'b']));
    seeds
}

fn token_seeds() -> Seeds {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let other_key = jsonwebtoken::EncodingKey::from_secret(b"another secret, not the fuzzing one!");
    let claims =
        serde_json::json!({"doc": "team:*", "perm": "write", "exp": 4_102_444_800u64, "sub": "u1"});
    let foreign = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &other_key)
        .unwrap_or_default();
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut seeds = Seeds::new();
    let mut add = |name: &str, mode: u8, body: &[u8]| {
        seeds.push((name.to_string(), [&[mode][..], body].concat()));
    };
    add("raw-foreign", 0, foreign.as_bytes());
    add("raw-none", 0, none.as_bytes());
    add("raw-garbage", 0, b"eyJ.eyJ.sig");
    let hs256 = br#"{"alg":"HS256","typ":"JWT"}"#;
    let signed = |doc: &str, header: &[u8], claims: &str| {
        [doc.as_bytes(), &[0], header, &[0], claims.as_bytes()].concat()
    };
    add(
        "signed-ok",
        1,
        &signed("team:x", hs256, &claims.to_string()),
    );
    add(
        "signed-exact",
        1,
        &signed(
            "doc",
            hs256,
            r#"{"doc":"doc","perm":"read","exp":4102444800,"name":"Ada"}"#,
        ),
    );
    add(
        "signed-expired",
        1,
        &signed("doc", hs256, r#"{"doc":"doc","perm":"read","exp":1}"#),
    );
    add(
        "signed-no-exp",
        1,
        &signed("doc", hs256, r#"{"doc":"*","perm":"read"}"#),
    );
    add(
        "signed-exp-float",
        1,
        &signed("doc", hs256, r#"{"doc":"*","perm":"write","exp":4.1e9}"#),
    );
    add(
        "signed-exp-string",
        1,
        &signed(
            "doc",
            hs256,
            r#"{"doc":"*","perm":"write","exp":"4102444800"}"#,
        ),
    );
    add(
        "signed-dup",
        1,
        &signed(
            "doc",
            hs256,
            r#"{"doc":"*","perm":"write","exp":4102444800,"exp":1}"#,
        ),
    );
    add(
        "signed-hs512",
        1,
        &signed(
            "doc",
            br#"{"alg":"HS512"}"#,
            r#"{"doc":"*","perm":"write","exp":4102444800}"#,
        ),
    );
    add(
        "signed-none",
        1,
        &signed(
            "doc",
            br#"{"alg":"none"}"#,
            r#"{"doc":"*","perm":"write","exp":4102444800}"#,
        ),
    );
    add(
        "signed-perm-admin",
        1,
        &signed(
            "doc",
            hs256,
            r#"{"doc":"*","perm":"admin","exp":4102444800}"#,
        ),
    );
    let structured = |doc: &str, pattern: &str, perm: u8, minutes: i16, sub: Option<&str>| {
        let mut v = [doc.as_bytes(), &[0], pattern.as_bytes(), &[0], &[perm]].concat();
        v.extend_from_slice(&minutes.to_le_bytes());
        if let Some(sub) = sub {
            v.push(0);
            v.extend_from_slice(sub.as_bytes());
        }
        v
    };
    add(
        "claims-prefix",
        2,
        &structured("team:x", "team:*", 1, 60, Some("u1")),
    );
    add("claims-exact", 2, &structured("doc", "doc", 0, 5, None));
    add("claims-other", 2, &structured("doc", "docs", 0, 5, None));
    add(
        "claims-expired",
        2,
        &structured("doc", "*", 1, -5, Some("u2")),
    );
    add(
        "claims-unicode",
        2,
        &structured("doc", "dé*", 1, 60, Some("👋")),
    );
    seeds
}

fn url_seeds() -> Seeds {
    let urls = [
        "https://example.com/hook",
        "http://example.com:8080/a/b?c=d#e",
        "https://hooks.example.com/%7Euser/path",
        "http://127.0.0.1/",
        "http://[::1]:9000/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://017700000001/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:c0a8:101::]/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://1.1.1.1/",
        "http://[2606:4700:4700::1111]/",
        "http://user:pass@example.com/",
        "http://@example.com/",
        "ftp://example.com/",
        "https:example.com",
        "//example.com/",
        "http://example.com:99999/",
        "http://bücher.example/",
        "http://%31%32%37.0.0.1/",
        "http://127.1/",
        "http://0/",
        "HTTP://EXAMPLE.COM/UPPER",
        "http://example.com/..%2f../",
        "http://[fe80::1%25eth0]/",
        "file:///etc/passwd",
        "",
    ];
    let mut seeds: Seeds = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("{i:02}"), u.as_bytes().to_vec()))
        .collect();
    seeds.push((
        "long".into(),
        format!("https://example.com/{}", "a".repeat(2030)).into_bytes(),
    ));
    seeds
}
