//! The compatibility matrix: real OpenTelemetry instrumentations,
//! unmodified, trace the real `openai` Python client in an agent loop with
//! tool calls (against a fake OpenAI server on loopback) and export over
//! OTLP/HTTP and gRPC in batches of two, so every conversation arrives split
//! across many requests, children before parents. Each conversation must
//! become one scored session with the right agent, its model texts, tool
//! calls with arguments and results, tokens, model, cost, user turns and an
//! outcome. The drivers write down what the conversation really did
//! (`--expect-out`), and the session is checked against that.

use crate::service_e2e::Server;
use crate::support::{python_env, repo};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const AGENT: &str = "taubench-airline/gpt-4o";
const AGENT2: &str = "tau2bench-airline/gpt-4.1";

struct Case {
    client: &'static str,
    script: &'static str,
    traceloop: bool,
    extra: &'static [&'static str],
}

const CASES: &[(Case, &[&str])] = &[
    (
        Case {
            client: "openai-v2-span",
            script: "drive_openai_v2.py",
            traceloop: false,
            extra: &["--content", "span"],
        },
        &["http", "grpc"],
    ),
    (
        Case {
            client: "openai-v2-event",
            script: "drive_openai_v2.py",
            traceloop: false,
            extra: &["--content", "event"],
        },
        &["http", "grpc"],
    ),
    (
        Case {
            client: "openinference",
            script: "drive_openinference_openai.py",
            traceloop: false,
            extra: &[],
        },
        &["http", "grpc"],
    ),
    (
        Case {
            client: "openai-agents",
            script: "drive_openai_agents.py",
            traceloop: false,
            extra: &["--agent2", AGENT2],
        },
        &["http", "grpc"],
    ),
    (
        Case {
            client: "traceloop",
            script: "drive_traceloop.py",
            traceloop: true,
            extra: &[],
        },
        &["http", "grpc"],
    ),
    (
        Case {
            client: "langgraph",
            script: "drive_langgraph.py",
            traceloop: false,
            extra: &[],
        },
        &["http"],
    ),
];

async fn json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// gpt-4o-mini's price from the shipped table, USD per token (input, output).
fn price() -> (f64, f64) {
    let text = std::fs::read_to_string(repo().join("pricing/default.toml")).unwrap();
    let table: toml::Value = toml::from_str(&text).unwrap();
    let m = &table["models"]["gpt-4o-mini"];
    let f = |k: &str| m[k].as_float().or_else(|| m[k].as_integer().map(|i| i as f64)).unwrap() / 1e6;
    (f("input_usd_per_mtok"), f("output_usd_per_mtok"))
}

/// Checks one recorded session against what its driver says happened.
fn check(name: &str, expect: &Value, report: &Value, replay: &Value) {
    let steps = replay["steps"].as_array().unwrap();
    let of = |kind: &str| -> Vec<&Value> { steps.iter().filter(|s| s["kind"] == kind).collect() };
    let ctx = || format!("{name}: {}", serde_json::to_string_pretty(steps).unwrap());
    // Scored against the baseline segment of the agent the app named.
    assert_eq!(report["scored"], true, "{name}: {report}");
    assert_eq!(report["segment"]["agent"], AGENT, "{name}");
    assert_eq!(report["segment"]["task_type"], "airline", "{name}");
    // Agents: the first model call is the first agent's; handoffs only between named agents.
    let agents: Vec<&str> = expect["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let llm = of("llm");
    assert_eq!(llm[0]["agent"], agents[0], "{}", ctx());
    assert!(
        steps.iter().all(|s| agents.contains(&s["agent"].as_str().unwrap())),
        "{}",
        ctx()
    );
    let handoffs: Vec<(String, String)> = of("handoff")
        .iter()
        .map(|h| {
            (
                h["agent"].as_str().unwrap().into(),
                h["to_agent"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want_handoffs: Vec<(String, String)> = expect["handoffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(handoffs, want_handoffs, "{}", ctx());
    // Model calls, their model, tokens and computed cost.
    assert_eq!(llm.len() as u64, expect["llm_calls"].as_u64().unwrap(), "{}", ctx());
    let model = expect["model"].as_str().unwrap();
    assert!(
        llm.iter()
            .all(|s| s["model"].as_str().is_some_and(|m| m.starts_with(model))),
        "{}",
        ctx()
    );
    let sum = |k: &str| llm.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum("input_tokens"), expect["input_tokens"].as_u64().unwrap(), "{name}");
    assert_eq!(
        sum("output_tokens"),
        expect["output_tokens"].as_u64().unwrap(),
        "{name}"
    );
    let (pin, pout) = price();
    let want_cost = sum("input_tokens") as f64 * pin + sum("output_tokens") as f64 * pout;
    let cost: f64 = llm.iter().map(|s| s["cost_usd"].as_f64().unwrap()).sum();
    assert!(llm.iter().all(|s| s["cost_computed"] == true), "{name}");
    assert!(
        (cost - want_cost).abs() < 1e-12,
        "{name}: cost {cost} against {want_cost}"
    );
    // The model's answers.
    let texts: Vec<&str> = llm.iter().filter_map(|s| s["text"].as_str()).collect();
    for t in expect["final_texts"].as_array().unwrap() {
        assert!(
            texts.contains(&t.as_str().unwrap()),
            "{name}: final text {t} missing in {texts:?}"
        );
    }
    // Tool calls with their arguments and results, in order.
    let tools: Vec<(&str, &Value, &str)> = of("tool")
        .iter()
        .map(|s| {
            (
                s["tool"].as_str().unwrap(),
                &s["args"],
                s["result"].as_str().unwrap_or("<none>"),
            )
        })
        .collect();
    let want: Vec<(&str, &Value, &str)> = expect["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                &t["arguments"],
                t["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tools, want, "{}", ctx());
    // User turns: only the new ones, not the repeated history.
    let users: Vec<&str> = of("user").iter().map(|s| s["text"].as_str().unwrap()).collect();
    let want_users: Vec<&str> = expect["user_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(users, want_users, "{}", ctx());
    // The outcome: no error on the root spans, inferred at the idle close.
    assert_eq!(report["outcome"], "success", "{name}: {report}");
    assert_eq!(report["close_reason"], "idle", "{name}");
    let f = |k: &str| {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["feature"] == k)
            .map(|x| x["value"].as_f64().unwrap())
    };
    assert_eq!(f("user_turns"), Some(want_users.len() as f64), "{name}");
    assert_eq!(f("tool_calls"), Some(want.len() as f64), "{name}");
    assert!(
        f("output_chars").is_some_and(|c| c > 0.0),
        "{name}: output length is measured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_instrumentations_give_whole_scored_sessions_over_http_and_grpc() {
    let fixtures = repo().join("fixtures/otel/compat");
    let main_py = python_env("compat-main", &fixtures.join("requirements-main.txt"));
    let traceloop_py = python_env("compat-traceloop", &fixtures.join("requirements-traceloop.txt"));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &repo().join("baselines/tau-all.adb"),
        &dir.path().join("data"),
        &[
            ("AGENTDRIFT_TRACE_SETTLE_SECS", "1"),
            ("AGENTDRIFT_IDLE_TIMEOUT_SECS", "3"),
        ],
    );
    let c = reqwest::Client::new();
    let mut runs: Vec<(String, Value)> = Vec::new();
    for (case, protocols) in CASES {
        for proto in *protocols {
            let conv = format!("compat-{}-{proto}", case.client);
            let expect_path: PathBuf = dir.path().join(format!("{conv}.json"));
            let endpoint = if *proto == "grpc" {
                &server.grpc_url
            } else {
                &server.url
            };
            let py = if case.traceloop { &traceloop_py } else { &main_py };
            let mut args: Vec<String> = vec![
                fixtures.join(case.script).display().to_string(),
                "--otlp-endpoint".into(),
                endpoint.clone(),
                "--protocol".into(),
                proto.to_string(),
                "--conversation-id".into(),
                conv.clone(),
                "--agent".into(),
                AGENT.into(),
                "--task-type".into(),
                "airline".into(),
                "--expect-out".into(),
                expect_path.display().to_string(),
            ];
            args.extend(case.extra.iter().map(|s| s.to_string()));
            let py = py.clone();
            let out = tokio::task::spawn_blocking(move || Command::new(py).args(&args).output().unwrap())
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{conv}: the driver failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expect: Value = serde_json::from_slice(&std::fs::read(&expect_path).unwrap()).unwrap();
            runs.push((conv, expect));
        }
    }
    // Every conversation closes (idle) once its traces settled.
    for (conv, expect) in &runs {
        let mut closed = false;
        for _ in 0..300 {
            let (code, r) = json(&c, &format!("{}/v1/sessions/{conv}", server.url)).await;
            if code == 200 && r["status"] == "closed" {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(closed, "{conv} never closed");
        let (_, report) = json(&c, &format!("{}/v1/sessions/{conv}", server.url)).await;
        let (_, replay) = json(&c, &format!("{}/v1/sessions/{conv}/replay", server.url)).await;
        check(conv, expect, &report, &replay);
    }
    // One session per conversation: none named after a trace, nothing unresolved.
    let (_, page) = json(&c, &format!("{}/v1/sessions?limit=1000", server.url)).await;
    let sessions = page["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), runs.len(), "{ids:?}");
    for (conv, _) in &runs {
        assert!(ids.contains(&conv.as_str()), "{conv} missing from {ids:?}");
    }
    assert!(
        sessions
            .iter()
            .all(|s| s["identity"] == "resolved" && s["scored"] == true),
        "{page}"
    );
    let (_, status) = json(&c, &format!("{}/v1/otlp/status", server.url)).await;
    assert_eq!(status["assembly"]["traces_unresolved"], 0, "{status}");
    assert_eq!(status["pending_traces"], 0, "{status}");
    server.terminate();
}
