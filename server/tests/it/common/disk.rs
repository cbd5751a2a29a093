//! A small disk that can really fill up: a tmpfs mounted on a fresh
//! temporary folder (this needs root, or CAP_SYS_ADMIN; without it the
//! test says it skipped). `fill` takes every free byte with a filler file,
//! `free` deletes it. Unmounted (lazily, so open files do not hold it) on
//! drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub struct TmpDisk {
    pub dir: Arc<tempfile::TempDir>,
    filler: PathBuf,
}

impl TmpDisk {
    /// Mounts a tmpfs of `size` (as `mount` takes it: `8m`), or says why
    /// it cannot and returns `None`.
    pub fn mount(size: &str) -> Option<TmpDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                return None;
            }
        }
        let filler = dir.path().join("filler");
        Some(TmpDisk {
            dir: Arc::new(dir),
            filler,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the filler file until the disk is full.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("filler opens");
        let chunk = vec![0xA5u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
    }

    /// Deletes the filler file: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("filler removed");
    }
}

impl Drop for TmpDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
