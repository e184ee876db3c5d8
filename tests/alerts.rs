//! Issue 16, alert delivery: the real binary delivers drift events to a real
//! Alertmanager, a webhook and a Slack-format receiver; receivers that were
//! down catch up with every event exactly once, across a restart.

use crate::service_e2e::{Server, get_json, looping_session, metric, post_text};
use crate::support::{Daemon, free_port, start_daemon};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a receiver got: (path, headers, body) per request it accepted.
#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
    /// When false it answers 503 (a receiver that is up but failing).
    up: Arc<AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

async fn receive(State(inbox): State<Inbox>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !inbox.up.load(Ordering::SeqCst) {
        inbox.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    inbox.got.lock().unwrap().push((uri.path().to_string(), headers, body));
    StatusCode::OK
}

async fn serve_inbox(listener: tokio::net::TcpListener, inbox: Inbox) {
    let app = axum::Router::new().fallback(receive).with_state(inbox);
    axum::serve(listener, app).await.unwrap();
}

/// HMAC-SHA256 written from its definition (RFC 2104), independent of the `hmac` crate.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    hex_of(&outer)
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The documented severity rule (README "Alerts"), restated here to check the labels.
fn expected_severity(e: &Value) -> &'static str {
    let stat = e["statistic"].as_f64().unwrap_or(f64::NAN);
    let limit = e["limit"].as_f64().unwrap();
    let ratio = if limit != 0.0 && stat.is_finite() {
        (stat / limit).abs()
    } else {
        f64::INFINITY
    };
    let rank = |s: &str| ["info", "warning", "critical"].iter().position(|x| *x == s).unwrap();
    let mut sev = match e["p_value"].as_f64() {
        Some(p) if p <= 1e-6 => "critical",
        Some(p) if p <= 1e-3 => "warning",
        Some(_) => "info",
        None if ratio >= 2.0 => "critical",
        None if ratio >= 1.25 => "warning",
        None => "info",
    };
    if e["kind"] == "loop" && ratio >= 2.0 {
        sev = "critical";
    }
    let harm = ["bernoulli:failure", "bernoulli:escalation", "bernoulli:tool_failure"];
    if harm.contains(&e["detector"].as_str().unwrap()) && e["direction"] == "up" {
        sev = ["warning", "critical", "critical"][rank(sev)];
    }
    sev
}

/// A real Alertmanager on a free loopback port, stopped when dropped.
async fn start_alertmanager(c: &reqwest::Client) -> Daemon {
    let bin = ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "this test needs a real Alertmanager: `apt-get install prometheus-alertmanager` \
             (Debian; .ci/run installs it), or put `alertmanager` on PATH",
        );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("am.yml");
    std::fs::write(&cfg, "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n").unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    start_daemon(c, cmd, port, dir, "alertmanager").await
}

/// Event ids a receiver got, per id how many times: the webhook's `events[].event.id`.
fn webhook_ids(inbox: &Inbox, path: &str, secret: &[u8]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for (p, headers, body) in inbox.got.lock().unwrap().iter().filter(|(p, _, _)| p == path) {
        let sig = headers
            .get("x-agentdrift-signature")
            .unwrap_or_else(|| panic!("{p}: signed webhook without a signature"))
            .to_str()
            .unwrap();
        assert_eq!(
            sig,
            format!("sha256={}", hmac_sha256(secret, body)),
            "signature over the body"
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["source"], "agentdrift");
        let listed = headers["x-agentdrift-events"].to_str().unwrap().to_string();
        let mut in_body = Vec::new();
        for item in v["events"].as_array().unwrap() {
            let id = item["event"]["id"].as_str().unwrap().to_string();
            assert_eq!(item["severity"], expected_severity(&item["event"]), "{item}");
            assert_eq!(item["url"], format!("http://agentdrift.test/#/event/{id}"));
            in_body.push(id.clone());
            *ids.entry(id).or_insert(0) += 1;
        }
        assert_eq!(listed, in_body.join(","), "the dedup keys are listed in a header");
    }
    ids
}

/// Event ids in Slack messages (each event links `|event <id>>`).
fn slack_ids(inbox: &Inbox) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for (_, _, body) in inbox.got.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert!(
            v["text"].as_str().is_some_and(|t| !t.is_empty()),
            "a fallback text: {v}"
        );
        for block in v["blocks"].as_array().unwrap().iter().skip(1) {
            let text = block["text"]["text"].as_str().unwrap();
            let id = text.split("|event ").nth(1).and_then(|r| r.split('>').next()).unwrap();
            assert!(text.contains("statistic "), "the evidence: {text}");
            *ids.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    ids
}

/// Every stored event, oldest first.
async fn all_events(c: &reqwest::Client, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let q = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
        let page = get_json(c, &format!("{url}/v1/events?limit=500{q}")).await;
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn post_sessions(c: &reqwest::Client, url: &str, ids: &[&str]) {
    for id in ids {
        let r = post_text(c, url, looping_session(id).join("\n")).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// Waits until `f` holds, failing with `what` after `secs`.
async fn until<F: AsyncFnMut() -> bool>(secs: u64, what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_alertmanager_webhook_and_slack_exactly_once_even_after_an_outage_and_a_restart() {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let am = start_alertmanager(&c).await;
    // The webhook receiver is down (nothing listens on its port); Slack's answers 503.
    let hook_port = free_port();
    let hook = Inbox::default();
    hook.up.store(true, Ordering::SeqCst);
    let chat = Inbox::default();
    let chat_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chat_port = chat_listener.local_addr().unwrap().port();
    tokio::spawn(serve_inbox(chat_listener, chat.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentdrift.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[alerts]
public_url = "http://agentdrift.test"

[[alerts.sink]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "TEST_HOOK_SECRET"
group_secs = 1
max_backoff_secs = 1

[[alerts.sink]]
name = "chat"
type = "slack"
url = "http://127.0.0.1:{chat_port}/services/T0/B0/xyz"
group_secs = 1
max_group = 5
max_backoff_secs = 1

[[alerts.sink]]
name = "am"
type = "alertmanager"
url = "{am}"
group_secs = 0

[[alerts.sink]]
name = "markov-only"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/markov"
detectors = ["markov"]
group_secs = 0
max_backoff_secs = 1
"#,
            am = am.url
        ),
    )
    .unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let env = [("TEST_HOOK_SECRET", "s3cret")];
    let server = Server::start_with(&baseline, &data, &args, &env);
    let url = server.url.clone();
    post_sessions(&c, &url, &["loop-1", "loop-2", "loop-3"]).await;
    until(30, "drift events stored", async || {
        all_events(&c, &url).await.len() >= 3
    })
    .await;

    // Alertmanager got them, labelled as documented.
    let mut am_alerts: Vec<Value> = Vec::new();
    until(30, "alerts in Alertmanager", async || {
        am_alerts = get_json(&c, &format!("{}/api/v2/alerts", am.url))
            .await
            .as_array()
            .unwrap()
            .clone();
        !am_alerts.is_empty()
    })
    .await;
    let events = all_events(&c, &url).await;
    let by_labels: BTreeSet<(String, String, String)> = events
        .iter()
        .map(|e| {
            let seg = format!(
                "{}/{}",
                e["segment"]["agent"].as_str().unwrap(),
                e["segment"]["task_type"].as_str().unwrap()
            );
            (
                seg,
                e["detector"].as_str().unwrap().to_string(),
                expected_severity(e).to_string(),
            )
        })
        .collect();
    for a in &am_alerts {
        let l = &a["labels"];
        assert_eq!(l["alertname"], "AgentDrift", "{a}");
        let key = (
            l["segment"].as_str().unwrap().to_string(),
            l["detector"].as_str().unwrap().to_string(),
            l["severity"].as_str().unwrap().to_string(),
        );
        assert!(
            by_labels.contains(&key),
            "an alert matches a stored event's labels: {key:?} in {by_labels:?}"
        );
        assert_eq!(a["status"]["state"], "active", "active until endsAt: {a}");
        let id = a["annotations"]["event_id"].as_str().unwrap();
        assert!(events.iter().any(|e| e["id"] == id), "{id} is a stored event");
        assert_eq!(a["generatorURL"], format!("http://agentdrift.test/#/event/{id}"));
        assert!(a["annotations"]["description"].as_str().unwrap().contains("statistic "));
    }

    // The webhook and Slack receivers are failing: nothing is lost, the lag shows it.
    until(20, "failed attempts counted", async || {
        metric(
            &c,
            &url,
            r#"agentdrift_alerts_sent_total{sink="hook",outcome="failed"}"#,
        )
        .await
            > 0.0
            && metric(
                &c,
                &url,
                r#"agentdrift_alerts_sent_total{sink="chat",outcome="failed"}"#,
            )
            .await
                > 0.0
    })
    .await;
    assert!(metric(&c, &url, r#"agentdrift_alert_queue_lag{sink="hook"}"#).await >= 1.0);
    assert!(chat.refused.load(Ordering::SeqCst) > 0);
    assert!(hook.got.lock().unwrap().is_empty());

    // Both come back: every event arrives exactly once per sink.
    let hook_listener = tokio::net::TcpListener::bind(("127.0.0.1", hook_port)).await.unwrap();
    tokio::spawn(serve_inbox(hook_listener, hook.clone()));
    chat.up.store(true, Ordering::SeqCst);
    let stored = |evs: &[Value]| {
        evs.iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    until(60, "every event delivered to the webhook and Slack", async || {
        let want = stored(&all_events(&c, &url).await);
        let h = webhook_ids(&hook, "/hook", b"s3cret");
        let s = slack_ids(&chat);
        h.keys().cloned().collect::<BTreeSet<_>>() == want && s.keys().cloned().collect::<BTreeSet<_>>() == want
    })
    .await;
    for (sink, lag) in [("hook", "hook"), ("chat", "chat"), ("am", "am")] {
        until(10, &format!("{sink} lag back to 0"), async || {
            metric(&c, &url, &format!(r#"agentdrift_alert_queue_lag{{sink="{lag}"}}"#)).await == 0.0
        })
        .await;
    }
    let n = all_events(&c, &url).await.len() as f64;
    assert_eq!(
        metric(
            &c,
            &url,
            r#"agentdrift_alerts_sent_total{sink="hook",outcome="delivered"}"#
        )
        .await,
        n
    );
    // The filtered sink got the Markov events only and counted the others as filtered.
    let all = all_events(&c, &url).await;
    let (markov, others): (Vec<&Value>, Vec<&Value>) = all.iter().partition(|e| e["kind"] == "markov");
    until(10, "the filtered sink caught up", async || {
        metric(&c, &url, r#"agentdrift_alert_queue_lag{sink="markov-only"}"#).await == 0.0
    })
    .await;
    let got: BTreeSet<String> = hook
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == "/markov")
        .flat_map(|(_, _, b)| {
            let v: Value = serde_json::from_slice(b).unwrap();
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["event"]["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        got,
        stored(&markov.into_iter().cloned().collect::<Vec<_>>()),
        "only Markov events"
    );
    assert!(!others.is_empty());
    assert_eq!(
        metric(
            &c,
            &url,
            r#"agentdrift_alerts_sent_total{sink="markov-only",outcome="filtered"}"#
        )
        .await,
        others.len() as f64
    );
    // Grouping: Slack messages hold at most max_group = 5 events and fewer messages than events.
    let messages = chat.got.lock().unwrap().len();
    assert!(
        messages < n as usize,
        "{messages} Slack messages for {n} events: bursts are grouped"
    );

    // Slack fails again and a session's events wait for it while the service restarts; after
    // the restart each sink resumes after its cursor: nothing old is sent again, the waiting
    // events and a new session's arrive.
    chat.up.store(false, Ordering::SeqCst);
    post_sessions(&c, &url, &["loop-4"]).await;
    until(30, "the fourth session's events stored", async || {
        all_events(&c, &url).await.len() as f64 > n
    })
    .await;
    let n4 = all_events(&c, &url).await.len();
    until(20, "the webhook got them, Slack refused them", async || {
        webhook_ids(&hook, "/hook", b"s3cret").len() == n4
            && metric(&c, &url, r#"agentdrift_alert_queue_lag{sink="chat"}"#).await > 0.0
    })
    .await;
    server.terminate();
    let server = Server::start_with(&baseline, &data, &args, &env);
    let url = server.url.clone();
    chat.up.store(true, Ordering::SeqCst);
    post_sessions(&c, &url, &["loop-5"]).await;
    until(30, "the new session's events stored", async || {
        all_events(&c, &url).await.len() > n4
    })
    .await;
    until(60, "the new session's events delivered after the restart", async || {
        let want = stored(&all_events(&c, &url).await);
        webhook_ids(&hook, "/hook", b"s3cret")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
            == want
            && slack_ids(&chat).keys().cloned().collect::<BTreeSet<_>>() == want
    })
    .await;
    for (what, ids) in [
        ("webhook", webhook_ids(&hook, "/hook", b"s3cret")),
        ("slack", slack_ids(&chat)),
    ] {
        let dup: Vec<_> = ids.iter().filter(|(_, k)| **k > 1).collect();
        assert!(dup.is_empty(), "{what} got events more than once: {dup:?}");
    }
    for (_, _, body) in chat.got.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert!(v["blocks"].as_array().unwrap().len() <= 6, "header + at most 5 events");
    }
    server.terminate();
}

#[test]
fn a_bad_sink_is_refused_at_start_naming_the_sink_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentdrift.toml");
    std::fs::write(
        &config,
        "[[alerts.sink]]\nname = \"oncall\"\ntype = \"slack\"\nurl_env = \"NO_SUCH_VAR_FOR_TEST\"\n",
    )
    .unwrap();
    let out = crate::support::run([
        "serve",
        "--baseline",
        crate::support::repo()
            .join("baselines/taubench-gpt-4o-airline.adb")
            .to_str()
            .unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[alerts.sink]] oncall") && err.contains("NO_SUCH_VAR_FOR_TEST"),
        "{err}"
    );
}
