//! Issue 18, grounding: claims checked against the session's own sources, on
//! the real shared sessions (hand-counted, flag rates by outcome) and through
//! the service (a contradiction raises a `grounding` event with both sides).

use crate::service_e2e::{Server, get_json, post_text};
use crate::support::{repo, run_ok, shared};
use agentdrift::features::{Feature, Rules, session_features};
use agentdrift::model::{Outcome, PriceTable, Step, group_sessions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn shared_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for dir in ["data/tau2bench", "data/taubench"] {
        let mut files: Vec<_> = std::fs::read_dir(shared().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                steps.push(serde_json::from_str::<Step>(line).unwrap());
            }
        }
    }
    steps
}

/// One real session counted by hand, and the flag rates of every shared
/// session by outcome. The shared data has no tool result bodies (only their
/// length), so sources are user messages, tool arguments and error texts: most
/// claims about flights and prices are unsupported (they came from results we
/// cannot see) and none may be called contradicted.
#[test]
fn real_sessions_claims_by_hand_and_flag_rates_by_outcome() {
    let prices = PriceTable::default();
    let rules = Rules::builtin(&prices);
    let grouped = group_sessions(shared_steps());
    // Hand count, taubench-airline-gpt-4o-00041-t0: step 5 states 3RK2T9 (the user
    // gave it), anya_garcia_5901 (the user gave it), HAT214, 2024-05-19, HAT009,
    // 2024-05-20, 1992-11-12, 1989-12-13, gift_card_2550356, $280 (from the unseen
    // reservation details); step 7 "24 hours" (the user said 10). 11 claims, 2 supported.
    let s = grouped
        .sessions
        .iter()
        .find(|s| s.id == "taubench-airline-gpt-4o-00041-t0")
        .unwrap();
    let f = session_features(s, &rules);
    assert_eq!(f.get(Feature::Claims), Some(11.0));
    assert_eq!(f.get(Feature::UnsupportedClaimShare), Some(9.0 / 11.0));
    assert_eq!(f.get(Feature::Contradictions), Some(0.0));

    let mut by_outcome: BTreeMap<&str, (u32, u32, f64, u32)> = BTreeMap::new();
    for s in &grouped.sessions {
        let f = session_features(s, &rules);
        let key = match f.outcome {
            Some(Outcome::Success) => "success",
            Some(_) => "failure",
            None => "unknown",
        };
        let e = by_outcome.entry(key).or_default();
        e.0 += 1;
        e.1 += u32::from(f.get(Feature::Contradictions).unwrap_or(0.0) > 0.0);
        if let Some(u) = f.get(Feature::UnsupportedClaimShare) {
            e.2 += u;
            e.3 += 1;
        }
    }
    for (k, (n, flagged, share, with_claims)) in &by_outcome {
        eprintln!(
            "{k}: {n} sessions, {flagged} flagged ({:.2}%), mean unsupported claim share {:.3} over {with_claims}",
            100.0 * f64::from(*flagged) / f64::from(*n),
            share / f64::from(*with_claims)
        );
    }
    let total: u32 = by_outcome.values().map(|v| v.0).sum();
    assert_eq!(total, 582, "every shared session");
    assert_eq!(by_outcome.get("unknown"), None, "every shared session has an outcome");
    for (k, (n, flagged, _, _)) in &by_outcome {
        assert_eq!(
            *flagged, 0,
            "{k}: {flagged} of {n} unaltered sessions flagged: without result bodies no rule may fire"
        );
    }
}

fn step(sid: &str, seq: u64, kind: &str, extra: Value) -> String {
    let mut v = json!({
        "session_id": sid, "seq": seq, "ts": 1_735_689_600_000i64 + 1000 * seq as i64, "kind": kind,
        "agent": "taubench-airline/gpt-4o", "task_type": "airline",
    });
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v.to_string()
}

/// A session whose final answer contradicts the tool result it read: a
/// `grounding` event per contradiction through the service, with the claim,
/// the source's words and both step ids; the session report counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contradicted_answer_raises_grounding_events_with_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let adb = dir.path().join("b.adb");
    let input = repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl");
    run_ok([
        "train",
        "--input",
        input.to_str().unwrap(),
        "--out",
        adb.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_str(&run_ok(["baseline", "show", adb.to_str().unwrap(), "--json"])).unwrap();
    let seg = &shown["segments"][0];
    assert!(
        seg["charts"].as_array().unwrap().iter().any(|c| c["id"] == "grounding"),
        "the grounding chart is planned: {}",
        seg["charts"]
    );
    let sid = "grounded-1";
    let result = json!({"reservation_id": "ZFA04Y", "status": "cancelled", "total_price": 370,
                        "flights": [{"flight_number": "HAT170", "date": "2024-05-20"}]})
    .to_string();
    let lines = [
        step(
            sid,
            0,
            "user",
            json!({"text": "Hi, what is the state of my reservation ZFA04Y?"}),
        ),
        step(
            sid,
            1,
            "llm",
            json!({"model": "gpt-4o", "text": "", "tool_calls_requested": 1}),
        ),
        step(
            sid,
            2,
            "tool",
            json!({"tool": "get_reservation_details", "args": {"reservation_id": "ZFA04Y"}, "status": "ok", "result": result}),
        ),
        step(
            sid,
            3,
            "llm",
            json!({"model": "gpt-4o", "tool_calls_requested": 0,
                   "text": "Your reservation ZFA04Y on flight HAT170 is confirmed. The total price was $340."}),
        ),
        step(sid, 4, "end", json!({"outcome": "success", "reward": 1.0})),
    ];
    let server = Server::start(&adb, &dir.path().join("data"), &[]);
    let c = reqwest::Client::new();
    let r = post_text(&c, &server.url, lines.join("\n") + "\n").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let v = get_json(&c, &format!("{}/v1/events?session={sid}", server.url)).await;
        let g: Vec<Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "grounding")
            .cloned()
            .collect();
        if g.len() >= 2 {
            break g;
        }
        assert!(Instant::now() < deadline, "no grounding events: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 2, "{events:?}");
    let by_kind = |k: &str| {
        events
            .iter()
            .find(|e| e["grounding"]["kind"] == k)
            .unwrap_or_else(|| panic!("a {k} contradiction: {events:?}"))
    };
    let status = by_kind("status");
    assert_eq!(status["detector"], "grounding:status");
    assert_eq!(status["seq"], 3);
    assert_eq!(status["grounding"]["claim_seq"], 3);
    assert_eq!(status["grounding"]["source_seq"], 2);
    assert_eq!(status["grounding"]["source_value"], "cancelled");
    assert_eq!(status["grounding"]["source"], "get_reservation_details result");
    assert!(
        status["grounding"]["excerpt"]
            .as_str()
            .unwrap()
            .contains("\"status\": \"cancelled\"")
    );
    let money = by_kind("money");
    assert_eq!(money["grounding"]["claim"], "$340");
    assert_eq!(money["grounding"]["source_value"], "370");
    assert!(money["grounding"]["rule"].as_str().unwrap().starts_with("keyed:"));
    assert!(
        money["grounding"]["excerpt"]
            .as_str()
            .unwrap()
            .contains("\"total_price\": 370")
    );
    assert!(money["message"].as_str().unwrap().contains("$340"), "{money}");
    // The event is stored whole: the same evidence by id.
    let one = get_json(
        &c,
        &format!("{}/v1/events/{}", server.url, money["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(one["grounding"], money["grounding"]);
    // The session's features: 4 claims (ZFA04Y, HAT170, $340, ZFA04Y's status), 2 contradicted.
    let report = get_json(&c, &format!("{}/v1/sessions/{sid}", server.url)).await;
    let feature = |name: &str| {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == name)
            .map(|f| f["value"].as_f64().unwrap())
    };
    assert_eq!(feature("claims"), Some(4.0), "{report}");
    assert_eq!(feature("contradictions"), Some(2.0));
    assert_eq!(feature("unsupported_claim_share"), Some(0.5));
    server.terminate();
}
