//! The README's promises about itself: every setting `tandem --help` lists is
//! in its settings table, every page under `docs/` is linked from it, and it
//! stays short enough to read in ten minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::Path;
use std::process::Command;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The environment variables `tandem --help` names (`[env: TANDEM_X=]`).
fn settings_in_help() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let mut names: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_setting_in_help_is_in_the_readme_settings_table() {
    let readme = repo_file("README.md");
    let names = settings_in_help();
    assert!(names.len() > 20, "read the settings from --help: {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !readme.contains(&format!("| `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from the README's table: {missing:?}"
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = repo_file("README.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages = 0;
    for entry in std::fs::read_dir(root).expect("docs/") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            pages += 1;
            assert!(
                readme.contains(&format!("(docs/{name})")),
                "docs/{name} is not linked from the README"
            );
        }
    }
    assert!(pages > 0);
}

#[test]
fn the_readme_is_at_most_200_lines() {
    let lines = repo_file("README.md").lines().count();
    assert!(lines <= 200, "README.md has {lines} lines");
}
