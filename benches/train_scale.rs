//! Training at scale: at least 1M synthetic-but-realistic steps, made by
//! resampling whole sessions (with new ids) from ../shared/data, written as
//! NDJSON, then trained by a child process running the same path as
//! `agentdrift train` (read, parse in parallel, features, polars
//! aggregation, designs, save). Prints steps/s and the child's peak RSS.
//!
//! Run: `cargo bench --bench train_scale` (optionally `-- STEPS`).

use agentdrift::baseline::TrainConfig;
use agentdrift::ingest::ReadOptions;
use agentdrift::ingest::files;
use agentdrift::model::{PriceTable, group_sessions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn child(path: &str) {
    let t0 = Instant::now();
    let prices = PriceTable::default();
    let (b, read) = agentdrift::baseline::train::train_files(
        &[path.into()],
        None,
        &ReadOptions::default(),
        &agentdrift::features::Rules::builtin(&prices),
        false,
        false,
        &TrainConfig::default(),
    )
    .unwrap();
    let b = b.unwrap();
    let n = read.steps;
    let out = std::env::temp_dir().join("agentdrift-train-scale.adb");
    agentdrift::baseline::save(&b, &out).unwrap();
    let total = t0.elapsed().as_secs_f64();
    println!(
        "{{\"steps\": {n}, \"sessions\": {}, \"segments\": {}, \"total_s\": {total:.3}, \"steps_per_s\": {:.0}, \"peak_rss_mib\": {:.1}}}",
        b.meta.sessions,
        b.segments.len(),
        n as f64 / total,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1]);
    }
    let target: usize = args.iter().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir =
        std::env::var("AGENTDRIFT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into());
    let loaded = files::load(
        &[format!("{dir}/data").into()],
        None,
        &ReadOptions::default(),
        &PriceTable::default(),
        true,
    )
    .unwrap();
    let sessions = group_sessions(loaded.steps).sessions;
    let mut rng = StdRng::seed_from_u64(42);
    let path = std::env::temp_dir().join("agentdrift-train-scale.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (mut steps, mut copies) = (0usize, 0usize);
    while steps < target {
        let s = &sessions[rng.random_range(0..sessions.len())];
        copies += 1;
        for st in &s.steps {
            let mut st = st.clone();
            st.session_id = format!("{}-r{copies}", st.session_id);
            serde_json::to_writer(&mut w, &st).unwrap();
            w.write_all(b"\n").unwrap();
            steps += 1;
        }
    }
    w.flush().unwrap();
    drop(w);
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "wrote {steps} steps in {copies} sessions ({:.0} MiB) to {}",
        size as f64 / 1048576.0,
        path.display()
    );
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new(me)
        .args(["--child", path.to_str().unwrap()])
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if std::env::var_os("AGENTDRIFT_KEEP_SCALE_FILE").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}
