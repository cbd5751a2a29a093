//! `tandem export DIR` and `tandem import DIR`.
//!
//! An export folder holds, per document, `<file>.bin` (its whole state as
//! one Yjs v1 update) and `<file>.json` (the rendering `GET
//! /api/docs/{name}/json` answers), and `tandem-export.json`, which lists
//! each document's name with its `<file>`. `<file>` is the name with every
//! character but `a-z 0-9 - _` written `%XX`: safe on every file system,
//! case-insensitive ones included, and never hidden; a name that would
//! make it longer than `MAX_STEM` bytes gets `%%` and a SHA-256 of the name.
//!
//! Each document is read in one transaction, so it is consistent; the
//! folder is not one moment of the whole database while writers go on.
//! Import checks every file before it writes anything, and refuses when a
//! document exists (unless `--overwrite`): it never merges into one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_crdt::DocState;

use super::CliError;
use crate::config::Settings;
use crate::doc_name::DocName;
use crate::store::{self, Store};

pub const MANIFEST: &str = "tandem-export.json";
const FORMAT: &str = "tandem-export";
/// Longest file name stem: with `.json`, under the 255 bytes most file
/// systems allow.
const MAX_STEM: usize = 200;
/// Documents listed per query.
const PAGE: u32 = 500;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    documents: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    file: String,
}

/// The file name stem for a document name.
fn file_stem(name: &str) -> String {
    let mut stem = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
            stem.push(char::from(b));
        } else {
            stem.push_str(&format!("%{b:02X}"));
        }
    }
    if stem.len() > MAX_STEM {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name.as_bytes());
        stem = String::from("%%");
        for b in digest {
            stem.push_str(&format!("{b:02x}"));
        }
    }
    stem
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(CliError::file(path))
}

fn json_text(value: &impl Serialize) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec_pretty(value).map_err(|e| CliError::Usage(format!("JSON: {e}")))
}

pub async fn export(settings: &Settings, dir: PathBuf) -> Result<(), CliError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(&dir).map_err(CliError::file(&dir))?;
        if entries.next().is_some() {
            return Err(CliError::Usage(format!(
                "{} is not empty; export into a new or empty folder",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir).map_err(CliError::file(&dir))?;
    let store = store::open_for_tool(&settings.database_url).await?;
    let result = export_all(store.as_ref(), &dir).await;
    store.close().await;
    let count = result?;
    eprintln!("exported {count} documents to {}", dir.display());
    Ok(())
}

async fn export_all(store: &dyn Store, dir: &Path) -> Result<usize, CliError> {
    let mut documents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("", after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.name.clone());
        for meta in page {
            let log = store.read_log(meta.id).await?;
            let (doc, report) = DocState::load(
                log.snapshot.as_deref(),
                log.updates.iter().map(|(_, u)| u.as_slice()),
            )
            .map_err(|e| CliError::Usage(format!("document {:?}: {e}", meta.name)))?;
            if report.skipped > 0 {
                eprintln!(
                    "warning: document {:?}: {} stored rows do not decode and are left out",
                    meta.name, report.skipped
                );
            }
            let stem = file_stem(&meta.name);
            let state = doc.encode_state();
            write(&dir.join(format!("{stem}.bin")), &state)?;
            write(
                &dir.join(format!("{stem}.json")),
                &json_text(&doc.to_json())?,
            )?;
            eprintln!(
                "[{}] exported {:?} ({} bytes)",
                documents.len() + 1,
                meta.name,
                state.len()
            );
            documents.push(Entry {
                name: meta.name,
                file: stem,
            });
        }
    }
    let count = documents.len();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        documents,
    };
    write(&dir.join(MANIFEST), &json_text(&manifest)?)?;
    Ok(count)
}

/// A document of the folder, read and checked.
struct Checked {
    name: DocName,
    state: Vec<u8>,
}

/// Reads one document's files: the update must decode whole, and render
/// to the JSON beside it (when present).
fn read_entry(dir: &Path, entry: &Entry) -> Result<Checked, CliError> {
    let bad = |why: String| CliError::Usage(format!("document {:?}: {why}", entry.name));
    let name = DocName::parse(&entry.name).map_err(|e| bad(e.to_string()))?;
    if entry.file.contains(['/', '\\']) || entry.file.starts_with('.') {
        return Err(bad(format!("{:?} is not a file name", entry.file)));
    }
    let bin = dir.join(format!("{}.bin", entry.file));
    let state = std::fs::read(&bin).map_err(CliError::file(&bin))?;
    let (doc, report) = DocState::load(None, [state.as_slice()]).map_err(|e| bad(e.to_string()))?;
    if report.skipped > 0 {
        return Err(bad(format!("{} is not a Yjs v1 update", bin.display())));
    }
    let json = dir.join(format!("{}.json", entry.file));
    if json.exists() {
        let text = std::fs::read(&json).map_err(CliError::file(&json))?;
        let expected: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", json.display())))?;
        if expected != doc.to_json() {
            return Err(bad(format!(
                "{} does not render to {}",
                bin.display(),
                json.display()
            )));
        }
    }
    Ok(Checked { name, state })
}

pub async fn import(settings: &Settings, dir: PathBuf, overwrite: bool) -> Result<(), CliError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(CliError::file(&path))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    if manifest.format != FORMAT || manifest.version != 1 {
        return Err(CliError::Usage(format!(
            "{} is not a tandem export of version 1",
            path.display()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for entry in &manifest.documents {
        if !seen.insert(entry.name.as_str()) {
            return Err(CliError::Usage(format!(
                "document {:?} is listed twice",
                entry.name
            )));
        }
    }
    // Every file is checked before anything is written.
    for (i, entry) in manifest.documents.iter().enumerate() {
        read_entry(&dir, entry)?;
        eprintln!(
            "[{}/{}] checked {:?}",
            i + 1,
            manifest.documents.len(),
            entry.name
        );
    }
    let store = store::open_for_tool(&settings.database_url).await?;
    let result = import_all(store.as_ref(), &dir, &manifest, overwrite).await;
    store.close().await;
    result?;
    eprintln!("imported {} documents", manifest.documents.len());
    Ok(())
}

async fn import_all(
    store: &dyn Store,
    dir: &Path,
    manifest: &Manifest,
    overwrite: bool,
) -> Result<(), CliError> {
    if !overwrite {
        let mut existing = Vec::new();
        for entry in &manifest.documents {
            if store.get(&entry.name).await?.is_some() {
                existing.push(entry.name.clone());
            }
        }
        if !existing.is_empty() {
            return Err(CliError::Usage(format!(
                "{} documents exist already ({}); nothing was imported. \
                 Pass --overwrite to replace them",
                existing.len(),
                existing
                    .iter()
                    .take(10)
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let total = manifest.documents.len();
    for (i, entry) in manifest.documents.iter().enumerate() {
        let doc = read_entry(dir, entry)?;
        let name = doc.name.as_str();
        // One transaction per document: a crash leaves each either as it
        // was or imported, never deleted and not yet written.
        let (_, replaced) = store
            .create_from_state(name, store::now_ms(), &doc.state, overwrite)
            .await?
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "document {name:?} was created by someone else meanwhile"
                ))
            })?;
        let verb = if replaced { "replaced" } else { "imported" };
        eprintln!("[{}/{total}] {verb} {name:?}", i + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_distinct_and_bounded() {
        assert_eq!(file_stem("notes-1_a"), "notes-1_a");
        assert_eq!(file_stem("Doc"), "%44oc");
        assert_ne!(file_stem("Doc"), file_stem("doc"));
        assert_eq!(file_stem(".."), "%2E%2E");
        assert_eq!(file_stem("team:a@b~c"), "team%3Aa%40b%7Ec");
        let long = "A".repeat(255);
        let stem = file_stem(&long);
        assert!(stem.starts_with("%%") && stem.len() == 66, "{stem}");
        assert_ne!(stem, file_stem(&"B".repeat(255)));
    }
}
