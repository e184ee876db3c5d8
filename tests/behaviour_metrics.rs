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
    let diff: Value = serde_json::from_str(&run_ok([
        "baseline",
        "diff",
        "--json",
        adb.to_str().unwrap(),
        adb.to_str().unwrap(),
    ]))
    .unwrap();
    let telecom = diff["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["a"]["task_type"] == "telecom")
        .unwrap();
    let in_diff = telecom["costs"]["cost_per_success"][0].as_f64().unwrap();
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
    // Success by conversation length (messages = user turns + model calls), from the file.
    let mut messages: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "user" || v["kind"] == "llm" {
            *messages
                .entry(v["session_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let band = |m: u64| match m {
        0..=9 => "1-9",
        10..=19 => "10-19",
        20..=49 => "20-49",
        50..=99 => "50-99",
        100..=199 => "100-199",
        _ => "200+",
    };
    let mut by_length: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (sid, ok) in &success {
        let e = by_length.entry(band(messages[sid]).to_string()).or_default();
        e.0 += u64::from(*ok);
        e.1 += 1;
    }
    assert!(by_length.len() > 1, "several length bands: {by_length:?}");
    let long = messages.values().filter(|m| **m >= 50).count();
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
    assert_eq!(
        as_map(&seg["success_by_length"]),
        by_length,
        "baseline show: success by length"
    );
    assert_eq!(seg["long_sessions"]["sessions"].as_u64(), Some(long as u64));
    assert!(
        (seg["length_shares_50_100_200_messages"][0].as_f64().unwrap() - long as f64 / success.len() as f64).abs()
            < 1e-12
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
            for (what, want) in [("success_by_intent", &by_intent), ("success_by_length", &by_length)] {
                let got: BTreeMap<String, (u64, u64)> = rep["live"][what]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, x)| {
                        let n = x["sessions"].as_u64().unwrap();
                        let ok = (x["success_rate"].as_f64().unwrap() * n as f64).round() as u64;
                        (k.clone(), (ok, n))
                    })
                    .collect();
                assert_eq!(&got, want, "live {what}");
            }
            assert_eq!(rep["live"]["long_sessions"]["sessions"].as_u64(), Some(long as u64));
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
    // A session's own report names its inferred classes and its intent.
    let sid = transferred.iter().next().unwrap();
    let one = get_json(&c, &format!("{}/v1/sessions/{sid}", server.url)).await;
    assert_eq!(one["inferred_error_classes"]["escalation"], 1, "{one}");
    assert_eq!(one["error_classes"]["escalation"], 1);
    assert_eq!(one["intent"].as_str(), Some(intent_of[sid].as_str()));
    for (intent, (ok, n)) in &by_intent {
        let m = crate::service_e2e::metric(
            &c,
            &server.url,
            &format!(
                r#"agentdrift_segment_success_by_intent_ratio{{segment="tau2bench-telecom/gpt-4.1/telecom",group="{intent}"}}"#
            ),
        )
        .await;
        assert!(
            (m - *ok as f64 / *n as f64).abs() < 1e-12,
            "{intent}: metric {m} vs {ok}/{n}"
        );
    }
    for (what, v) in [
        ("baseline", in_baseline),
        ("baseline diff", in_diff),
        ("live report", live),
        ("metric", metric),
    ] {
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

/// Failures in the shared data are classified by the documented rules
/// (`taxonomy/errors.toml`) where the producer gave no class. Every failed tool
/// step of the 582 sessions (138) is checked against a class assigned here by
/// hand from the message (the table below, read from the messages by a
/// person): the rules' precision per class is asserted and reported in
/// README. Session-level classes are checked against an independent count:
/// escalation (a transfer tool called), reasoning (a failed outcome with no
/// failed tool call, no escalation and no state error).
#[test]
fn failures_in_the_shared_data_are_classified_by_the_documented_rules() {
    use agentdrift::features::{Rules, session_features};
    use agentdrift::model::{PriceTable, Step, group_sessions};
    // Hand labels: (message fragment, class a reader gives it).
    const HAND: &[(&str, &str)] = &[
        ("does not add up", "tool_invalid_args"),
        ("user not found", "tool_invalid_args"),
        ("not available on date", "state"),
        ("gift card balance is not enough", "state"),
        ("plan with id", "tool_invalid_args"),
        ("not enough seats", "state"),
        ("order not found", "tool_invalid_args"),
        ("non-delivered order cannot be", "state"),
        ("certificate cannot be used", "tool_invalid_args"),
        ("payment method not found", "tool_invalid_args"),
        ("not found", "tool_invalid_args"),
        ("too many reservations", "state"),
        ("should match", "tool_invalid_args"),
        ("should be different", "tool_invalid_args"),
        ("not enough balance", "state"),
        ("should be the original payment method", "tool_invalid_args"),
        ("exactly one payment", "tool_invalid_args"),
        ("non-pending order cannot be", "state"),
        ("must be suspended", "state"),
        ("validation error", "tool_invalid_args"),
    ];
    let hand = |msg: &str| {
        let m = msg.to_lowercase();
        HAND.iter()
            .find(|(frag, _)| m.contains(frag))
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no hand label for {msg:?}: add one"))
    };
    let prices = PriceTable::default();
    let rules = Rules::builtin(&prices);
    let taxonomy = rules.taxonomy;
    let mut steps = Vec::new();
    for entry in std::fs::read_dir(shared().join("data/tau2bench"))
        .unwrap()
        .chain(std::fs::read_dir(shared().join("data/taubench")).unwrap())
    {
        let path = entry.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            steps.push(serde_json::from_str::<Step>(line).unwrap());
        }
    }
    // Step level: the rule's class against the hand label, per failed tool step.
    let mut confusion: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut failures = 0;
    for s in steps.iter().filter(|s| s.kind == agentdrift::model::StepKind::Tool) {
        if s.status == Some(agentdrift::model::Status::Error) {
            failures += 1;
            assert!(s.error_class.is_none(), "the shared data labels no class");
            let by_rule = taxonomy
                .classify_failure(s)
                .map_or("unclassified".to_string(), |c| c.to_string());
            *confusion
                .entry((by_rule, hand(s.error.as_deref().unwrap()).to_string()))
                .or_insert(0) += 1;
        }
    }
    assert_eq!(failures, 138, "failed tool steps in the shared data");
    let mut per_class: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for ((rule, by_hand), n) in &confusion {
        let e = per_class.entry(rule.as_str()).or_default();
        e.1 += n;
        if rule == by_hand {
            e.0 += n;
        }
    }
    eprintln!("rule class: (agreeing with the hand label, classified) {per_class:?}; confusion {confusion:?}");
    // The figures README gives.
    assert_eq!(per_class.get("tool_invalid_args"), Some(&(83, 83)));
    assert_eq!(per_class.get("state"), Some(&(55, 55)));
    assert_eq!(per_class.get("unclassified"), None, "every failure gets a class");

    // Session level, against an independent count from the steps.
    let sessions = group_sessions(steps.clone()).sessions;
    assert_eq!(sessions.len(), 582);
    let (mut esc, mut reasoning, mut inferred_esc, mut inferred_reasoning) = (0, 0, 0, 0);
    let mut state_sessions = 0;
    for sess in &sessions {
        let f = session_features(sess, &rules);
        let agent_tools = || sess.steps.iter().filter(|s| s.is_agent_tool());
        let transferred = agent_tools().any(|s| s.tool.as_deref() == Some("transfer_to_human_agents"));
        let failed_call = agent_tools().any(|s| s.status == Some(agentdrift::model::Status::Error));
        // Re-reads: the same read tool with the same arguments since the last other call.
        let mut since: Vec<(String, String)> = Vec::new();
        let mut re_reads = 0;
        for s in sess
            .steps
            .iter()
            .filter(|s| s.kind == agentdrift::model::StepKind::Tool)
        {
            if !s.is_agent_tool() {
                since.clear(); // the user changed the environment (a device tool)
                continue;
            }
            let name = s.tool.clone().unwrap_or_default();
            let key = (name.clone(), canonical(s.args.as_ref()));
            if ["get_", "find_", "list_", "search_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                if s.status != Some(agentdrift::model::Status::Error) {
                    if since.contains(&key) {
                        re_reads += 1;
                    } else {
                        since.push(key);
                    }
                }
            } else {
                since.clear();
            }
        }
        let state_failures = agent_tools()
            .filter(|s| s.status == Some(agentdrift::model::Status::Error))
            .filter(|s| hand(s.error.as_deref().unwrap()) == "state")
            .count();
        assert_eq!(
            f.inferred_error_classes.get("state").copied().unwrap_or(0) as usize,
            state_failures + re_reads,
            "{}: state = failures the environment refused + re-reads",
            sess.id
        );
        state_sessions += usize::from(state_failures + re_reads > 0);
        let failed = f.outcome == Some(agentdrift::model::Outcome::Failure);
        esc += usize::from(transferred);
        inferred_esc += usize::from(f.inferred_error_classes.contains_key("escalation"));
        let r = failed && !transferred && !failed_call && re_reads == 0;
        reasoning += usize::from(r);
        inferred_reasoning += usize::from(f.inferred_error_classes.contains_key("reasoning"));
        assert_eq!(f.inferred_error_classes.contains_key("reasoning"), r, "{}", sess.id);
    }
    eprintln!(
        "sessions: escalated {inferred_esc} (transfer called in {esc}), reasoning {inferred_reasoning} \
         (independent {reasoning}), with a state error {state_sessions}"
    );
    assert_eq!(inferred_esc, esc);
    assert_eq!(inferred_reasoning, reasoning);
}

/// JSON arguments with sorted keys, for comparing calls.
fn canonical(v: Option<&Value>) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, x)| (k, sort(x))).collect();
                serde_json::to_value(sorted).unwrap()
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            x => x.clone(),
        }
    }
    v.map_or(String::new(), |v| sort(v).to_string())
}

/// The calibration chart is planned on realistic references: in every segment
/// with 10 sessions with an outcome (all 27 trained on the shared data, where
/// confidently worded sessions are few), with the in-control failure rate of
/// confident sessions computed here independently: the confident sessions plus
/// 10 pseudo-sessions at the segment's failure rate, at the chart's guaranteed
/// (90%) upper bound.
#[test]
fn the_calibration_chart_is_planned_in_every_segment_with_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let adb = dir.path().join("all.adb");
    run_ok([
        "train",
        "--input",
        shared().join("data").to_str().unwrap(),
        "--out",
        adb.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_str(&run_ok(["baseline", "show", adb.to_str().unwrap(), "--json"])).unwrap();
    let segments = shown["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 27);
    let z90 = 1.281_551_565_544_600_4; // Φ⁻¹(0.9)
    let mut planned = 0;
    for s in segments {
        let n = |k: &str| s[k].as_f64().unwrap();
        let chart = s["charts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "bernoulli:calibration");
        if n("outcome_sessions") < 10.0 {
            assert!(chart.is_none(), "{}", s["segment"]);
            continue;
        }
        let chart = chart.unwrap_or_else(|| panic!("calibration not planned in {}", s["segment"]));
        planned += 1;
        let overall = (n("failures") + 0.5) / (n("outcome_sessions") + 1.0);
        let (x, m) = (n("confident_failures") + 10.0 * overall, n("confident_sessions") + 10.0);
        let p = (x + 0.5) / (m + 1.0);
        let bound = (p + z90 * (p * (1.0 - p) / (m + 1.0)).sqrt()).min(0.98);
        // Rounded up to the design grid 1.1^k, as for every rate chart.
        let p0 = 1.1f64.powf((bound.ln() / 1.1f64.ln() - 1e-9).ceil()).min(0.98);
        let got = chart["design"]["design"]["p0"].as_f64().unwrap();
        assert!((got - p0).abs() < 1e-12, "{}: p0 {got} vs {p0}", s["segment"]);
    }
    assert_eq!(planned, 27);
}
