//! Real data through every detector: a baseline trained on half of one
//! model's sessions, the other half streamed as in-control traffic.
//!
//! τ-bench gpt-4o airline has four trials of each of 50 tasks: trials 0 and 2
//! train, trials 1 and 3 stream (and the reverse), so both halves have the
//! same task mix. Sessions stream in a seeded random order. With a budget of
//! one false event per `ARL0` sessions per segment, the expected number of
//! false events over the n streamed sessions is at most n/ARL0 (union bound);
//! the test asserts the observed count does not exceed the 99.7% quantile of
//! a Poisson with that mean.

use crate::support::shared;
use agentdrift::baseline::TrainConfig;
use agentdrift::baseline::train::train;
use agentdrift::cli::replay::{replay_steps, shuffle_sessions};
use agentdrift::engine::Scorer;
use agentdrift::ingest::{Format, ReadOptions, read};
use agentdrift::model::{PriceTable, Step};
use std::sync::Arc;

const ARL0: f64 = 50.0;

fn halves() -> (Vec<Step>, Vec<Step>) {
    let bytes = std::fs::read(shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
    let steps = read(Format::Ndjson, &bytes, &ReadOptions::default()).steps;
    steps.into_iter().partition(|s| {
        let trial: u32 = s.session_id.rsplit("-t").next().unwrap().parse().unwrap();
        trial.is_multiple_of(2)
    })
}

/// Poisson upper quantile: smallest k with P(N ≤ k) ≥ q.
fn poisson_quantile(mean: f64, q: f64) -> u64 {
    let (mut k, mut p, mut cdf) = (0u64, (-mean).exp(), 0.0);
    loop {
        cdf += p;
        if cdf >= q {
            return k;
        }
        k += 1;
        p *= mean / k as f64;
    }
}

#[test]
fn in_control_half_stays_within_the_false_alarm_budget() {
    let (a, b) = halves();
    let cfg = TrainConfig {
        arl0: ARL0,
        ..TrainConfig::default()
    };
    let mut total_events = 0u64;
    let mut total_sessions = 0u64;
    for (seed, (reference, stream)) in [(1u64, (a.clone(), b.clone())), (2, (b, a))] {
        let baseline = Arc::new(
            train(
                reference,
                Vec::new(),
                &cfg,
                &agentdrift::features::Rules::builtin(&PriceTable::default()),
            )
            .unwrap(),
        );
        let seg = baseline.segments.iter().find(|s| s.key.task_type == "airline").unwrap();
        assert!(
            seg.charts.len() >= 20,
            "every detector runs: {} charts",
            seg.charts.len()
        );
        let mut scorer = Scorer::new(baseline.clone(), PriceTable::default(), 3_600_000).unwrap();
        let r = replay_steps(&mut scorer, shuffle_sessions(stream, seed));
        total_sessions += r.closed.len() as u64;
        total_events += r.events.len() as u64;
        for e in &r.events {
            eprintln!("in-control event: {} {}", e.detector, e.message);
        }
        // Every chart of the segment saw the stream (loops and grounding have no running statistic).
        let (_, det) = scorer.detectors().find(|(s, _)| s.key == seg.key).unwrap();
        for c in seg
            .charts
            .iter()
            .filter(|c| c.family != "loop" && c.family != "grounding")
        {
            assert!(det.last.contains_key(&c.id), "{} never updated", c.id);
        }
    }
    assert_eq!(total_sessions, 140);
    let bound = poisson_quantile(total_sessions as f64 / ARL0, 0.997);
    assert_eq!(bound, 8, "Poisson(2.8) 99.7% quantile");
    assert!(
        total_events <= bound,
        "{total_events} false events over {total_sessions} in-control sessions (budget mean {})",
        total_sessions as f64 / ARL0
    );
}
