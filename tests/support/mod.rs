//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod otlp;

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

/// A CSV file as rows of column → text (handles quoted fields with commas).
pub fn read_csv(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let split = |line: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        out.push(cur);
        out
    };
    let header = split(lines.next().expect("header"));
    lines.map(|l| header.iter().cloned().zip(split(l)).collect()).collect()
}

/// A numeric CSV cell ("inf" allowed; blank is None).
pub fn num(row: &std::collections::HashMap<String, String>, col: &str) -> Option<f64> {
    let v = row.get(col).unwrap_or_else(|| panic!("column {col}")).trim();
    if v.is_empty() {
        None
    } else {
        Some(v.parse().unwrap_or_else(|_| panic!("{col}: {v}")))
    }
}

/// Relative difference |a/b − 1| (absolute when b = 0).
pub fn rel(a: f64, b: f64) -> f64 {
    if b == 0.0 { a.abs() } else { (a / b - 1.0).abs() }
}

/// A Python virtual environment with `requirements` installed, made once
/// and cached under the target directory (keyed by the requirements'
/// content), so the tests need nothing but `python3` on the machine.
/// Concurrent tests wait on a file lock while one of them installs.
#[track_caller]
pub fn python_env(name: &str, requirements: &std::path::Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let text = std::fs::read(requirements).unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python");
    std::fs::create_dir_all(&root).expect("create the Python cache dir");
    let dir = root.join(format!("{name}-{:016x}", h.finish()));
    let python = dir.join("bin/python");
    let ready = dir.join(".ready");
    let lock = std::fs::File::create(root.join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("lock the Python cache");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let py = std::env::var("AGENTDRIFT_PYTHON3").unwrap_or_else(|_| "python3".into());
        let ok = Command::new(&py)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`{py} -m venv {}` failed: the tests need Python 3 with venv",
            dir.display()
        );
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(requirements)
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install -r {} failed (the tests install their Python packages from PyPI):\n{}",
            requirements.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, b"").expect("mark the venv ready");
    }
    let _ = lock.unlock();
    python
}

/// `node_modules` with `package.json`'s dependencies installed by npm, made
/// once and cached under the target directory (keyed by the file's content),
/// like [`python_env`]; returns the `node_modules` directory (for `NODE_PATH`).
#[track_caller]
pub fn node_modules(name: &str, package_json: &std::path::Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let text = std::fs::read(package_json).unwrap_or_else(|e| panic!("{}: {e}", package_json.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node");
    std::fs::create_dir_all(&root).expect("create the npm cache dir");
    let dir = root.join(format!("{name}-{:016x}", h.finish()));
    let ready = dir.join(".ready");
    let lock = std::fs::File::create(root.join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("lock the npm cache");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the package dir");
        std::fs::write(dir.join("package.json"), &text).expect("write package.json");
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output();
        let out = out.unwrap_or_else(|e| panic!("cannot run npm ({e}): the console test needs Node.js and npm"));
        assert!(
            out.status.success(),
            "npm install of {} failed (the test installs its npm packages from the registry):\n{}",
            package_json.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, b"").expect("mark the packages ready");
    }
    let _ = lock.unlock();
    dir.join("node_modules")
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server a test started (Prometheus, Alertmanager) on a loopback port,
/// with its scratch directory; killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    /// Its base URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd`, which listens on `port` and keeps its files in `dir`, and
/// waits (30 s at most) until it answers `GET /-/ready` with 2xx.
pub async fn start_daemon(
    c: &reqwest::Client,
    mut cmd: Command,
    port: u16,
    dir: tempfile::TempDir,
    what: &str,
) -> Daemon {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let d = Daemon {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = c.get(format!("{}/-/ready", d.url)).send().await
            && r.status().is_success()
        {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not become ready at {}",
            d.url
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
