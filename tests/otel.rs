//! OTLP fixtures from the real OpenTelemetry Python SDK (fixtures/otel/make_otel_fixtures.py).

use crate::support::{repo, run, run_ok};
use agentdrift::ingest::{Format, ReadOptions, read};
use agentdrift::model::{Outcome, Status, Step, StepKind, group_sessions};

fn read_fixture(name: &str) -> agentdrift::ingest::ReadOutput {
    let path = repo().join("fixtures/otel").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read(Format::detect(&path, &bytes), &bytes, &ReadOptions::default())
}

fn without_attributes(mut steps: Vec<Step>) -> Vec<Step> {
    for s in &mut steps {
        s.attributes = None;
    }
    steps
}

#[test]
fn protobuf_and_json_encodings_read_the_same() {
    for name in ["genai_single", "openinference_single", "genai_multiagent"] {
        let pb = read_fixture(&format!("{name}.pb"));
        let js = read_fixture(&format!("{name}.json"));
        assert!(
            pb.errors.is_empty() && js.errors.is_empty(),
            "{name}: {:?} {:?}",
            pb.errors,
            js.errors
        );
        assert_eq!(pb.steps, js.steps, "{name}");
    }
}

#[test]
fn genai_and_openinference_dialects_give_the_same_steps() {
    let genai = read_fixture("genai_single.pb");
    let oi = read_fixture("openinference_single.pb");
    assert!(genai.errors.is_empty() && oi.errors.is_empty());
    // The HTTP client spans under each model call are not agent steps.
    assert_eq!(genai.ignored, 3);
    assert_eq!(oi.ignored, 3);
    assert_eq!(without_attributes(genai.steps.clone()), without_attributes(oi.steps));

    let s = &genai.steps;
    let kinds: Vec<StepKind> = s.iter().map(|s| s.kind).collect();
    use StepKind::*;
    assert_eq!(kinds, [Llm, Tool, Llm, Tool, Tool, Llm, End]);
    assert!(
        s.iter()
            .all(|x| x.session_id == "conv-001" && x.agent == "support-agent")
    );
    assert!(s.iter().all(|x| x.task_type.as_deref() == Some("airline")));
    assert_eq!(
        s.iter().map(|x| x.seq).collect::<Vec<_>>(),
        (0..7).collect::<Vec<u64>>()
    );
    assert_eq!(s[0].input_tokens, Some(1200));
    assert_eq!(s[0].output_tokens, Some(40));
    assert_eq!(s[0].model.as_deref(), Some("gpt-4o"));
    assert_eq!(s[0].text.as_deref(), Some("Let me look up your reservation."));
    assert_eq!(s[0].tool_calls_requested, Some(1));
    assert_eq!(s[0].latency_ms, Some(1000.0));
    assert_eq!(s[0].depth, Some(1));
    assert_eq!(s[1].tool.as_deref(), Some("get_reservation_details"));
    assert_eq!(s[1].args, Some(serde_json::json!({"reservation_id": "ABC123"})));
    assert_eq!(s[1].status, Some(Status::Ok));
    assert_eq!(s[3].status, Some(Status::Error));
    assert_eq!(s[3].error_class.as_ref().map(|c| c.as_str()), Some("tool_timeout"));
    assert_eq!(s[3].error.as_deref(), Some("tool call timed out after 500 ms"));
    assert_eq!(s[6].outcome, Some(Outcome::Success));
    assert_eq!(s[6].reward, Some(1.0));
    // Tokens but no cost in the source: cost is absent here; the CLI computes it (marked).
    assert_eq!(s[0].cost_usd, None);
}

#[test]
fn multi_agent_trace_rebuilds_as_one_session_tree_with_two_handoffs() {
    let out = read_fixture("genai_multiagent.pb");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let grouped = group_sessions(out.steps);
    assert_eq!(grouped.sessions.len(), 1);
    let session = &grouped.sessions[0];
    assert_eq!(session.id, "conv-ma-1");
    let handoffs: Vec<(&str, &str)> = session
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Handoff)
        .map(|s| (s.agent.as_str(), s.to_agent.as_deref().unwrap()))
        .collect();
    assert_eq!(
        handoffs,
        [("triage-agent", "booking-agent"), ("booking-agent", "payment-agent")]
    );
    let agents: Vec<(&str, StepKind)> = session.steps.iter().map(|s| (s.agent.as_str(), s.kind)).collect();
    use StepKind::*;
    assert_eq!(
        agents,
        [
            ("triage-agent", Llm),
            ("triage-agent", Handoff),
            ("booking-agent", Llm),
            ("booking-agent", Tool),
            ("booking-agent", Handoff),
            ("payment-agent", Llm),
            ("payment-agent", Tool),
            ("booking-agent", Llm),
            ("triage-agent", End),
        ]
    );
    // The span tree is kept: nesting depth grows with each sub-agent.
    let depths: Vec<Option<u32>> = session.steps.iter().map(|s| s.depth).collect();
    assert_eq!(
        depths[..8],
        [Some(1), Some(1), Some(2), Some(2), Some(2), Some(3), Some(3), Some(2)]
    );
    assert!(
        session
            .steps
            .iter()
            .all(|s| s.correlation_id == session.steps[0].correlation_id)
    );
    assert_eq!(session.segment().task_type, "booking");
}

#[test]
fn cli_inspects_otlp_and_computes_missing_costs() {
    let path = repo().join("fixtures/otel/genai_single.pb");
    let out: serde_json::Value = serde_json::from_str(&run_ok(["inspect", "--json", path.to_str().unwrap()])).unwrap();
    assert_eq!(out["costs_computed"], 3);
    assert_eq!(out["ignored"], 3);
    let seg = &out["segments"][0];
    assert_eq!(seg["agent"], "support-agent");
    // 4600 input and 190 output tokens of gpt-4o at 2.50/10.00 USD per 1M tokens.
    let cost = seg["median_cost_usd"].as_f64().unwrap();
    assert!((cost - (4600.0 * 2.5 + 190.0 * 10.0) / 1e6).abs() < 1e-12, "{cost}");
}

#[test]
fn cli_reports_bad_records_with_file_and_line_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"session_id\":\"s\",\"seq\":0,\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\"}\n{\"session_id\":\"s\",\"seq\":1,\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\",\"output_tokens\":\"many\"}\n",
    )
    .unwrap();
    let out = run(["inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:2: field `output_tokens`"), "{err}");
    assert!(err.contains("1 bad records"), "{err}");
    let strict = run(["inspect", "--strict", path.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("line 2"));
    let missing = run(["inspect", "/nonexistent/file.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/file.jsonl"));
}
