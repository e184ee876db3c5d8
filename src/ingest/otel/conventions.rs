//! Every attribute name agentdrift reads from OpenTelemetry GenAI,
//! OpenInference and OpenLLMetry, in one table, each list in order of
//! preference (the first present wins). README "OpenTelemetry mapping"
//! documents the same table.

/// The session a span belongs to.
pub const SESSION: &[&str] = &[
    "session.id",
    "gen_ai.conversation.id",
    "traceloop.association.properties.session_id",
];

/// The agent a span names (agent spans, and GenAI spans that carry their agent).
pub const AGENT_NAME: &[&str] = &["gen_ai.agent.name", "agent.name"];

/// Operation names (GenAI `gen_ai.operation.name`) of model calls.
pub const LLM_OPERATIONS: &[&str] = &["chat", "generate_content", "text_completion", "completion", "responses"];

/// The model that answered, response model first.
pub const MODEL: &[&str] = &[
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "llm.response.model_name",
    "llm.request.model_name",
];

/// Prompt tokens.
pub const INPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
];

/// Completion tokens.
pub const OUTPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
];

/// Cost in USD given by the source.
pub const COST: &[&str] = &["llm.cost.total", "gen_ai.usage.cost"];

/// Structured output messages (GenAI JSON).
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// Structured input messages (GenAI JSON).
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// OpenInference flattened output messages prefix.
pub const OI_OUTPUT_MESSAGES: &str = "llm.output_messages";
/// OpenInference flattened input messages prefix.
pub const OI_INPUT_MESSAGES: &str = "llm.input_messages";
/// Plain output text, when no structured messages exist.
pub const OUTPUT_TEXT: &[&str] = &["gen_ai.completion", "output.value"];
/// Why the model stopped (a list in GenAI).
pub const FINISH_REASONS: &[&str] = &["gen_ai.response.finish_reasons", "llm.finish_reason"];

/// Tool name on a tool span.
pub const TOOL_NAME: &[&str] = &[
    "gen_ai.tool.name",
    "tool.name",
    "tool_call.function.name",
    "traceloop.entity.name",
];
/// Tool call id on a tool span.
pub const TOOL_CALL_ID: &[&str] = &["gen_ai.tool.call.id", "tool_call.id", "tool.id"];
/// Tool arguments.
pub const TOOL_ARGS: &[&str] = &[
    "gen_ai.tool.call.arguments",
    "tool_call.function.arguments",
    "input.value",
    "traceloop.entity.input",
];
/// Tool result.
pub const TOOL_RESULT: &[&str] = &["gen_ai.tool.call.result", "output.value", "traceloop.entity.output"];

/// Error type of a failed span.
pub const ERROR_TYPE: &str = "error.type";

/// agentdrift's explicit outcome attribute (`success`/`failure`/`escalated`).
pub const OUTCOME: &str = "agentdrift.outcome";
/// agentdrift's explicit reward attribute.
pub const REWARD: &str = "agentdrift.reward";
/// agentdrift's explicit termination reason.
pub const TERMINATION: &str = "agentdrift.termination_reason";

/// Evaluation name (GenAI attributes and `gen_ai.evaluation.result` events).
pub const EVAL_NAME: &[&str] = &["gen_ai.evaluation.name", "evaluation.name", "annotation.name"];
/// Evaluation label.
pub const EVAL_LABEL: &[&str] = &["gen_ai.evaluation.score.label", "evaluation.label", "annotation.label"];
/// Evaluation score.
pub const EVAL_SCORE: &[&str] = &["gen_ai.evaluation.score.value", "evaluation.score", "annotation.score"];

/// GenAI log events whose content attaches to a model call.
pub const CONTENT_EVENTS: &[&str] = &[
    "gen_ai.client.inference.operation.details",
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
];
/// The GenAI evaluation event.
pub const EVALUATION_EVENT: &str = "gen_ai.evaluation.result";

/// Keys consumed into step fields; every other span attribute is kept under `attributes`.
pub const MAPPED: &[&str] = &[
    "gen_ai.operation.name",
    "openinference.span.kind",
    "traceloop.span.kind",
    "session.id",
    "gen_ai.conversation.id",
    "gen_ai.agent.name",
    "agent.name",
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "llm.response.model_name",
    "llm.request.model_name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
    "llm.cost.total",
    "gen_ai.usage.cost",
    "gen_ai.output.messages",
    "gen_ai.input.messages",
    "gen_ai.completion",
    "gen_ai.prompt",
    "output.value",
    "input.value",
    "gen_ai.tool.name",
    "tool.name",
    "tool_call.function.name",
    "gen_ai.tool.call.arguments",
    "tool_call.function.arguments",
    "gen_ai.tool.call.result",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "error.type",
    OUTCOME,
    REWARD,
    TERMINATION,
];

/// Attribute prefixes consumed into step fields (flattened message lists).
pub const MAPPED_PREFIXES: &[&str] = &[
    "llm.output_messages.",
    "llm.input_messages.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "session.",
];
