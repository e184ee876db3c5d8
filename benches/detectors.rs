//! Per-step cost of the full detector set of one segment: τ-bench gpt-4o
//! airline (24 charts, loops, Markov and tool windows) trained on its own
//! sessions, then every step of those sessions scored by a fresh scorer.
//!
//! Run: `cargo bench --bench detectors` (needs ../shared beside the checkout).

use agentdrift::baseline::TrainConfig;
use agentdrift::baseline::train::train;
use agentdrift::engine::Scorer;
use agentdrift::model::{PriceTable, Step};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

fn steps() -> Vec<Step> {
    let dir =
        std::env::var("AGENTDRIFT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into());
    let bytes =
        std::fs::read(format!("{dir}/data/taubench/gpt-4o_airline.jsonl")).expect("../shared/data beside the checkout");
    agentdrift::ingest::native::read_ndjson(&bytes).steps
}

fn bench(c: &mut Criterion) {
    let steps = steps();
    let baseline = Arc::new(
        train(
            steps.clone(),
            Vec::new(),
            &TrainConfig::default(),
            &agentdrift::features::Rules::builtin(&PriceTable::default()),
        )
        .unwrap(),
    );
    let charts: usize = baseline.segments.iter().map(|s| s.charts.len()).max().unwrap_or(0);
    eprintln!(
        "{} steps, {} sessions, {charts} charts per segment",
        steps.len(),
        baseline.meta.sessions
    );
    let mut g = c.benchmark_group("detectors");
    g.throughput(Throughput::Elements(steps.len() as u64));
    g.bench_function("score_all_steps_full_detector_set", |b| {
        b.iter_batched(
            || {
                (
                    Scorer::new(baseline.clone(), PriceTable::default(), 3_600_000).unwrap(),
                    steps.clone(),
                )
            },
            |(mut scorer, steps)| {
                let mut events = 0;
                for s in steps {
                    let now = s.ts;
                    events += scorer.ingest(s, now).events.len();
                }
                events + scorer.flush().events.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
