//! Keeps `docs/step.schema.json` true to the [`Step`](super::Step) struct.

use super::step::{ErrorClass, MemoryOp, Outcome, Requestor, Status, Step, StepKind};
use serde_json::Value;
use std::collections::BTreeSet;

const SCHEMA: &str = include_str!("../../docs/step.schema.json");

fn full_step() -> Step {
    let mut s = Step::new("s", 0, 1, StepKind::Tool, "a");
    s.v = 1;
    s.task_type = Some("t".into());
    s.task_id = Some("t1".into());
    s.intent = Some("i".into());
    s.trace_id = Some("00".into());
    s.span_id = Some("01".into());
    s.parent_span_id = Some("02".into());
    s.depth = Some(1);
    s.correlation_id = Some("c".into());
    s.model = Some("m".into());
    s.input_tokens = Some(1);
    s.output_tokens = Some(1);
    s.cost_usd = Some(0.1);
    s.cost_computed = true;
    s.latency_ms = Some(1.0);
    s.text = Some("x".into());
    s.tool_calls_requested = Some(1);
    s.tool = Some("tool".into());
    s.args = Some(serde_json::json!({}));
    s.requestor = Some(Requestor::User);
    s.status = Some(Status::Error);
    s.error_class = Some(ErrorClass::ToolTimeout);
    s.error = Some("e".into());
    s.result_chars = Some(1);
    s.result = Some(serde_json::json!("ok"));
    s.to_agent = Some("b".into());
    s.memory_op = Some(MemoryOp::Read);
    s.outcome = Some(Outcome::Success);
    s.reward = Some(1.0);
    s.termination_reason = Some("user_stop".into());
    s.attributes = Some(serde_json::Map::new());
    s
}

#[test]
fn schema_lists_exactly_the_step_fields() {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let props: BTreeSet<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
    let mut v = serde_json::to_value(full_step()).unwrap();
    // `v` is omitted when it is the default; the schema still documents it.
    v.as_object_mut().unwrap().insert("v".into(), Value::from(1));
    let fields: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(props, fields);
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["session_id", "seq", "ts", "kind", "agent"]));
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    let kinds: Vec<&str> = schema["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for k in [
        StepKind::Llm,
        StepKind::Tool,
        StepKind::User,
        StepKind::Handoff,
        StepKind::Memory,
        StepKind::End,
    ] {
        assert!(kinds.contains(&k.as_str()));
    }
}
