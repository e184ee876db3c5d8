//! One recorded agent run exported over OTLP three ways — (a) in one
//! request, (b) one span per request in reverse end order, (c) in random
//! batches over several requests with a crash and a restart in between —
//! gives identical sessions, features and events.

use crate::service_e2e::{Server, sessions_of, wait_for_steps};
use crate::support::otlp::{request, session_spans};
use crate::support::repo;
use agentdrift::model::Step;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Batching {
    OneRequest,
    ReverseEndOrder,
    RandomWithRestarts,
}

/// The run: a recorded τ-bench session, and a session that loops on one
/// tool call (so an in-session event fires), both as GenAI spans.
fn runs() -> Vec<Vec<Step>> {
    let path = repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl");
    let recorded: Vec<Step> = sessions_of(&path)
        .into_iter()
        .find(|(sid, lines)| sid.ends_with("-t1") && lines.len() > 12)
        .map(|(_, lines)| lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap();
    let looping: Vec<Step> = crate::service_e2e::looping_session("loop")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    vec![recorded, looping]
}

async fn post(c: &reqwest::Client, url: &str, spans: Vec<Span>) {
    let body = request(spans, "batching-test").encode_to_vec();
    let r = c
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Steps, features and events of a session with its ids taken out.
async fn observed(c: &reqwest::Client, url: &str, sid: &str, n_steps: usize) -> (Vec<Value>, Value, Vec<Value>) {
    wait_for_steps(c, url, sid, n_steps).await;
    // The explicit outcome ends the session: wait for its report to say closed.
    let report = loop {
        let r: Value = c
            .get(format!("{url}/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == "closed" {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replay: Value = c
        .get(format!("{url}/v1/sessions/{sid}/replay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps = replay["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            for k in ["session_id", "trace_id", "span_id", "parent_span_id", "correlation_id"] {
                s.as_object_mut().unwrap().remove(k);
            }
            s
        })
        .collect();
    let events: Vec<Value> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::json!([e["detector"], e["seq"], e["statistic"], e["limit"], e["p_value"]]))
        .collect();
    (steps, report["features"].clone(), events)
}

async fn run_variant(b: Batching) -> Vec<(Vec<Value>, Value, Vec<Value>)> {
    let dir = tempfile::tempdir().unwrap();
    let baseline = repo().join("baselines/taubench-gpt-4o-airline.adb");
    let data = dir.path().join("data");
    let env = [("AGENTDRIFT_TRACE_SETTLE_SECS", "2")];
    let mut server = Server::start(&baseline, &data, &env);
    let c = reqwest::Client::new();
    let mut out = Vec::new();
    for (k, steps) in runs().iter().enumerate() {
        let sid = format!("batching-{k}");
        let spans = session_spans(steps, &sid, 100 * (b as u64 + 1) + k as u64);
        let n_spans = spans.len();
        match b {
            Batching::OneRequest => post(&c, &server.url, spans).await,
            Batching::ReverseEndOrder => {
                let mut spans = spans;
                spans.sort_by_key(|s| std::cmp::Reverse(s.end_time_unix_nano));
                for s in spans {
                    post(&c, &server.url, vec![s]).await;
                }
            }
            Batching::RandomWithRestarts => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7 + k as u64);
                let mut spans = spans;
                spans.shuffle(&mut rng);
                let mut batches = Vec::new();
                while !spans.is_empty() {
                    let n = rng.random_range(1..=7).min(spans.len());
                    batches.push(spans.drain(..n).collect::<Vec<_>>());
                }
                let half = batches.len() / 2;
                for (i, batch) in batches.into_iter().enumerate() {
                    if i == half {
                        // A crash with the trace half received, then a clean restart.
                        server.kill();
                        server = Server::start(&baseline, &data, &env);
                        server.terminate();
                        server = Server::start(&baseline, &data, &env);
                    }
                    post(&c, &server.url, batch).await;
                }
            }
        }
        let expected_steps = steps.len();
        let got = observed(&c, &server.url, &sid, expected_steps.min(n_spans)).await;
        out.push(got);
    }
    server.terminate();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_features_and_events_do_not_depend_on_batching() {
    let a = run_variant(Batching::OneRequest).await;
    // The run is not trivial: user turns, tools, a loop event, an outcome.
    let (steps, features, events) = &a[1];
    assert!(
        events.iter().any(|e| e[0].as_str().unwrap().starts_with("loop")),
        "{events:?}"
    );
    assert!(steps.iter().any(|s| s["kind"] == "user"));
    assert_eq!(steps.last().unwrap()["kind"], "end");
    assert!(features.as_array().unwrap().len() > 10);
    let (rec_steps, _, _) = &a[0];
    let kinds: std::collections::BTreeSet<&str> = rec_steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["end", "llm", "tool", "user"].into_iter().collect());
    let b = run_variant(Batching::ReverseEndOrder).await;
    assert_eq!(a, b, "one span per request in reverse end order");
    let c = run_variant(Batching::RandomWithRestarts).await;
    assert_eq!(a, c, "random batches with a crash and a restart");
}
