//! Issue 14's attacks and faults, one regression test each, against the real
//! binary: connections one client cannot hog, bounded values, tokens, Host,
//! TLS, file modes, damaged stores and snapshots, escaped text logs, JSON on
//! every error status.

use crate::service_e2e::{Server, get_json};
use crate::support::{bin, repo, shared};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn baseline() -> PathBuf {
    repo().join("baselines/taubench-gpt-4o-airline.adb")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn step(session: &str, seq: u64) -> Value {
    json!({"session_id": session, "seq": seq, "ts": 1_700_000_000_000i64 + seq as i64, "kind": "llm",
           "agent": "taubench-airline/gpt-4o", "task_type": "airline", "text": "Let me check.",
           "input_tokens": 100, "output_tokens": 20, "model": "gpt-4o"})
}

fn ndjson(steps: &[Value]) -> String {
    steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n")
}

async fn post(c: &reqwest::Client, url: &str, steps: &[Value]) -> reqwest::Response {
    c.post(format!("{url}/v1/steps"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson(steps))
        .send()
        .await
        .unwrap()
}

/// `agentdrift serve` expected to refuse to start: its stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("serve").args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "serve {args:?} should refuse to start");
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return err;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve {args:?} started although it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 1: idle and slowloris connections are cut at the header timeout and
/// never keep honest clients out, even past the connection cap.
#[tokio::test]
async fn idle_and_slowloris_connections_are_cut_and_honest_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &baseline(),
        &dir.path().join("data"),
        &[
            ("AGENTDRIFT_HTTP_HEADER_TIMEOUT_SECS", "2"),
            ("AGENTDRIFT_MAX_CONNECTIONS", "64"),
        ],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut idle: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/steps HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
            s
        })
        .collect();
    // Past the cap, with every slot taken: an honest request is still answered.
    let c = client();
    let t0 = Instant::now();
    let r = c.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t0.elapsed() < Duration::from_secs(5), "healthz took {:?}", t0.elapsed());
    assert_eq!(post(&c, &server.url, &[step("honest", 0)]).await.status(), 200);
    // One byte every 500 ms does not extend the header timeout.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let closed = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                // A 408 the server sent before closing.
                Ok(_) => continue,
                Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
        }
    };
    let idle_closed = idle.iter_mut().map(closed).filter(|c| *c).count();
    let slow_closed = slow.iter_mut().map(closed).filter(|c| *c).count();
    assert_eq!(idle_closed, idle.len(), "every idle connection is cut within 10 s");
    assert_eq!(slow_closed, slow.len(), "every slowloris connection is cut within 10 s");
}

/// Items 3 and 8: values that overflow arithmetic are refused with the field
/// named, and the honest requests around them are untouched.
#[tokio::test]
async fn overflowing_values_are_refused_by_field_and_other_batches_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&baseline(), &dir.path().join("data"), &[]);
    let c = client();
    let bad = [
        ("seq", json!(9_223_372_036_854_775_807u64)),
        ("cost_usd", json!(1e308)),
        ("input_tokens", json!(u64::MAX)),
        ("ts", json!(i64::MAX)),
        ("ts", json!(i64::MIN)),
    ];
    let honest: Vec<_> = (0..20)
        .map(|k| {
            let (c, url) = (c.clone(), server.url.clone());
            tokio::spawn(async move {
                let steps: Vec<Value> = (0..50).map(|s| step(&format!("h{k}"), s)).collect();
                post(&c, &url, &steps).await.status().as_u16()
            })
        })
        .collect();
    for (field, value) in bad {
        let mut s = step("attacker", 0);
        s[field] = value;
        let r = post(&c, &server.url, &[s]).await;
        assert_eq!(r.status(), 422, "{field}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    for h in honest {
        assert_eq!(h.await.unwrap(), 200);
    }
    // The listing follows the engine: wait until it has every honest session.
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..100 {
        let r: Value = c
            .get(format!("{}/v1/sessions?limit=100", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids = r["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids.iter().filter(|i| i.starts_with('h')).count(), 20, "{ids:?}");
    assert!(!ids.iter().any(|i| i == "attacker"));
}

/// Item 5: tokens and scopes, the Host check, a refused exposed bind, file modes.
#[tokio::test]
async fn tokens_scopes_host_check_exposed_bind_and_file_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &baseline(),
        &data,
        &[(
            "AGENTDRIFT_AUTH_TOKENS",
            "col=ingest:in-secret-1-abcdefgh;ops=read:rd-secret-2-abcdefgh;root=admin:ad-secret-3-abcdefgh",
        )],
    );
    let c = client();
    let url = &server.url;
    let body = ndjson(&[step("s1", 0)]);
    let send = |path: &str, token: Option<&str>, body: Option<&str>| {
        let mut r = match body {
            Some(b) => c
                .post(format!("{url}{path}"))
                .header("content-type", "application/x-ndjson")
                .body(b.to_string()),
            None => c.get(format!("{url}{path}")),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = send("/v1/steps", None, Some(&body)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(
        send("/v1/steps", Some("wrong"), Some(&body)).await.unwrap().status(),
        401
    );
    assert_eq!(
        send("/v1/steps", Some("rd-secret-2-abcdefgh"), Some(&body))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send("/v1/steps", Some("in-secret-1-abcdefgh"), Some(&body))
            .await
            .unwrap()
            .status(),
        200
    );
    // Reading sessions (their text) needs `read`; ingest may not.
    let r = send("/v1/sessions/s1/replay", Some("in-secret-1-abcdefgh"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    assert_eq!(send("/v1/sessions/s1/replay", None, None).await.unwrap().status(), 401);
    assert_eq!(
        send("/v1/sessions/s1/replay", Some("rd-secret-2-abcdefgh"), None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send("/v1/sessions/s1/replay", Some("ad-secret-3-abcdefgh"), None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(send("/healthz", None, None).await.unwrap().status(), 200);
    assert_eq!(
        send("/metrics", None, None).await.unwrap().status(),
        401,
        "metrics = read by default"
    );
    // The console's page and assets hold no data and load without a token (the page asks
    // for one); what they read does not.
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let r = send(path, None, None).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
    }
    assert_eq!(
        send("/v1/charts?segment=a/b&chart=markov", None, None)
            .await
            .unwrap()
            .status(),
        401
    );
    // DNS rebinding: a loopback bind answers loopback names only.
    let r = c
        .get(format!("{url}/healthz"))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "host_not_allowed");
    let r = c
        .get(format!("{url}/healthz"))
        .header("host", "localhost:1234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The data directory and every file of the store are the owner's only.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in std::fs::read_dir(&data).unwrap() {
        let p = f.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(server);
    // An exposed address without tokens refuses to start.
    let err = refused_start(
        &[
            "--baseline",
            baseline().to_str().unwrap(),
            "--data-dir",
            dir.path().join("d2").to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--otlp-grpc-listen",
            "off",
        ],
        &[],
    );
    assert!(
        err.contains("without authentication") && err.contains("--allow-unauthenticated"),
        "{err}"
    );
}

/// Item 5: TLS with rustls from `tls_cert` / `tls_key`.
#[tokio::test]
async fn tls_serves_with_the_configured_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        &baseline(),
        &dir.path().join("data"),
        &[
            ("AGENTDRIFT_TLS_CERT", cert_path.to_str().unwrap()),
            ("AGENTDRIFT_TLS_KEY", key_path.to_str().unwrap()),
        ],
    );
    let addr = server.url.split("://").nth(1).unwrap().to_string();
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tls.read_to_string(&mut resp).await.unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Plain HTTP on the TLS port gets no answer it could take for a response.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// Item 6: a baseline with a valid hash but inconsistent contents is refused
/// at start, naming what is inconsistent.
#[test]
fn an_inconsistent_baseline_is_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = agentdrift::baseline::file::load(&baseline()).unwrap();
    let k = b.segments[0].markov.states.len();
    b.segments[0].markov.counts.truncate(k);
    let bad = dir.path().join("bad.adb");
    agentdrift::baseline::file::save(&b, &bad).unwrap();
    let data = dir.path().join("data");
    let err = refused_start(&serve_args(bad.to_str().unwrap(), data.to_str().unwrap()), &[]);
    assert!(
        err.contains("markov.counts") && err.contains(&format!("{k} values")),
        "{err}"
    );
}

#[test]
fn a_bad_metrics_access_setting_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agentdrift.toml");
    std::fs::write(&cfg, "[auth]\nmetrics = \"public\"\n").unwrap();
    let b = baseline();
    let (b, data) = (b.to_str().unwrap(), dir.path().join("data"));
    let mut args = serve_args(b, data.to_str().unwrap());
    args.extend(["--config", cfg.to_str().unwrap()]);
    let err = refused_start(&args, &[]);
    assert!(
        err.contains("[auth] metrics must be `read` or `open`, got `public`"),
        "{err}"
    );
}

fn serve_args<'a>(b: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "--baseline",
        b,
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--otlp-grpc-listen",
        "off",
    ]
}

/// Closed sessions the scorer has counted, and the sessions it holds open.
async fn engine_sessions(c: &reqwest::Client, url: &str) -> (u64, u64) {
    let v = get_json(c, &format!("{url}/v1/segments")).await;
    let closed = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["live"]["sessions"].as_u64().unwrap())
        .sum();
    (closed, v["open_sessions"].as_u64().unwrap())
}

/// Item 7: a missing or emptied database under its marker, and damaged
/// pages, are errors at start; a damaged snapshot falls back to the log; an
/// unreadable log row is skipped and counted, the rest served.
#[tokio::test]
async fn damaged_stores_are_detected_and_damaged_snapshots_fall_back_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("agentdrift.sqlite3");
    let c = client();
    let lines = crate::service_e2e::sessions_of(&shared().join("data/taubench/gpt-4o_airline.jsonl"));
    let sessions = &lines[..40];
    let server = Server::start(&baseline(), &data, &[]);
    for (_, steps) in sessions {
        let r = c
            .post(format!("{}/v1/steps", server.url))
            .header("content-type", "application/x-ndjson")
            .body(steps.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut before = (0, 0);
    for _ in 0..100 {
        before = engine_sessions(&c, &server.url).await;
        if before.0 + before.1 == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(before, (40, 0), "every session ends with an end step");
    server.terminate();
    {
        // Damage the snapshot, and the first step of the last session.
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn.execute("UPDATE snapshot SET state = x'c1c1c1c1c1'", []).unwrap();
        assert_eq!(n, 1, "a final snapshot was written at shutdown");
        let n = conn
            .execute(
                "UPDATE log SET raw = '{\"broken' WHERE id = (SELECT MIN(id) FROM log WHERE kind = 0 AND session_id = ?1)",
                [&sessions[39].0],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let server = Server::start(&baseline(), &data, &[]);
    let m = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("agentdrift_store_unreadable_log_rows 1"), "{m}");
    // The whole log was replayed: 39 sessions closed again, the damaged one
    // waits for its missing first step (open), nothing else is lost.
    assert_eq!(engine_sessions(&c, &server.url).await, (39, 1));
    server.terminate();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let (b, d) = (baseline(), data.to_str().unwrap().to_string());
    let b = b.to_str().unwrap();
    // Damaged pages: found at start, not when a reader trips on them.
    let pristine = std::fs::read(&db).unwrap();
    {
        let mut bytes = pristine.clone();
        let pages = bytes.len() / 4096;
        assert!(pages > 24, "{pages} pages");
        for p in 2..22 {
            for (i, x) in bytes[p * 4096..(p + 1) * 4096].iter_mut().enumerate() {
                *x = (i as u8).wrapping_mul(31).wrapping_add(p as u8);
            }
        }
        std::fs::write(&db, bytes).unwrap();
    }
    let err = refused_start(&serve_args(b, &d), &[]);
    assert!(err.contains("damaged"), "{err}");
    // An emptied database beside its marker is lost data, not a fresh start.
    std::fs::write(&db, b"").unwrap();
    let err = refused_start(&serve_args(b, &d), &[]);
    assert!(err.contains("refusing to start empty"), "{err}");
    std::fs::remove_file(&db).unwrap();
    let err = refused_start(&serve_args(b, &d), &[]);
    assert!(err.contains("is missing"), "{err}");
    // The intact file starts again.
    std::fs::write(&db, &pristine).unwrap();
    let server = Server::start(&baseline(), &data, &[]);
    assert_eq!(engine_sessions(&c, &server.url).await, (39, 1));
}

/// `agentdrift serve` with its stderr kept for the test; the child and its URL.
fn spawn_serve(data: &Path, extra: &[&str], rust_log: &str) -> (std::process::Child, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .args(serve_args(baseline().to_str().unwrap(), data.to_str().unwrap()))
        .args(extra)
        .env("RUST_LOG", rust_log);
    spawn_listening(cmd)
}

/// Starts a command that ends up serving, and waits for its `listening on` line.
fn spawn_listening(mut cmd: Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0);
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    // Keep draining stdout so the server never writes to a closed pipe.
    std::thread::spawn(move || for _ in std::io::BufRead::lines(out) {});
    (child, url)
}

/// Item 9: text logs escape control characters, so a session id cannot forge a line.
#[tokio::test]
async fn text_logs_escape_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve(&dir.path().join("data"), &["--log-format", "text"], "info");
    let evil = "s1\n2026-01-01T00:00:00Z  INFO forged: admin logged in\u{1b}[2J";
    let c = client();
    let mut s = step(evil, 0);
    s["kind"] = json!("end");
    s["outcome"] = json!("success");
    let r = post(&c, &url, &[s]).await;
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    child.wait().unwrap();
    assert!(err.contains("session closed"), "{err}");
    assert!(!err.contains('\u{1b}'), "raw ESC in the log");
    assert!(
        !err.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {err}"
    );
    assert!(err.contains("\\n2026-01-01T00:00:00Z"), "{err}");
}

/// Item 10: every error status has the JSON error body.
#[tokio::test]
async fn every_error_status_has_the_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&baseline(), &dir.path().join("data"), &[]);
    let c = client();
    let url = &server.url;
    let check = |r: reqwest::Response, status: u16| async move {
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["content-type"], "application/json", "{status}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{status}: {v}"
        );
        v
    };
    check(c.delete(format!("{url}/v1/steps")).send().await.unwrap(), 405).await;
    check(
        c.post(format!("{url}/v1/steps"))
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "deflate")
            .body("x")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    // A request line too long for the server: its answer has the JSON body too.
    let mut raw = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "GET /v1/sessions/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    )
    .unwrap();
    let mut resp = String::new();
    let _ = raw.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 414"), "{}", &resp[..resp.len().min(300)]);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
    assert_eq!(v["error"]["code"], "uri_too_long", "{v}");
    let v = check(
        c.post(format!("{url}/v1/traces"))
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("object"), "{v}");
    check(c.get(format!("{url}/nothing/here")).send().await.unwrap(), 404).await;
}

/// Item 10: a final snapshot that cannot be saved makes shutdown exit non-zero, saying so.
#[tokio::test]
async fn a_failed_final_snapshot_gives_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = spawn_serve(&data, &[], "warn");
    let c = client();
    assert_eq!(post(&c, &url, &[step("s1", 0)]).await.status(), 200);
    // Every snapshot write fails from now on (as a full or failing disk would).
    rusqlite::Connection::open(data.join("agentdrift.sqlite3"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_insert BEFORE INSERT ON snapshot BEGIN SELECT RAISE(FAIL, 'injected snapshot failure'); END;
             CREATE TRIGGER no_update BEFORE UPDATE ON snapshot BEGIN SELECT RAISE(FAIL, 'injected snapshot failure'); END;",
        )
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        !status.success(),
        "exit {status} although the final snapshot failed: {err}"
    );
    assert!(err.contains("final snapshot could not be saved"), "{err}");
}

async fn send_steps(c: &reqwest::Client, part: &[&String], url: &str) {
    for chunk in part.chunks(25) {
        let body = chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n");
        let r = c
            .post(format!("{url}/v1/steps"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// What a run scored once the store has caught up: the engine counts a session
/// closed when it applies the close, and the writer stores its events and row a
/// little later, so read until two reads half a second apart agree.
async fn scored(c: &reqwest::Client, url: &str, sessions: &[String]) -> (Vec<String>, Vec<Value>) {
    let mut last = scored_now(c, url, sessions).await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scored_now(c, url, sessions).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("what {url} scored did not settle within 20 s");
}

/// What a run has stored now: every event id, and every session (without its
/// wall-clock close time).
async fn scored_now(c: &reqwest::Client, url: &str, sessions: &[String]) -> (Vec<String>, Vec<Value>) {
    let page = get_json(c, &format!("{url}/v1/events?limit=1000")).await;
    let mut ids: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for s in sessions {
        let mut v: Value = c
            .get(format!("{url}/v1/sessions/{s}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_object_mut().unwrap().remove("closed_ms");
        out.push(v);
    }
    (ids, out)
}

async fn wait_closed(c: &reqwest::Client, url: &str, n: u64) {
    for _ in 0..300 {
        if engine_sessions(c, url).await == (n, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} sessions never closed: {:?}", engine_sessions(c, url).await);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Item 4: with `max_open_sessions` = 3 and 40 sessions open at once, the
/// longest-idle wait in the store and come back for their next step; a
/// SIGKILL after a snapshot that names saved sessions loses nothing; every
/// event id and every stored session equals a run that kept all in memory,
/// and no saved state is left once every session closed.
#[tokio::test]
async fn open_sessions_over_the_cap_wait_in_the_store_through_a_crash_and_score_the_same() {
    let c = client();
    let lines = crate::service_e2e::sessions_of(&shared().join("data/taubench/gpt-4o_airline.jsonl"));
    let sessions = &lines[..40];
    let ids: Vec<String> = sessions.iter().map(|(s, _)| s.clone()).collect();
    // Round-robin: the k-th step of every session, then the (k+1)-th.
    let longest = sessions.iter().map(|(_, l)| l.len()).max().unwrap();
    let dealt: Vec<&String> = (0..longest)
        .flat_map(|k| sessions.iter().filter_map(move |(_, l)| l.get(k)))
        .collect();
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Server::start(&baseline(), reference_dir.path(), &[]);
    send_steps(&c, &dealt, &reference.url).await;
    wait_closed(&c, &reference.url, 40).await;
    let expected = scored(&c, &reference.url, &ids).await;
    assert_eq!(expected.1.len(), 40);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentdrift.sqlite3");
    let env = [("AGENTDRIFT_MAX_OPEN_SESSIONS", "3"), ("AGENTDRIFT_SNAPSHOT_SECS", "1")];
    let server = Server::start(&baseline(), dir.path(), &env);
    let half = dealt.len() / 2;
    send_steps(&c, &dealt[..half], &server.url).await;
    // Wait for a snapshot that names saved sessions, then SIGKILL.
    let mut named = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let conn = rusqlite::Connection::open(&db).unwrap();
        named = conn
            .query_row("SELECT COUNT(*) FROM session_states", [], |r| r.get::<_, i64>(0))
            .unwrap();
        let m = c
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if named > 3 && metric(&m, "agentdrift_sessions_evicted") > 0.0 {
            assert!(metric(&m, "agentdrift_sessions_saved") >= 30.0, "{m}");
            break;
        }
    }
    assert!(named > 3, "saved session rows: {named}");
    server.kill();
    let server = Server::start(&baseline(), dir.path(), &env);
    send_steps(&c, &dealt[half..], &server.url).await;
    wait_closed(&c, &server.url, 40).await;
    let m = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&m, "agentdrift_sessions_restored") > 0.0, "{m}");
    assert_eq!(metric(&m, "agentdrift_session_store_failures"), 0.0);
    assert_eq!(scored(&c, &server.url, &ids).await, expected);
    server.terminate();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM session_states", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "closed sessions leave no saved state");
}

/// Item 10: a full disk answers 507 `disk_full` naming the file, loses nothing it
/// acknowledged, keeps serving reads, and ingest resumes by itself once space returns.
/// The data directory is on an 8 MiB tmpfs of its own, mounted in a private mount
/// namespace (`unshare -r -m`), so a real filesystem fills without touching the machine's.
#[tokio::test]
async fn a_full_disk_answers_507_loses_nothing_acknowledged_and_ingest_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let data = fs.join("data");
    let filler = fs.join("filler");
    let probe = Command::new("unshare")
        .args(["-r", "-m", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        probe,
        "this test needs `unshare` (util-linux) and mount namespaces: install util-linux, \
         or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    );
    // Mount the tmpfs, take 5 MiB of it with a filler file (freed later to give space back),
    // then become the server, which fills the other 3 MiB. The filler is larger than all the
    // server can have written: once it is freed, copying the WAL's backlog into the database
    // (which the full disk held back, and which runs as soon as there is room) cannot take
    // all the space returned before the next batch arrives.
    let script =
        r#"mount -t tmpfs -o size=8m tmpfs "$1" && head -c 5242880 /dev/zero > "$1/filler" && shift && exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-r", "-m", "sh", "-c", script, "sh"])
        .arg(&fs)
        .arg(bin())
        .arg("serve")
        .args(serve_args(baseline().to_str().unwrap(), data.to_str().unwrap()))
        .env("RUST_LOG", "warn");
    let (child, url) = spawn_listening(cmd);
    // Killed however the test ends (a failed assertion included).
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Killed(child);
    let c = client();
    let text = "x".repeat(4_000);
    let batch = |b: u64| -> Vec<Value> {
        (0..50)
            .map(|i| {
                let mut s = step("full-disk", b * 50 + i);
                s["text"] = json!(text);
                s
            })
            .collect()
    };
    // Fill it: every acknowledged batch must be there at the end, and the first refusal is 507.
    let mut acked = 0u64;
    let mut b = 0u64;
    let refusal = loop {
        assert!(b < 200, "3 MiB never filled after {b} batches of 200 KB");
        let r = post(&c, &url, &batch(b)).await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        match status {
            200 => acked += body["accepted"].as_u64().unwrap(),
            507 => break body,
            other => panic!("expected 200 or 507 while the disk fills, got {other}: {body}"),
        }
        b += 1;
    };
    assert!(acked > 0, "the first batch should have fitted");
    assert_eq!(refusal["error"]["code"], "disk_full", "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("disk is full") && message.contains(data.join("agentdrift.sqlite3").to_str().unwrap()),
        "the message should say the disk is full and name the file: {message}"
    );
    assert_eq!(message.matches("the disk is full").count(), 1, "said once: {message}");
    // Still serving while full: health and reads answer.
    assert_eq!(c.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{url}/v1/sessions")).send().await.unwrap().status(), 200);
    // Give space back (the filler lives in the server's mount namespace: reach it through
    // its /proc root) and the very next batch is stored, with no restart.
    let inside = PathBuf::from(format!("/proc/{}/root", child.0.id())).join(filler.strip_prefix("/").unwrap());
    std::fs::remove_file(&inside).unwrap_or_else(|e| panic!("cannot free {}: {e}", inside.display()));
    let r = post(&c, &url, &batch(b)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "ingest should resume once space returns: {body}");
    acked += body["accepted"].as_u64().unwrap();
    // Nothing acknowledged was lost: the session replays every acknowledged step.
    let replay = get_json(&c, &format!("{url}/v1/sessions/full-disk/replay")).await;
    assert_eq!(
        replay["steps"].as_array().unwrap().len() as u64,
        acked,
        "acknowledged steps lost"
    );
}
