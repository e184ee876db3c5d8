//! The shared data reads with zero errors and matches its README's counts.

use crate::support::{run_ok, shared, shared_data_files};
use serde_json::Value;

/// (file, sessions here, steps here, success rate here) from the README table.
fn readme_counts() -> Vec<(String, u64, u64, f64)> {
    let text = std::fs::read_to_string(shared().join("data/README.md")).expect("read README");
    let mut rows = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 8 || !cells[1].ends_with(".jsonl`") || !cells[2].contains("(+") {
            continue;
        }
        let first_num = |c: &str| c.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        let success: f64 = cells[6].split('/').next().unwrap().trim().parse().unwrap();
        rows.push((
            cells[1].trim_matches('`').to_string(),
            first_num(cells[2]),
            first_num(cells[3]),
            success,
        ));
    }
    rows
}

#[test]
fn every_shared_file_reads_cleanly_and_matches_the_readme() {
    let expected = readme_counts();
    let files = shared_data_files();
    assert_eq!(expected.len(), 15, "README table rows");
    assert_eq!(files.len(), expected.len(), "one README row per data file");
    for (name, sessions, steps, success) in expected {
        let path = shared().join("data").join(&name);
        let out: Value =
            serde_json::from_str(&run_ok(["inspect", "--json", "--strict", path.to_str().unwrap()])).unwrap();
        assert_eq!(out["errors"].as_array().unwrap().len(), 0, "{name}");
        let segs = out["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 1, "{name}: one agent and domain per file");
        assert_eq!(segs[0]["sessions"].as_u64().unwrap(), sessions, "{name} sessions");
        assert_eq!(segs[0]["steps"].as_u64().unwrap(), steps, "{name} steps");
        let got = segs[0]["success_rate"].as_f64().unwrap();
        // The README prints 2-3 decimals.
        assert!(
            (got - success).abs() < 0.0015,
            "{name} success rate {got} vs README {success}"
        );
    }
}

#[test]
fn all_files_at_once_total_582_sessions() {
    let mut args: Vec<String> = vec!["inspect".into(), "--json".into()];
    args.extend(shared_data_files().iter().map(|p| p.display().to_string()));
    let out: Value = serde_json::from_str(&run_ok(&args)).unwrap();
    let total: u64 = out["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessions"].as_u64().unwrap())
        .sum();
    let steps: u64 = out["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["steps"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 582);
    assert_eq!(steps, 16737);
    assert_eq!(out["duplicates"].as_u64(), Some(0));
}
