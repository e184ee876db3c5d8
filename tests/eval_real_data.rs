//! The evaluation pipeline of README "How well does it work?" re-run on the
//! shared data with fewer random orders: split, train on one half, inject
//! every drift kind at its larger magnitude into the other half, evaluate.

use crate::support::{repo, run, run_ok, shared};
use agentdrift::inject::{ALL_KINDS, DriftKind};
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn inject_writes_each_kind_and_rejects_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl");
    for kind in ALL_KINDS.iter().filter(|k| **k != DriftKind::Tokens) {
        let out = dir.path().join(format!("{kind}.jsonl"));
        let m = kind.eval_magnitudes()[1].to_string();
        run_ok([
            "inject",
            "--input",
            input.to_str().unwrap(),
            "--drift",
            kind.as_str(),
            "--magnitude",
            &m,
            "--seed",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]);
        let text = run_ok(["inspect", "--json", out.to_str().unwrap()]);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sessions: u64 = doc["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sessions"].as_u64().unwrap())
            .sum();
        assert_eq!(sessions, 140, "{kind}: every session copied");
    }
    // τ-bench v1 has no token counts: a tokens drift would change nothing.
    let out = run([
        "inject",
        "--input",
        input.to_str().unwrap(),
        "--drift",
        "tokens",
        "--magnitude",
        "1",
        "--out",
        dir.path().join("t.jsonl").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token counts"));
    let out = run([
        "inject",
        "--input",
        input.to_str().unwrap(),
        "--drift",
        "loop",
        "--magnitude",
        "0.5",
        "--out",
        dir.path().join("l.jsonl").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("integer"), "{out:?}");
}

#[test]
fn evaluation_on_shared_data_meets_budget_and_detects_large_drifts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let data = shared().join("data");
    run_ok([
        "split",
        "--input",
        data.to_str().unwrap(),
        "--holdout-fraction",
        "0.5",
        "--seed",
        "1",
        "--reference-out",
        &p("reference.jsonl"),
        "--holdout-out",
        &p("holdout.jsonl"),
    ]);
    run_ok(["train", "--input", &p("reference.jsonl"), "--out", &p("eval.adb")]);
    let mut drifted = Vec::new();
    for kind in ALL_KINDS {
        let out = p(&format!("{kind}.jsonl"));
        let m = kind.eval_magnitudes()[1].to_string();
        run_ok([
            "inject",
            "--input",
            &p("holdout.jsonl"),
            "--drift",
            kind.as_str(),
            "--magnitude",
            &m,
            "--seed",
            "1",
            "--out",
            &out,
        ]);
        drifted.push(out);
    }
    let mut args: Vec<String> = [
        "eval",
        "--baseline",
        &p("eval.adb"),
        "--in-control",
        &p("holdout.jsonl"),
        "--trials",
        "5",
        "--json",
        "--drifted",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(drifted);
    let text = run_ok(&args);
    std::fs::write(dir.path().join("report.json"), &text).unwrap();
    let r = json(&dir.path().join("report.json"));
    let ic = &r["in_control"];
    let sessions = ic["sessions"].as_f64().unwrap();
    assert!(sessions > 250.0, "{ic}");
    // In-control: the mean events per pass must be consistent with the budget
    // (Poisson with mean sessions/arl0): P(X ≥ observed) ≥ 1%.
    let lambda = sessions / r["arl0"].as_f64().unwrap();
    let per_pass = (ic["events"].as_f64().unwrap() / ic["passes"].as_f64().unwrap()).ceil() as u64;
    let tail = 1.0
        - (0..per_pass)
            .map(|k| (-lambda).exp() * lambda.powi(k as i32) / (1..=k).map(|i| i as f64).product::<f64>())
            .sum::<f64>();
    assert!(
        tail >= 0.01,
        "in-control events per pass {per_pass} vs Poisson({lambda:.3}): tail {tail}: {ic}"
    );
    // Each drift kind at its larger magnitude: detected in ≥ 95% of orders.
    for c in r["cases"].as_array().unwrap() {
        assert!(c["detection_rate"].as_f64().unwrap() >= 0.95, "{}: {c}", c["case"]);
    }
    let loop_case = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().starts_with("loop"))
        .unwrap();
    // Contradictions: without tool result bodies in the shared data, a slip in a
    // code that mixes letters and digits (a reservation id the user or an argument
    // gave) is the one alteration a source can contradict; counted here from the
    // drifted file, every one is detected at its step and no other is.
    let drifted_text = std::fs::read_to_string(p("contradiction.jsonl")).unwrap();
    let (mut altered, mut slips) = (0, 0);
    for line in drifted_text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(a) = v["attributes"].get("agentdrift.contradiction") else {
            continue;
        };
        altered += 1;
        let from = a["from"].as_str().unwrap();
        let prefix = from.trim_end_matches(|c: char| c.is_ascii_digit());
        let code = from.chars().any(|c| c.is_ascii_digit()) && from.chars().any(|c| c.is_ascii_alphabetic());
        let numbered = prefix.len() < from.len() && !prefix.chars().any(|c| c.is_ascii_digit());
        if a["kind"] == "id" && code && !numbered && from.len() >= 4 {
            slips += 1;
        }
    }
    let case = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().starts_with("contradiction"))
        .unwrap();
    assert!(
        altered > 200,
        "most held-out sessions have a supported claim to alter: {altered}"
    );
    assert_eq!(case["changed_sessions"].as_u64(), Some(altered), "{case}");
    assert_eq!(case["in_session"]["detected"].as_u64(), Some(slips), "{case}");
    assert_eq!(
        case["in_session"]["delay_steps_median"].as_f64(),
        Some(1.0),
        "flagged at the altered output"
    );
    assert_eq!(
        ic["grounding_flagged_sessions"].as_u64(),
        Some(0),
        "unaltered sessions: {ic}"
    );
    let by_kind = case["by_claim_kind"].as_object().unwrap();
    let total: u64 = by_kind.values().map(|k| k["altered"].as_u64().unwrap()).sum();
    assert_eq!(total, altered);
    assert_eq!(by_kind["id"]["detected"].as_u64(), Some(slips), "{by_kind:?}");
    let others: u64 = by_kind
        .iter()
        .filter(|(k, _)| *k != "id")
        .map(|(_, v)| v["detected"].as_u64().unwrap())
        .sum();
    assert_eq!(
        others, 0,
        "no keyed or status source without result bodies: {by_kind:?}"
    );
    // In-session: 21 identical calls cross the loop threshold where the reference
    // calibrates it below that (README states the share); at least a third here.
    assert!(
        loop_case["in_session"]["detection_rate"].as_f64().unwrap() >= 0.33,
        "{loop_case}"
    );
}

#[test]
fn demo_runs_end_to_end_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok([
        "demo",
        "--exit",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("trained a baseline"), "{out}");
    assert!(out.contains("× loop:"), "the loop drift raises loop events:\n{out}");
    assert!(out.contains("/v1/sessions/"), "{out}");
    assert!(dir.path().join("baseline.adb").is_file());
}
