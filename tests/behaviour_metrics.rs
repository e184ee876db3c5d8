//! Issue 17: behavioural metrics measured the same way everywhere.

use crate::service_e2e::{Server, get_json, metric, post_text};
use crate::support::{run_ok, shared};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One cost per successful task (the total cost of all tasks over the
/// successful ones) and one escalation rate (the sessions handed to a person),
/// equal in the baseline (`baseline show`), the live segment report and
/// `/metrics`, on the same sessions, and equal to the values computed here from
/// the file's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cost_per_success_and_escalation_rate_in_the_baseline_the_live_report_and_the_metric() {
    let data = shared().join("data/tau2bench/gpt-4.1_telecom.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    // Independent: per session, its steps' cost and its end step's outcome.
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    let mut success: BTreeMap<String, bool> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let sid = v["session_id"].as_str().unwrap().to_string();
        *cost.entry(sid.clone()).or_default() += v["cost_usd"].as_f64().unwrap_or(0.0);
        if v["kind"] == "end" {
            success.insert(sid, v["outcome"] == "success");
        }
    }
    // Sessions in which the agent called the transfer tool (escalation is inferred from it).
    let transferred: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "tool" && v["tool"] == "transfer_to_human_agents" && v["requestor"] != "user")
        .map(|v| v["session_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!transferred.is_empty());
    let escalation = transferred.len() as f64 / success.len() as f64;
    let successes = success.values().filter(|s| **s).count();
    assert!(
        successes > 0 && successes < success.len(),
        "a mix of outcomes: {successes} of {}",
        success.len()
    );
    let expected = cost.values().sum::<f64>() / successes as f64;
    let failed_cost: f64 = cost.iter().filter(|(s, _)| !success[*s]).map(|(_, c)| c).sum();
    assert!(
        failed_cost > 0.0,
        "failed tasks cost something too, so the two old definitions differ"
    );

    let dir = tempfile::tempdir().unwrap();
    let adb = dir.path().join("telecom.adb");
    run_ok([
        "train",
        "--input",
        data.to_str().unwrap(),
        "--out",
        adb.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_str(&run_ok(["baseline", "show", adb.to_str().unwrap(), "--json"])).unwrap();
    let seg = shown["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"]["task_type"] == "telecom")
        .expect("the telecom segment");
    let in_baseline = seg["cost_per_success"].as_f64().unwrap();
    // Success by intent (each session's first step names it), from the file.
    let mut intent_of: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(i) = v["intent"].as_str() {
            intent_of
                .entry(v["session_id"].as_str().unwrap().to_string())
                .or_insert_with(|| i.to_string());
        }
    }
    let mut by_intent: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (sid, ok) in &success {
        let e = by_intent.entry(intent_of[sid].clone()).or_default();
        e.0 += u64::from(*ok);
        e.1 += 1;
    }
    assert!(by_intent.len() > 1, "several intents: {by_intent:?}");
    let as_map = |v: &Value| -> BTreeMap<String, (u64, u64)> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), (x[0].as_u64().unwrap(), x[1].as_u64().unwrap())))
            .collect()
    };
    assert_eq!(
        as_map(&seg["success_by_intent"]),
        by_intent,
        "baseline show: success by intent"
    );
    assert!(
        (seg["escalation_rate"].as_f64().unwrap() - escalation).abs() < 1e-12,
        "baseline escalation {} vs {} sessions of {} calling transfer_to_human_agents",
        seg["escalation_rate"],
        transferred.len(),
        success.len()
    );

    let server = Server::start(&adb, &dir.path().join("data"), &[]);
    let c = reqwest::Client::new();
    let r = post_text(&c, &server.url, text.clone()).await;
    assert_eq!(r.status(), 200);
    let report_url = format!("{}/v1/segments/tau2bench-telecom/gpt-4.1/telecom", server.url);
    let report = get_json(&c, &report_url).await;
    assert_eq!(
        as_map(&report["baseline_success_by_intent"]),
        by_intent,
        "segment report"
    );
    assert!(
        report["baseline_success_by_tool"]["transfer_to_human_agents"][1].as_u64() == Some(transferred.len() as u64)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let rep = get_json(&c, &report_url).await;
        if rep["live"]["sessions"].as_u64() == Some(success.len() as u64) {
            let live_escalation = rep["live"]["escalation_rate"].as_f64().unwrap();
            assert!(
                (live_escalation - escalation).abs() < 1e-12,
                "live escalation {live_escalation} vs {escalation}"
            );
            break rep["live"]["cost_per_success_usd"].as_f64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the sessions did not all close: {}",
            rep["live"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metric = metric(
        &c,
        &server.url,
        r#"agentdrift_segment_cost_per_success_usd{segment="tau2bench-telecom/gpt-4.1/telecom"}"#,
    )
    .await;
    for (what, v) in [("baseline", in_baseline), ("live report", live), ("metric", metric)] {
        assert!(
            (v / expected - 1.0).abs() < 1e-9,
            "{what}: {v} vs {expected} (total cost / successes)"
        );
    }
    server.terminate();
}

/// A command that prints and exits ends quietly when its reader goes away.
#[test]
fn printing_into_a_closed_pipe_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let adb = dir.path().join("all.adb");
    let data = shared().join("data");
    run_ok([
        "train",
        "--input",
        data.to_str().unwrap(),
        "--out",
        adb.to_str().unwrap(),
    ]);
    for args in [
        vec!["baseline", "show", adb.to_str().unwrap()],
        vec!["baseline", "show", adb.to_str().unwrap(), "--json"],
        vec!["inspect", data.to_str().unwrap()],
    ] {
        // `| head -c 1`: the reader takes one byte and leaves.
        let script = format!(
            "\"$0\" {} | head -c 1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
            args.join(" ")
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script, crate::support::bin().to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let code: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(
            code == 0 || code == 141,
            "{args:?}: exit {code} (0, or 141 for SIGPIPE), {stderr}"
        );
    }
}

/// A multi-agent task is one tree: native sessions sharing a correlation id
/// (the second agent's steps under the first one's handoff, not restarted at
/// depth 1) and an OTLP trace with handoffs across three agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_agent_task_is_one_tree_across_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_TRACE_SETTLE_SECS", "1")],
    );
    let c = reqwest::Client::new();
    let url = &server.url;
    let step = |sid: &str, seq: u64, ts: i64, kind: &str, agent: &str, extra: Value| {
        let mut v = serde_json::json!({"session_id": sid, "seq": seq, "ts": ts, "kind": kind, "agent": agent,
            "task_type": "support", "correlation_id": "task-42"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    let lines = [
        step(
            "triage-1",
            0,
            1000,
            "user",
            "triage",
            serde_json::json!({"text": "I was charged twice"}),
        ),
        step(
            "triage-1",
            1,
            1100,
            "llm",
            "triage",
            serde_json::json!({"model": "gpt-4.1", "input_tokens": 120, "output_tokens": 15, "cost_usd": 0.01, "latency_ms": 400.0}),
        ),
        step(
            "triage-1",
            2,
            1200,
            "handoff",
            "triage",
            serde_json::json!({"to_agent": "billing"}),
        ),
        step("triage-1", 3, 1210, "end", "triage", serde_json::json!({})),
        step(
            "billing-1",
            0,
            1300,
            "llm",
            "billing",
            serde_json::json!({"depth": 1, "model": "gpt-4.1", "input_tokens": 300, "output_tokens": 40, "cost_usd": 0.03, "latency_ms": 900.0}),
        ),
        step(
            "billing-1",
            1,
            1400,
            "tool",
            "billing",
            serde_json::json!({"depth": 2, "tool": "refund", "status": "ok", "latency_ms": 100.0}),
        ),
        step(
            "billing-1",
            2,
            1500,
            "end",
            "billing",
            serde_json::json!({"depth": 1, "outcome": "success"}),
        ),
    ];
    let r = post_text(&c, url, lines.join("\n")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let t = get_json(&c, &format!("{url}/v1/tasks/task-42")).await;
    let sessions: Vec<&str> = t["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, ["triage-1", "billing-1"]);
    assert_eq!(t["sessions"][1]["parent_session"], "triage-1");
    assert_eq!(t["sessions"][1]["parent_seq"], 2, "under the handoff step");
    let depth = |sid: &str, seq: u64| {
        t["tree"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["session_id"] == sid && n["seq"] == seq)
            .unwrap()["depth"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(depth("triage-1", 2), 0);
    assert_eq!(depth("billing-1", 0), 1, "counted from the task's root");
    assert_eq!(depth("billing-1", 1), 2);
    assert_eq!(t["total"]["input_tokens"], 420);
    assert_eq!(t["total"]["output_tokens"], 55);
    assert!((t["total"]["cost_usd"].as_f64().unwrap() - 0.04).abs() < 1e-12);
    assert_eq!(t["total"]["latency_ms"], 1400.0);
    assert_eq!(t["agents"]["billing"]["input_tokens"], 300);
    assert_eq!(t["agents"]["triage"]["steps"], 4);
    assert_eq!(t["outcome"], "success", "the session that ended last");
    assert_eq!(t["duration_ms"], 500);
    // The OTLP multi-agent fixture: one trace, three agents, two handoffs.
    let pb = std::fs::read(crate::support::repo().join("fixtures/otel/genai_multiagent.pb")).unwrap();
    let r = c
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(pb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    crate::service_e2e::wait_for_steps(&c, url, "conv-ma-1", 9).await;
    let t = get_json(&c, &format!("{url}/v1/tasks/5eed0000000000000000000000000002")).await;
    assert_eq!(t["tree"].as_array().unwrap().len(), 9);
    let agents: Vec<&String> = t["agents"].as_object().unwrap().keys().collect();
    assert_eq!(agents.len(), 3, "{agents:?}");
    assert_eq!(
        t["tree"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "handoff")
            .count(),
        2
    );
    assert!(
        t["tree"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["depth"].as_u64().unwrap() >= 2),
        "nested agents: {t}"
    );
    let missing = c.get(format!("{url}/v1/tasks/no-such-task")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.terminate();
}

/// `train` counts a step sent twice once, and says how many it skipped.
#[test]
fn train_counts_duplicate_steps_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(crate::support::repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl"))
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut messy = lines.clone();
    messy.extend(&lines[..50]);
    let input = dir.path().join("messy.jsonl");
    std::fs::write(&input, messy.join("\n")).unwrap();
    let out = dir.path().join("b.adb");
    let summary: Value = serde_json::from_str(&run_ok([
        "train",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(summary["steps"], lines.len(), "each step once");
    assert_eq!(summary["duplicate_steps"], 50);
    let text = run_ok([
        "train",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        text.contains(&format!("({} steps, 50 duplicate steps skipped)", lines.len())),
        "{text}"
    );
}
