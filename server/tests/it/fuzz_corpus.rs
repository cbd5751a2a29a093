//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! fuzz targets' own harness, on stable and without libFuzzer: a crash once
//! found and kept in a corpus stays fixed. See docs/fuzzing.md.

use std::path::Path;
use std::time::Instant;

// The same file the fuzz targets call: one source of truth.
#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod harness;

#[test]
fn every_committed_corpus_input_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, run) in harness::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        let started = Instant::now();
        for file in &files {
            let input = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| run(&input));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
        eprintln!(
            "{target}: {} inputs in {:?}",
            files.len(),
            started.elapsed()
        );
    }
}
