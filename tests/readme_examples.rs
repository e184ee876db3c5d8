//! Every shell example in README.md runs as pasted (issue 15): each ```sh
//! block is read from the README itself, its commands run in order in a
//! scratch copy of the checkout (`baselines/` copied, `fixtures/` and
//! `deploy/` linked, `../shared` beside it), and each must succeed.
//!
//! What the test changes, and only this: `cargo run --release --` is the
//! built binary (`agentdrift` is on `PATH`); ports 7878/4317 are free ports
//! (`AGENTDRIFT_LISTEN`/`AGENTDRIFT_OTLP_GRPC_LISTEN`, and `:0` for an
//! explicit `0.0.0.0:7878`); `/var/lib/agentdrift` is a scratch directory;
//! curl gets `--fail-with-body` so an HTTP error fails the command; `| jq F`
//! is checked by parsing the answer and following the path `F`;
//! `steps.msgpack` (the reader's own steps) is the shipped fixture in
//! MessagePack. `serve`, `demo` and the event stream keep running: a
//! service must answer `/healthz`, then the next one replaces it (stopped
//! with SIGTERM, exit 0); the commands the demo prints are run too. Only
//! the test command itself (`cargo nextest run`) is skipped.

use crate::support::{bin, repo, shared};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command of the README: the line its block starts on, and its text.
#[derive(Debug)]
struct Example {
    line: usize,
    text: String,
}

/// The commands of every ```sh block, continuation lines and `for … done`
/// loops joined, comments dropped.
fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    let mut pending = String::new();
    for (i, raw) in readme.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with("```") {
            block = match block {
                None if line == "```sh" => Some(i + 1),
                None => Some(0), // another language: not run
                Some(_) => None,
            };
            continue;
        }
        let Some(start) = block.filter(|s| *s > 0) else {
            continue;
        };
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let code = strip_comment(line);
        pending.push_str(code.trim_end_matches('\\').trim());
        pending.push(' ');
        let in_loop = pending.starts_with("for ") && !pending.trim_end().ends_with("done");
        if !code.ends_with('\\') && !in_loop {
            out.push(Example {
                line: start,
                text: pending.trim().replace(" ;", ";"),
            });
            pending.clear();
        } else if in_loop && !code.ends_with('\\') && !code.ends_with("do") {
            pending.push_str("; ");
        }
    }
    out
}

/// A line without its trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    line.trim_end()
}

/// A running `serve` or `demo`, with its stdout read on a thread.
struct Running {
    child: Child,
    what: String,
    url: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Reads stdout until a line satisfies `until` (the whole output so far is kept).
    fn read_until(&mut self, until: impl Fn(&str) -> bool, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let done = until(&l);
                self.seen.push(l);
                if done {
                    return;
                }
            } else if let Ok(Some(status)) = self.child.try_wait() {
                panic!("`{}` exited ({status}) early:\n{}", self.what, self.seen.join("\n"));
            }
        }
        panic!(
            "`{}`: expected output did not come in {secs} s:\n{}",
            self.what,
            self.seen.join("\n")
        );
    }

    fn stop(mut self, signal: &str) {
        let pid = self.child.id().to_string();
        // The command runs under `bash -c "exec env …"`, so the pid is the binary's.
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "`{}` exited {status} after {signal}", self.what);
    }
}

impl Drop for Running {
    /// A failed assertion must not leave the service running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(work: &Path, env_path: &str, text: &str) -> Running {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec env {text}"))
        .current_dir(work)
        .env("PATH", env_path)
        .env("AGENTDRIFT_LISTEN", "127.0.0.1:0")
        .env("AGENTDRIFT_OTLP_GRPC_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        what: text.to_string(),
        url: String::new(),
        lines,
        seen: Vec::new(),
    }
}

fn url_in(line: &str) -> Option<String> {
    let i = line.find("http://")?;
    let rest = &line[i..];
    let end = rest[7..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'))
        .map_or(rest.len(), |e| e + 7);
    Some(rest[..end].replace("0.0.0.0", "127.0.0.1"))
}

fn healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-fsS", &format!("{url}/healthz")])
            .output()
            .unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["status"], "ok");
            return;
        }
        assert!(Instant::now() < deadline, "{url}/healthz did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a curl command against the running service; `| jq F` is checked here.
fn curl(work: &Path, env_path: &str, text: &str, url: &str) -> String {
    let text = text
        .replace("http://127.0.0.1:7878", url)
        .replacen("curl ", "curl --fail-with-body ", 1);
    let (cmd, jq) = match text.split_once(" | jq ") {
        Some((c, f)) => (c.to_string(), Some(f.trim().to_string())),
        None => (text.clone(), None),
    };
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &cmd])
        .current_dir(work)
        .env("PATH", env_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{text}` failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(filter) = jq {
        let mut v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("`{text}`: not JSON ({e}): {stdout}"));
        for key in filter.trim_start_matches('.').split('.').filter(|k| !k.is_empty()) {
            v = v
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("`{text}`: no `{key}` in the answer: {stdout}"));
        }
        assert!(!v.is_null(), "`{text}`: {filter} is null");
    }
    stdout
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The shipped sessions as a MessagePack stream of step maps.
fn msgpack_steps() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl")).unwrap();
    let mut out = Vec::new();
    for line in text.lines().take(200) {
        let step: Value = serde_json::from_str(line).unwrap();
        out.extend(rmp_serde::to_vec_named(&step).unwrap());
    }
    out
}

#[test]
fn every_shell_example_in_the_readme_runs_as_pasted() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let all = examples(&readme);
    assert!(all.len() > 30, "README examples read: {all:#?}");

    let root = tempfile::tempdir().unwrap();
    let work: PathBuf = root.path().join("agentdrift");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(shared(), root.path().join("shared")).unwrap();
    for d in ["fixtures", "deploy"] {
        std::os::unix::fs::symlink(repo().join(d), work.join(d)).unwrap();
    }
    copy_dir(&repo().join("baselines"), &work.join("baselines"));
    std::fs::write(work.join("steps.msgpack"), msgpack_steps()).unwrap();
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let env_path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let var_lib = work.join("var-lib-agentdrift");

    let mut service: Option<Running> = None;
    let mut ran = 0;
    for ex in &all {
        let text = ex
            .text
            .replace("cargo run --release -- ", "agentdrift ")
            .replace("0.0.0.0:7878", "0.0.0.0:0")
            .replace("/var/lib/agentdrift", &var_lib.display().to_string());
        eprintln!("README.md block at line {}: {text}", ex.line);
        if text.starts_with("cargo nextest") {
            continue;
        }
        ran += 1;
        if text.contains("agentdrift serve ") {
            if let Some(s) = service.take() {
                s.stop("-TERM");
            }
            let mut s = spawn(&work, &env_path, &text);
            s.read_until(|l| url_in(l).is_some(), 60);
            s.url = url_in(s.seen.last().unwrap()).unwrap();
            healthy(&s.url);
            service = Some(s);
        } else if text.starts_with("agentdrift demo") {
            let mut d = spawn(&work, &env_path, &text);
            d.read_until(|l| l.contains("Ctrl-C stops it"), 600);
            let printed: Vec<String> = d
                .seen
                .iter()
                .map(|l| l.trim().to_string())
                .filter(|l| l.starts_with("curl "))
                .collect();
            assert!(
                printed.len() >= 5,
                "the demo prints the commands to read its reports:\n{}",
                d.seen.join("\n")
            );
            let url = printed.iter().find_map(|l| url_in(l)).unwrap();
            for c in printed.iter().filter(|c| !c.contains("/stream")) {
                let c = strip_comment(c);
                let body = curl(&work, &env_path, c, &url);
                assert!(!body.is_empty(), "`{c}` answered nothing");
            }
            d.stop("-INT");
        } else if text.contains("/v1/events/stream") {
            let url = &service.as_ref().expect("a service runs").url;
            let text = text.replace("http://127.0.0.1:7878", url);
            let mut child = Command::new("bash")
                .args(["-c", &format!("exec {text}")])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_secs(2));
            assert!(
                child.try_wait().unwrap().is_none(),
                "`{text}` ended: the stream should stay open"
            );
            child.kill().unwrap();
            let _ = child.wait();
        } else if text.starts_with("curl ") {
            let url = service
                .as_ref()
                .expect("a service runs before the README's curl examples")
                .url
                .clone();
            curl(&work, &env_path, &text, &url);
        } else {
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &text])
                .current_dir(&work)
                .env("PATH", &env_path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README.md block at line {}: `{text}` failed ({}):\n{}{}",
                ex.line,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if let Some(s) = service.take() {
        s.stop("-TERM");
    }
    assert!(ran > 30, "{ran} examples ran");
}

#[test]
fn the_example_reader_joins_continuations_and_loops_and_drops_comments() {
    let md = "text\n```sh\na --x \\\n   --y  # why\n# comment\nfor k in 1 2; do\n  echo ${k#*:} $k\ndone\n```\n```toml\nnot = \"run\"\n```\n";
    let ex = examples(md);
    let texts: Vec<&str> = ex.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["a --x --y", "for k in 1 2; do echo ${k#*:} $k; done"]);
    assert_eq!(ex[0].line, 2);
}
