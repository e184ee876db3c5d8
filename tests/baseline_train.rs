//! `agentdrift train`, `baseline show` and `baseline diff` on the shared data.

use crate::support::{repo, run, run_ok, shared};
use agentdrift::baseline::load;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn train(inputs: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--out".into(),
        out.display().to_string(),
        "--input".into(),
    ];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    run_ok(&args)
}

fn no_phase1(dir: &Path) -> PathBuf {
    let cfg = dir.join("agentdrift.toml");
    std::fs::write(&cfg, "[train]\nphase1_robust_z = 1e9\n").unwrap();
    cfg
}

#[test]
fn markov_counts_and_quantiles_match_an_independent_python_computation() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/baseline/independent_baseline.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = no_phase1(dir.path());
    for (segment, want) in expected.as_object().unwrap() {
        let input = shared().join("data").join(want["file"].as_str().unwrap());
        let out = dir.path().join("b.adb");
        train(
            &[input],
            &out,
            &["--config", cfg.to_str().unwrap(), "--min-sessions", "5"],
        );
        let b = load(&out).unwrap();
        let seg = b
            .segments
            .iter()
            .find(|s| &s.key.to_string() == segment)
            .unwrap_or_else(|| panic!("{segment}"));
        assert_eq!(u64::from(seg.sessions), want["sessions"].as_u64().unwrap(), "{segment}");
        // Markov counts: every cell equal, none extra.
        let k = seg.markov.states.len();
        let mut got = std::collections::BTreeMap::new();
        for c in 0..k * k {
            if seg.markov.counts[c] > 0.0 {
                got.insert(
                    format!("{}|{}", seg.markov.states[c / k], seg.markov.states[c % k]),
                    seg.markov.counts[c],
                );
            }
        }
        let want_t: std::collections::BTreeMap<String, f64> = want["transitions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        assert_eq!(got, want_t, "{segment} transitions");
        for (feature, qs) in want["quantiles"].as_object().unwrap() {
            let f = agentdrift::features::Feature::from_name(feature).unwrap();
            let fb = seg.feature(f).unwrap_or_else(|| panic!("{segment} {feature}"));
            for (g, w) in fb.quantiles.iter().zip(qs.as_array().unwrap()) {
                let w = w.as_f64().unwrap();
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    "{segment} {feature}: {:?} vs {qs}",
                    fb.quantiles
                );
            }
        }
    }
}

#[test]
fn trains_on_all_shared_data_warns_and_pools_thin_segments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.adb");
    let out_json = run_ok([
        "train",
        "--input",
        shared().join("data").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&out_json).unwrap();
    assert_eq!(summary["sessions"], 582);
    assert_eq!(summary["steps"], 16737);
    let b = load(&out).unwrap();
    // 12 task segments with ≥ 20 sessions + one pooled `*` segment per agent (15).
    assert_eq!(b.segments.len(), 27);
    assert!(
        b.meta
            .warnings
            .iter()
            .any(|w| w.contains("gpt-4.1/airline has 14 sessions") && w.contains("scored against"))
    );
    assert_eq!(b.meta.inputs.len(), 15);
    assert!(b.meta.inputs.iter().all(|i| i.sha256.len() == 64));
    for s in &b.segments {
        assert!(s.charts.len() >= 10, "{} has {} charts", s.key, s.charts.len());
        // The budget is split, never exceeded (grounding findings state the
        // reference's own rate instead of drawing from it).
        let total: f64 = s
            .charts
            .iter()
            .filter(|c| c.family != "grounding")
            .map(|c| c.rate)
            .sum();
        assert!((total - 1.0 / b.meta.config.arl0).abs() < 1e-12, "{}: {total}", s.key);
    }
    let show: Value = serde_json::from_str(&run_ok(["baseline", "show", "--json", out.to_str().unwrap()])).unwrap();
    assert_eq!(show["segments"].as_array().unwrap().len(), 27);
    let text = run_ok(["baseline", "show", out.to_str().unwrap()]);
    assert!(text.contains("top transitions") && text.contains("ewma:steps"));
}

#[test]
fn shipped_baselines_load() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("baselines")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "adb") {
            let b = load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!b.segments.is_empty());
            agentdrift::engine::Scorer::new(std::sync::Arc::new(b), Default::default(), 1000)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "baselines/ ships at least one example");
}

#[test]
fn diff_of_two_models_finds_tool_preference_changes() {
    // The same telecom tasks before and after fine-tuning (shared data README).
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.adb");
    let b = dir.path().join("b.adb");
    train(&[shared().join("data/tau2bench/gpt-4.1_telecom.jsonl")], &a, &[]);
    train(&[shared().join("data/tau2bench/gpt-4.1-sft_telecom.jsonl")], &b, &[]);
    let d: Value = serde_json::from_str(&run_ok([
        "baseline",
        "diff",
        "--json",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]))
    .unwrap();
    let pair = &d["pairs"][0];
    assert_eq!(pair["a"]["task_type"], "telecom");
    let items = pair["items"].as_array().unwrap();
    let tools: Vec<&Value> = items.iter().filter(|i| i["kind"] == "tool").collect();
    assert!(tools.len() >= 5, "tool shares are compared one by one");
    let moved: Vec<&&Value> = tools.iter().filter(|i| i["significant"] == true).collect();
    assert!(
        !moved.is_empty(),
        "a tool preference moved after fine-tuning: {tools:?}"
    );
    for t in &moved {
        assert!(t["p_adjusted"].as_f64().unwrap() < 0.01);
        assert_ne!(t["a"], t["b"]);
    }
    // Grounding features are their own Holm family (step-down, computed here).
    let g = pair["grounding"].as_array().unwrap();
    let names: Vec<&str> = g.iter().map(|i| i["what"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"claims") && names.contains(&"unsupported_claim_share"),
        "{names:?}"
    );
    assert!(
        items.iter().all(|i| !names.contains(&i["what"].as_str().unwrap())),
        "not in the behaviour family"
    );
    let mut ps: Vec<f64> = g.iter().map(|i| i["p_value"].as_f64().unwrap()).collect();
    ps.sort_by(f64::total_cmp);
    let m = ps.len();
    let mut running: f64 = 0.0;
    let holm: Vec<f64> = ps
        .iter()
        .enumerate()
        .map(|(k, p)| {
            running = running.max(((m - k) as f64 * p).min(1.0));
            running
        })
        .collect();
    for i in g {
        let k = ps.iter().position(|p| *p == i["p_value"].as_f64().unwrap()).unwrap();
        assert!((i["p_adjusted"].as_f64().unwrap() - holm[k]).abs() < 1e-12, "{i}");
    }
    let mix = pair["overall"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["what"] == "tool mix")
        .unwrap();
    assert_eq!(mix["significant"], true, "{mix}");
    let text = run_ok(["baseline", "diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        text.contains("significant at α = 0.01") && text.contains("get_details_by_id"),
        "{text}"
    );
}

#[test]
fn diff_of_two_halves_of_one_model_finds_nothing_at_one_percent() {
    // τ-bench gpt-4o airline: trials 0 and 2 against trials 1 and 3 of the same 50 tasks.
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
    let (mut h02, mut h13) = (String::new(), String::new());
    for line in src.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let trial = v["session_id"]
            .as_str()
            .unwrap()
            .rsplit("-t")
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap();
        let half = if trial % 2 == 0 { &mut h02 } else { &mut h13 };
        half.push_str(line);
        half.push('\n');
    }
    let (fa, fb) = (dir.path().join("t02.jsonl"), dir.path().join("t13.jsonl"));
    std::fs::write(&fa, h02).unwrap();
    std::fs::write(&fb, h13).unwrap();
    let (a, b) = (dir.path().join("a.adb"), dir.path().join("b.adb"));
    train(&[fa], &a, &[]);
    train(&[fb], &b, &[]);
    let d: Value = serde_json::from_str(&run_ok([
        "baseline",
        "diff",
        "--json",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]))
    .unwrap();
    let pair = &d["pairs"][0];
    assert!(pair["items"].as_array().unwrap().len() > 30, "many items were tested");
    for it in pair["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pair["overall"].as_array().unwrap())
    {
        assert_eq!(it["significant"], false, "{it}");
    }
}

#[test]
fn bad_training_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.adb");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let r = run([
        "train",
        "--input",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no sessions in the input"));
    let r = run([
        "train",
        "--input",
        "/nope/missing.jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nope/missing.jsonl"));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"session_id\":\"s\",\"seq\":0,\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\",\"cost_usd\":-1}\n",
    )
    .unwrap();
    let r = run([
        "train",
        "--input",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("bad.jsonl:1: field `cost_usd`") && err.contains("nothing written"),
        "{err}"
    );
    assert!(!out.exists());
    let r = run([
        "train",
        "--input",
        shared().join("data/taubench").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--arl0",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("arl0 must be at least 10"));
    let r = run(["baseline", "show", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("not an agentdrift baseline"));
}

#[test]
fn streaming_training_equals_batch_training_even_on_interleaved_input() {
    use agentdrift::baseline::TrainConfig;
    use agentdrift::baseline::train::{train, train_files};
    use agentdrift::ingest::ReadOptions;
    use agentdrift::model::PriceTable;
    let files = crate::support::shared_data_files();
    let prices = PriceTable::default();
    let cfg = TrainConfig::default();
    // A messy file: sessions interleaved round-robin, one session reversed,
    // one step duplicated, one session's step arriving after its end, and
    // big enough (> 1 MiB) to be parsed in parallel chunks.
    let mut sessions: Vec<Vec<String>> = Vec::new();
    for f in &files {
        for (_, lines) in crate::service_e2e::sessions_of(f) {
            sessions.push(lines);
        }
    }
    sessions[3].reverse();
    let dup = sessions[5][2].clone();
    sessions[5].push(dup);
    let late = sessions[7].remove(1);
    sessions[7].push(late);
    let mut messy = String::new();
    let longest = sessions.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        for s in &sessions {
            if let Some(l) = s.get(i) {
                messy.push_str(l);
                messy.push('\n');
            }
        }
    }
    assert!(messy.len() > (1 << 20));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messy.jsonl");
    std::fs::write(&path, &messy).unwrap();
    for input in [files.clone(), vec![path.clone()]] {
        let mut steps = Vec::new();
        for f in &input {
            steps.extend(agentdrift::ingest::native::read_ndjson(&std::fs::read(f).unwrap()).steps);
        }
        let batch = train(steps, Vec::new(), &cfg, &agentdrift::features::Rules::builtin(&prices)).unwrap();
        let (streamed, read) = train_files(
            &input,
            None,
            &ReadOptions::default(),
            &agentdrift::features::Rules::builtin(&prices),
            false,
            false,
            &cfg,
        )
        .unwrap();
        let streamed = streamed.unwrap();
        assert!(read.errors.is_empty());
        assert_eq!(streamed.meta.sessions, batch.meta.sessions);
        assert_eq!(streamed.meta.steps, batch.meta.steps);
        assert_eq!(streamed.segments.len(), batch.segments.len());
        for (a, b) in streamed.segments.iter().zip(&batch.segments) {
            assert_eq!(a, b, "segment {}", a.key);
        }
    }
}
