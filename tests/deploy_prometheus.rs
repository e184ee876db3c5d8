//! Issue 16, shipped Prometheus and Grafana files: a real Prometheus scrapes a
//! test instance with the shipped rules loaded; every Grafana query returns
//! data and every rule evaluates without error.

use crate::service_e2e::{Server, get_json, looping_session, post_text};
use crate::support::{Daemon, free_port, start_daemon};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// A real Prometheus scraping `target` every second with the shipped rules, stopped when dropped.
async fn start_prometheus(c: &reqwest::Client, target: &str) -> Daemon {
    let ok = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs a real Prometheus: `apt-get install prometheus` (Debian; .ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = crate::support::repo().join("deploy/prometheus/agentdrift-rules.yml");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: agentdrift\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
            rules = rules.display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    start_daemon(c, cmd, port, dir, "prometheus").await
}

async fn query(c: &reqwest::Client, prom: &str, expr: &str) -> Vec<Value> {
    let r: Value = c
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{expr}: {r}");
    r["data"]["result"].as_array().unwrap().clone()
}

/// Every PromQL expression of the dashboard, with Grafana's variables as a user's "All" would set them.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(crate::support::repo().join("deploy/grafana/agentdrift-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$segment", ".*")
                .replace("$__rate_interval", "20s");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_every_rule_evaluates_against_a_real_prometheus() {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // A sink whose receiver is never up, so the alert metrics have series too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentdrift.toml");
    std::fs::write(
        &config,
        format!(
            "[[alerts.sink]]\nname = \"nowhere\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/\"\nmax_backoff_secs = 1\n",
            free_port()
        ),
    )
    .unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start_with(
        &baseline,
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let url = server.url.clone();
    let prom = start_prometheus(&c, url.trim_start_matches("http://")).await;
    // Traffic throughout the scrapes: recorded sessions (closed, with outcomes and costs) and loops (drift events).
    let text = std::fs::read_to_string(crate::support::repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl"))
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let chunk = &lines[(round * 300) % 3600..(round * 300) % 3600 + 300];
        let mut body: Vec<String> = chunk
            .iter()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let sid = format!("{}-r{round}", v["session_id"].as_str().unwrap());
                v["session_id"] = Value::String(sid);
                // The recorded sessions carry no cost: give model calls one, so cost panels have data.
                if v["kind"] == "llm" {
                    v["cost_usd"] = serde_json::json!(0.002);
                }
                v.to_string()
            })
            .collect();
        body.extend(looping_session(&format!("loop-{round}")));
        let r = post_text(&c, &url, body.join("\n")).await;
        assert_eq!(r.status(), 200);
        round += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let up = query(&c, &prom.url, "up{job=\"agentdrift\"}").await;
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["value"][1], "1", "Prometheus scrapes the instance: {up:?}");
    // Each Grafana query answers series, and at least one finite value.
    for (title, expr) in dashboard_queries() {
        let result = query(&c, &prom.url, &expr).await;
        assert!(!result.is_empty(), "panel {title:?}: `{expr}` returned no series");
        let finite = result
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .any(f64::is_finite);
        assert!(finite, "panel {title:?}: `{expr}` returned only NaN: {result:?}");
    }
    // The segment variable's query lists the baseline's segment.
    let seg: Value = get_json(
        &c,
        &format!(
            "{}/api/v1/label/segment/values?match[]=agentdrift_chart_statistic",
            prom.url
        ),
    )
    .await;
    assert!(
        seg["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "taubench-airline/gpt-4o/airline"),
        "{seg}"
    );
    // Every shipped rule was loaded and evaluates without error on real series.
    let rules = get_json(&c, &format!("{}/api/v1/rules", prom.url)).await;
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 8, "every rule of the file is loaded");
    for r in &all {
        assert_eq!(r["health"], "ok", "rule {} evaluates: {r}", r["name"]);
        assert!(
            r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")),
            "{r}"
        );
    }
    // Drift was raised, and the rule for it is pending or firing on this instance.
    let events = query(&c, &prom.url, "ALERTS{alertname=\"AgentDriftEvents\"}").await;
    assert!(!events.is_empty(), "AgentDriftEvents fired on the loops' events");
    drop(prom);
    server.terminate();
}
