//! `agentdrift design --json` against ../shared/reference (the command users
//! run to choose charts, not just the library functions behind it).

use crate::support::{num, read_csv, rel, run, run_ok, shared};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

type Row = HashMap<String, String>;

fn design(args: &[String]) -> Value {
    let mut all = vec!["design".to_string()];
    all.extend(args.iter().cloned());
    all.push("--json".into());
    serde_json::from_str(&run_ok(&all)).expect("design prints one JSON object")
}

fn shifts_arg(shifts: &[f64]) -> String {
    shifts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn arl_at(doc: &Value, shift: f64) -> f64 {
    doc["arl"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| (r["shift"].as_f64().unwrap() - shift).abs() < 1e-12)
        .unwrap_or_else(|| panic!("shift {shift} in {doc}"))["arl"]
        .as_f64()
        .unwrap()
}

#[test]
fn ewma_designs_by_arl0() {
    let rows = read_csv(&shared().join("reference/ewma_arl.csv"));
    let mut designs: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        designs
            .entry((r["lambda"].clone(), r["arl0_target"].clone()))
            .or_default()
            .push(r);
    }
    for ((lambda, arl0), rs) in designs {
        let shifts: Vec<f64> = rs.iter().map(|r| num(r, "delta").unwrap()).collect();
        let doc = design(&[
            "ewma".into(),
            "--lambda".into(),
            lambda.clone(),
            "--arl0".into(),
            arl0.clone(),
            "--shifts".into(),
            shifts_arg(&shifts),
        ]);
        assert_eq!(doc["chart"], "ewma");
        assert!(
            (doc["limit"].as_f64().unwrap() - num(rs[0], "L").unwrap()).abs() < 1e-7,
            "λ={lambda}: {doc}"
        );
        for r in rs {
            let d = num(r, "delta").unwrap();
            assert!(
                rel(arl_at(&doc, d), num(r, "arl_reference").unwrap()) < 1e-6,
                "λ={lambda} δ={d}"
            );
        }
    }
}

#[test]
fn ewma_evaluates_a_given_limit() {
    // Crowder (1987) via the shared crosscheck: λ=0.5, L=2 → ARL0 26.45.
    let doc = design(&[
        "ewma".into(),
        "--lambda".into(),
        "0.5".into(),
        "--L".into(),
        "2".into(),
        "--shifts".into(),
        "0".into(),
    ]);
    assert!(rel(arl_at(&doc, 0.0), 26.45194159) < 1e-6, "{doc}");
}

#[test]
fn cusum_designs_and_evaluations() {
    let rows = read_csv(&shared().join("reference/cusum_arl.csv"));
    let mut designs: BTreeMap<(String, String, String), Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        designs
            .entry((r["k"].clone(), r["h"].clone(), r["h_source"].clone()))
            .or_default()
            .push(r);
    }
    for ((k, h, source), rs) in designs {
        let shifts: Vec<f64> = rs.iter().map(|r| num(r, "delta").unwrap()).collect();
        let mut args = vec![
            "cusum".to_string(),
            "--k".into(),
            k.clone(),
            "--shifts".into(),
            shifts_arg(&shifts),
        ];
        match source.strip_prefix("solved_arl0=") {
            Some(target) => args.extend(["--arl0".to_string(), target.to_string()]),
            None => args.extend(["--h".to_string(), h.clone()]),
        }
        let doc = design(&args);
        assert!(
            (doc["limit"].as_f64().unwrap() - h.parse::<f64>().unwrap()).abs() < 1e-7,
            "k={k}: {doc}"
        );
        for r in rs {
            let d = num(r, "delta").unwrap();
            assert!(
                rel(arl_at(&doc, d), num(r, "arl2_reference").unwrap()) < 1e-6,
                "k={k} h={h} δ={d}"
            );
        }
    }
}

#[test]
fn shewhart_run_rules() {
    let rows = read_csv(&shared().join("reference/shewhart_we_arl_exact.csv"));
    let mut by_rules: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_rules.entry(r["rules"].clone()).or_default().push(r);
    }
    for (rules, rs) in by_rules {
        let shifts: Vec<f64> = rs.iter().map(|r| num(r, "delta").unwrap()).collect();
        let doc = design(&[
            "shewhart".into(),
            "--rules".into(),
            rules.replace('+', ","),
            "--shifts".into(),
            shifts_arg(&shifts),
        ]);
        for r in rs {
            let d = num(r, "delta").unwrap();
            assert!(
                rel(arl_at(&doc, d), num(r, "arl_exact_markov").unwrap()) < 1e-7,
                "{rules} δ={d}"
            );
        }
    }
    // Designing by ARL0 hits the target.
    let doc = design(&[
        "shewhart".into(),
        "--rules".into(),
        "1,2,3,4".into(),
        "--arl0".into(),
        "1000".into(),
        "--shifts".into(),
        "0".into(),
    ]);
    assert!(rel(arl_at(&doc, 0.0), 1000.0) < 1e-8, "{doc}");
}

#[test]
fn hotelling_limits() {
    for r in read_csv(&shared().join("reference/hotelling_t2_ucl.csv")) {
        let mut args = vec![
            "t2".to_string(),
            "--p".into(),
            r["p"].clone(),
            "--alpha".into(),
            r["alpha"].clone(),
        ];
        match r["case"].as_str() {
            "known" => {}
            "estimated_phase2" => args.extend(["--m".to_string(), r["m"].clone()]),
            _ => args.extend(["--m".to_string(), r["m"].clone(), "--phase".into(), "1".into()]),
        }
        let doc = design(&args);
        assert!(
            rel(doc["limit"].as_f64().unwrap(), num(&r, "ucl").unwrap()) < 1e-8,
            "{r:?}: {doc}"
        );
    }
}

#[test]
fn bad_design_arguments_are_clear_errors() {
    let out = run(["design", "ewma", "--lambda", "1.5", "--arl0", "370"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lambda must be in"));
    let out = run(["design", "shewhart", "--rules", "1,5"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown run rule `5`"));
    let out = run(["design", "t2", "--p", "5", "--m", "4", "--arl0", "100"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("too few"));
}
