//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the checkout (or `$AGENTDRIFT_SHARED`); fails loudly if absent.
#[track_caller]
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("AGENTDRIFT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    assert!(
        dir.join("data/README.md").is_file(),
        "the shared material is missing at {}: put the project's `shared/` folder beside the checkout \
         or set AGENTDRIFT_SHARED to its path",
        dir.display()
    );
    dir
}

/// Every shared data file, sorted.
pub fn shared_data_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in ["taubench", "tau2bench"] {
        for e in std::fs::read_dir(shared().join("data").join(sub)).expect("shared data dir") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The built `agentdrift` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentdrift"))
}

/// Runs the binary and returns its output.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin()).args(args).output().expect("run agentdrift")
}

/// Runs the binary, asserts success, returns stdout.
#[track_caller]
pub fn run_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run(args);
    assert!(
        out.status.success(),
        "agentdrift failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
