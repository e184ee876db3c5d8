//! A coverage-free mutational fuzzer on the stable toolchain (cargo-fuzz
//! needs nightly): every reader of outside bytes — native NDJSON and
//! MessagePack, OTLP traces and logs in protobuf and JSON, the baseline file
//! and the scorer snapshot — is fed mutations of real inputs (fixtures,
//! shipped baselines, a snapshot of a scored run) and must return a value or
//! an error, never panic. A panicking input is saved under
//! `target/fuzz-crashes/`.
//!
//! Run: `cargo run --release --example fuzz -- [EXECUTIONS] [SEED]`
//! (default 10,000,000 executions over all targets, seed 1). Prints the
//! executions and crashes per target as JSON.

use agentdrift::ingest::{Format, ReadOptions, read};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Target = (&'static str, fn(&[u8]), Vec<Vec<u8>>);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn file(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn ndjson(b: &[u8]) {
    let _ = read(Format::Ndjson, b, &ReadOptions::default());
}
fn msgpack(b: &[u8]) {
    let _ = read(Format::Msgpack, b, &ReadOptions::default());
}
fn otlp_proto(b: &[u8]) {
    let _ = read(Format::OtlpProto, b, &ReadOptions::default());
}
fn otlp_json(b: &[u8]) {
    let _ = read(Format::OtlpJson, b, &ReadOptions::default());
}
fn logs_proto(b: &[u8]) {
    if let Ok(req) = agentdrift::ingest::otlp::decode_logs_proto(b) {
        let _ = agentdrift::ingest::otel::logs::read_logs(&req);
    }
}
fn logs_json(b: &[u8]) {
    if let Ok(req) = agentdrift::ingest::otlp::decode_logs_json(b) {
        let _ = agentdrift::ingest::otel::logs::read_logs(&req);
    }
}
fn baseline(b: &[u8]) {
    if let Ok(bl) = agentdrift::baseline::file::from_bytes(b, "fuzz") {
        let _ = bl.segments.len();
    }
}
fn snapshot(b: &[u8]) {
    let _ = agentdrift::service::decode_state(b);
}

/// A snapshot of a scorer that scored real sessions, as the service stores it.
fn snapshot_seed() -> Vec<u8> {
    use agentdrift::engine::pipeline::{Input, Pipeline, PipelineConfig};
    let b =
        Arc::new(agentdrift::baseline::file::from_bytes(&file("baselines/taubench-gpt-4o-airline.adb"), "b").unwrap());
    let prices = agentdrift::model::PriceTable::default();
    let scorer = agentdrift::engine::Scorer::new(b, prices.clone(), 300_000).unwrap();
    let mut p = Pipeline::new(scorer, prices, PipelineConfig::default());
    let steps = agentdrift::ingest::native::read_ndjson(&file("fixtures/sessions/taubench-gpt-4o-airline.jsonl")).steps;
    for (i, s) in steps.into_iter().take(400).enumerate() {
        p.apply(Input::Step {
            step: s,
            received_ms: 1,
            pos: i as i64,
        });
    }
    rmp_serde::to_vec_named(&p.state()).unwrap()
}

fn mutate(rng: &mut StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = b.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = [0u8, 0xff, 0x7f, 0x80, b'{', b'"', b'0', b'9', b'-', b'\n'][rng.random_range(0..10)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                b.drain(i..j);
            }
            4 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                let chunk = b[i..j].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                // Splice a piece of another input of the same target.
                let i = rng.random_range(0..other.len());
                let j = (i + rng.random_range(1..256)).min(other.len());
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, other[i..j].iter().copied());
            }
            6 if len > 0 => b.truncate(rng.random_range(0..len)),
            7 if len > 4 => {
                // Interesting integers over a varint or length field.
                let i = rng.random_range(0..len - 4);
                let v: u32 = [0, 1, 0x7f, 0x80, 0xffff, 0xffff_ffff, i32::MAX as u32][rng.random_range(0..7)];
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                if len > 0 {
                    let i = rng.random_range(0..len);
                    b[i] = rng.random();
                }
            }
        }
    }
    b
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(10_000_000);
    let seed = args.get(1).copied().unwrap_or(1);
    let ndjson_seed = file("fixtures/sessions/taubench-gpt-4o-airline.jsonl");
    let cut = |b: &[u8], n: usize| b[..b.len().min(n)].to_vec();
    let steps = agentdrift::ingest::native::read_ndjson(&cut(&ndjson_seed, 60_000)).steps;
    let msgpack_seed = rmp_serde::to_vec_named(&steps[..steps.len().min(40)]).unwrap();
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(repo().join("fixtures/otel")).unwrap().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "pb" || e == "json") {
            logs.push(std::fs::read(&p).unwrap());
        }
    }
    let proto_seeds: Vec<Vec<u8>> = ["genai_single.pb", "openinference_single.pb", "genai_multiagent.pb"]
        .iter()
        .map(|n| file(&format!("fixtures/otel/{n}")))
        .collect();
    let json_seeds: Vec<Vec<u8>> = [
        "genai_single.json",
        "openinference_single.json",
        "genai_multiagent.json",
    ]
    .iter()
    .map(|n| file(&format!("fixtures/otel/{n}")))
    .collect();
    let logs_proto_seed = {
        use prost::Message;
        let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"eventName":"gen_ai.choice","traceId":"5eed0000000000000000000000000001","spanId":"0000000000001002","body":{"kvlistValue":{"values":[{"key":"message","value":{"kvlistValue":{"values":[{"key":"content","value":{"stringValue":"hi"}}]}}}]}}},{"eventName":"gen_ai.user.message","traceId":"5eed0000000000000000000000000001","spanId":"0000000000001002","body":{"kvlistValue":{"values":[{"key":"content","value":{"stringValue":"hello"}}]}}}]}]}]}"#;
        let req = agentdrift::ingest::otlp::decode_logs_json(json).unwrap();
        (req.encode_to_vec(), json.to_vec())
    };
    let targets: Vec<Target> = vec![
        ("ndjson", ndjson, vec![cut(&ndjson_seed, 4_000)]),
        ("msgpack", msgpack, vec![msgpack_seed]),
        ("otlp_traces_proto", otlp_proto, proto_seeds),
        ("otlp_traces_json", otlp_json, json_seeds),
        ("otlp_logs_proto", logs_proto, vec![logs_proto_seed.0]),
        ("otlp_logs_json", logs_json, vec![logs_proto_seed.1]),
        (
            "baseline",
            baseline,
            vec![file("baselines/taubench-gpt-4o-airline.adb")],
        ),
        ("snapshot", snapshot, vec![snapshot_seed()]),
    ];
    let _ = logs;
    let targets = Arc::new(targets);
    std::panic::set_hook(Box::new(|_| {}));
    let crash_dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join("fuzz-crashes");
    let counts: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        (0..targets.len())
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = std::time::Instant::now();
    std::thread::scope(|sc| {
        for t in 0..threads {
            let (targets, counts, crash_dir) = (targets.clone(), counts.clone(), crash_dir.clone());
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed * 1000 + t as u64);
                let share = total / threads as u64;
                // Heavy targets (baseline, snapshot decode a large file) get fewer runs.
                for i in 0..share {
                    let k = (i as usize) % targets.len();
                    let (name, f, seeds) = &targets[k];
                    let s = &seeds[rng.random_range(0..seeds.len())];
                    let o = &seeds[rng.random_range(0..seeds.len())];
                    let input = mutate(&mut rng, s, o);
                    counts[k].0.fetch_add(1, Ordering::Relaxed);
                    if std::panic::catch_unwind(|| f(&input)).is_err() {
                        counts[k].1.fetch_add(1, Ordering::Relaxed);
                        let _ = std::fs::create_dir_all(&crash_dir);
                        let _ = std::fs::write(crash_dir.join(format!("{name}-{t}-{i}.bin")), &input);
                    }
                }
            });
        }
    });
    let mut out = serde_json::Map::new();
    for (k, (name, _, _)) in targets.iter().enumerate() {
        out.insert(
            name.to_string(),
            serde_json::json!({"executions": counts[k].0.load(Ordering::Relaxed), "crashes": counts[k].1.load(Ordering::Relaxed)}),
        );
    }
    let crashes: u64 = counts.iter().map(|c| c.1.load(Ordering::Relaxed)).sum();
    out.insert(
        "seconds".into(),
        serde_json::json!(started.elapsed().as_secs_f64().round()),
    );
    println!("{}", serde_json::Value::Object(out));
    if crashes > 0 {
        eprintln!("{crashes} crashing inputs saved under {}", crash_dir.display());
        std::process::exit(1);
    }
}
