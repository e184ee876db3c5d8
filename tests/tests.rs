//! One integration-test binary (ripgrep style); each module is one area.

mod support;

// `agentdrift inspect` on the real shared trajectories against the counts in their README.
mod inspect_shared;
// OTLP fixtures written by the OpenTelemetry Python SDK: both dialects, multi-agent handoffs.
mod otel;
// Arbitrary bytes into every reader: no panic, ever.
mod reader_fuzz;
// Chart designs and count tests against ../shared/reference.
mod spc_reference;
// Simulation: every chart meets its designed in-control and 1σ ARL.
mod spc_simulation;
// `agentdrift design --json` against ../shared/reference.
mod design_cli;
// Baseline training, show and diff on the shared data.
mod baseline_train;
// Real in-control data through every detector, within the false-alarm budget.
mod detect_real_data;
// Detector properties: no panic, bounded state, NaN rejected.
mod detect_properties;
// The service binary over HTTP: end to end, bad input, OTLP, crash recovery.
mod service_e2e;
// Hostile clients, bounded values, tokens, TLS, damaged stores: issue 14's regression tests.
mod hardening;
// One agent run over OTLP, batched three ways (and across restarts): the same sessions and events.
mod otlp_batching;
// Real OpenTelemetry instrumentations (openai-v2, OpenInference, Agents SDK, OpenLLMetry, LangGraph) over HTTP and gRPC.
mod otel_clients;
// Injected drifts, the evaluation table and the demo on the shared data.
mod eval_real_data;
// Claims checked against the session's sources: real sessions by hand, a contradiction through the service.
mod grounding;
// The scorer snapshot format: a golden file of this version loads and scores on; other versions are refused.
mod snapshot_golden;

// `--store postgres://…` against the real PostgreSQL: crash recovery, rows in PostgreSQL, another log refused.
mod postgres_store;

// The API in process (router().oneshot).
mod api_router;

// Every shell example in README.md, run as pasted against the shipped baselines and demo data.
mod readme_examples;
// Alert delivery to a real Alertmanager, a webhook and a Slack receiver: outages, restarts, exactly once.
mod alerts;
// The shipped Prometheus rules and Grafana dashboard against a real Prometheus scraping the service.
mod deploy_prometheus;
// The built-in console in a real browser (Debian's Chromium via playwright-core).
mod console;
// Behavioural metrics measured one way everywhere (issue 17).
mod behaviour_metrics;
