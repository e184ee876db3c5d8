//! Issue 17: behavioural metrics measured the same way everywhere.

use crate::service_e2e::{Server, get_json};
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
    assert!(
        (seg["escalation_rate"].as_f64().unwrap() - escalation).abs() < 1e-12,
        "baseline escalation {} vs {} sessions of {} calling transfer_to_human_agents",
        seg["escalation_rate"],
        transferred.len(),
        success.len()
    );

    let server = Server::start(&adb, &dir.path().join("data"), &[]);
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/v1/steps", server.url))
        .header("content-type", "application/x-ndjson")
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report_url = format!("{}/v1/segments/tau2bench-telecom/gpt-4.1/telecom", server.url);
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
    let metrics = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"agentdrift_segment_cost_per_success_usd{segment="tau2bench-telecom/gpt-4.1/telecom"} "#)
        })
        .expect("the segment's cost-per-success gauge")
        .trim()
        .parse()
        .unwrap();
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
