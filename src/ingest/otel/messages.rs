//! Chat messages as the three dialects carry them, normalised: GenAI's JSON
//! `gen_ai.input.messages` / `gen_ai.output.messages` (role + typed parts),
//! OpenInference's flattened `llm.input_messages.<i>.message.*` attributes,
//! and the bodies of GenAI log events (`gen_ai.user.message`, `gen_ai.choice`, …).
//!
//! Normalising once lets the assembler find user turns, requested tool
//! calls and tool results the same way whatever the instrumentation.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// Who wrote a message, so user turns and tool results can be told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgRole {
    /// System or developer instructions.
    System,
    /// The user (or a user simulator).
    User,
    /// The model.
    Assistant,
    /// A tool's result sent back to the model.
    Tool,
    /// Anything else the source named.
    Other,
}

impl MsgRole {
    /// Parses a role name of any dialect.
    pub fn parse(s: &str) -> MsgRole {
        match s.to_ascii_lowercase().as_str() {
            "system" | "developer" => MsgRole::System,
            "user" | "human" => MsgRole::User,
            "assistant" | "model" | "ai" => MsgRole::Assistant,
            "tool" | "function" | "ipython" => MsgRole::Tool,
            _ => MsgRole::Other,
        }
    }
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id that its result refers back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments (JSON-decoded when they were a JSON string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// One message, whatever dialect carried it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: MsgRole,
    /// Its text parts, joined by newlines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tool calls it requests (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool result answers (tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Why the model stopped (output messages), e.g. `stop`, `tool_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

impl Message {
    /// An empty message of a role.
    pub fn new(role: MsgRole) -> Message {
        Message {
            role,
            text: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            finish_reason: None,
        }
    }

    fn push_text(&mut self, t: &str) {
        match &mut self.text {
            Some(s) => {
                s.push('\n');
                s.push_str(t);
            }
            None => self.text = Some(t.to_string()),
        }
    }
}

/// A JSON string that holds JSON is decoded; anything else is kept as is.
pub fn decode_json_string(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

/// Text of a content value: a string, or the text parts of a list of
/// parts (`[{"type": "text", "text"|"content": ...}]`), or a result object
/// rendered as JSON.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o
                        .get("text")
                        .or_else(|| o.get("content"))
                        .and_then(Value::as_str)
                        .filter(|_| o.get("type").and_then(Value::as_str).is_none_or(|t| t.contains("text"))),
                    _ => None,
                })
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        other => Some(other.to_string()),
    }
}

/// A tool call in the OpenAI wire shape (`{id, type, function: {name, arguments}}`)
/// or GenAI's part shape (`{type: "tool_call", id, name, arguments}`).
fn tool_call_of(v: &Value) -> Option<ToolCall> {
    let o = v.as_object()?;
    let f = o.get("function").and_then(Value::as_object);
    let name = f
        .and_then(|f| f.get("name"))
        .or_else(|| o.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    let arguments = f
        .and_then(|f| f.get("arguments"))
        .or_else(|| o.get("arguments"))
        .map(decode_json_string);
    Some(ToolCall {
        id: o.get("id").and_then(Value::as_str).map(str::to_string),
        name: name.to_string(),
        arguments,
    })
}

/// Messages of a GenAI `gen_ai.input.messages` / `gen_ai.output.messages`
/// value (a JSON string or an already structured list).
pub fn from_genai(v: &Value) -> Option<Vec<Message>> {
    let decoded = decode_json_string(v);
    let list = decoded.as_array()?;
    Some(list.iter().filter_map(genai_message).collect())
}

fn genai_message(v: &Value) -> Option<Message> {
    let o = v.as_object()?;
    let mut m = Message::new(MsgRole::parse(o.get("role").and_then(Value::as_str).unwrap_or("")));
    m.finish_reason = o.get("finish_reason").and_then(Value::as_str).map(str::to_string);
    if let Some(parts) = o.get("parts").and_then(Value::as_array) {
        for p in parts {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(t) = p.get("content").or_else(|| p.get("text")).and_then(Value::as_str) {
                        m.push_text(t);
                    }
                }
                Some("tool_call") => m.tool_calls.extend(tool_call_of(p)),
                Some("tool_call_response") => {
                    m.tool_call_id = p.get("id").and_then(Value::as_str).map(str::to_string);
                    if let Some(t) = p.get("response").or_else(|| p.get("result")).and_then(content_text) {
                        m.push_text(&t);
                    }
                }
                _ => {}
            }
        }
    } else {
        // The OpenAI wire shape, as some instrumentations record it.
        fill_openai_shape(&mut m, o);
    }
    Some(m)
}

/// `{role, content, tool_calls, tool_call_id}` (OpenAI chat messages and
/// the bodies of the deprecated GenAI events).
fn fill_openai_shape(m: &mut Message, o: &serde_json::Map<String, Value>) {
    if let Some(t) = o.get("content").and_then(content_text) {
        m.push_text(&t);
    }
    if let Some(calls) = o.get("tool_calls").and_then(Value::as_array) {
        m.tool_calls.extend(calls.iter().filter_map(tool_call_of));
    }
    if m.tool_call_id.is_none() {
        m.tool_call_id = o
            .get("tool_call_id")
            .or_else(|| o.get("id").filter(|_| m.role == MsgRole::Tool))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
}

/// Messages from OpenInference's flattened attributes under `prefix`
/// (`llm.input_messages` or `llm.output_messages`), in index order.
pub fn from_openinference(attrs: &HashMap<&str, Value>, prefix: &str) -> Option<Vec<Message>> {
    // Group keys by message index: `<prefix>.<i>.message.<rest>`.
    let mut by_index: Vec<(usize, Vec<(&str, &Value)>)> = Vec::new();
    for (k, v) in attrs {
        let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((idx, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(i) = idx.parse::<usize>() else { continue };
        let Some(field) = field.strip_prefix("message.") else {
            continue;
        };
        match by_index.iter_mut().find(|(j, _)| *j == i) {
            Some((_, fields)) => fields.push((field, v)),
            None => by_index.push((i, vec![(field, v)])),
        }
    }
    if by_index.is_empty() {
        return None;
    }
    by_index.sort_by_key(|(i, _)| *i);
    let mut out = Vec::with_capacity(by_index.len());
    for (_, mut fields) in by_index {
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let get = |name: &str| fields.iter().find(|(f, _)| *f == name).map(|(_, v)| *v);
        let mut m = Message::new(MsgRole::parse(get("role").and_then(Value::as_str).unwrap_or("")));
        match get("content").and_then(content_text) {
            Some(t) => m.push_text(&t),
            // Multi-part contents (`message.contents.<j>.message_content.text`)
            // only when there is no plain content: some instrumentations set both.
            None => {
                let mut parts: Vec<(usize, &str)> = fields
                    .iter()
                    .filter_map(|(f, v)| {
                        let j = f.strip_prefix("contents.")?.strip_suffix(".message_content.text")?;
                        Some((j.parse().ok()?, v.as_str()?))
                    })
                    .collect();
                parts.sort_by_key(|p| p.0);
                for (_, t) in parts {
                    m.push_text(t);
                }
            }
        }
        m.tool_call_id = get("tool_call_id").and_then(Value::as_str).map(str::to_string);
        let mut calls: Vec<(usize, ToolCall)> = Vec::new();
        for (f, v) in &fields {
            let Some(rest) = f.strip_prefix("tool_calls.") else {
                continue;
            };
            let Some((j, what)) = rest.split_once('.') else {
                continue;
            };
            let Ok(j) = j.parse::<usize>() else { continue };
            let call = match calls.iter_mut().find(|(k, _)| *k == j) {
                Some((_, c)) => c,
                None => {
                    calls.push((
                        j,
                        ToolCall {
                            id: None,
                            name: String::new(),
                            arguments: None,
                        },
                    ));
                    &mut calls.last_mut().expect("just pushed").1
                }
            };
            match what {
                "tool_call.function.name" => call.name = v.as_str().unwrap_or("").to_string(),
                "tool_call.function.arguments" => call.arguments = Some(decode_json_string(v)),
                "tool_call.id" => call.id = v.as_str().map(str::to_string),
                _ => {}
            }
        }
        calls.sort_by_key(|(j, _)| *j);
        m.tool_calls = calls
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| !c.name.is_empty())
            .collect();
        out.push(m);
    }
    Some(out)
}

/// Which side of a model call an event's message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Sent to the model.
    Input,
    /// Returned by the model.
    Output,
}

/// The message a deprecated GenAI content event carries
/// (`gen_ai.{system,user,assistant,tool}.message`, `gen_ai.choice`), from
/// its body.
pub fn from_event(name: &str, body: &Value) -> Option<(Side, Message)> {
    let o = body.as_object();
    let role = match name {
        "gen_ai.system.message" => MsgRole::System,
        "gen_ai.user.message" => MsgRole::User,
        "gen_ai.assistant.message" => MsgRole::Assistant,
        "gen_ai.tool.message" => MsgRole::Tool,
        "gen_ai.choice" => {
            let msg = o.and_then(|o| o.get("message")).and_then(Value::as_object);
            let mut m = Message::new(MsgRole::Assistant);
            if let Some(msg) = msg {
                fill_openai_shape(&mut m, msg);
            }
            m.finish_reason = o
                .and_then(|o| o.get("finish_reason"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Some((Side::Output, m));
        }
        _ => return None,
    };
    let mut m = Message::new(role);
    match o {
        Some(o) => fill_openai_shape(&mut m, o),
        None => {
            if let Some(t) = content_text(body) {
                m.push_text(&t);
            }
        }
    }
    Some((Side::Input, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn genai_parts_give_text_tool_calls_and_results() {
        let v = json!(
            r#"[{"role":"user","parts":[{"type":"text","content":"Cancel ABC123"}]},
               {"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"cancel","arguments":{"id":"ABC123"}}],"finish_reason":"tool_calls"},
               {"role":"tool","parts":[{"type":"tool_call_response","id":"c1","response":"{\"status\":\"cancelled\"}"}]}]"#
        );
        let m = from_genai(&v).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].role, m[0].text.as_deref()),
            (MsgRole::User, Some("Cancel ABC123"))
        );
        assert_eq!(m[1].tool_calls[0].name, "cancel");
        assert_eq!(m[1].tool_calls[0].arguments, Some(json!({"id": "ABC123"})));
        assert_eq!(m[1].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(m[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(m[2].text.as_deref(), Some("{\"status\":\"cancelled\"}"));
    }

    #[test]
    fn openinference_flattened_messages_in_index_order() {
        let attrs: HashMap<&str, Value> = [
            ("llm.input_messages.1.message.role", json!("user")),
            ("llm.input_messages.1.message.content", json!("hi")),
            ("llm.input_messages.0.message.role", json!("system")),
            ("llm.input_messages.0.message.content", json!("be nice")),
            ("llm.input_messages.10.message.role", json!("tool")),
            ("llm.input_messages.10.message.tool_call_id", json!("c9")),
            (
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.name",
                json!("lookup"),
            ),
            (
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments",
                json!("{\"q\":1}"),
            ),
            ("llm.input_messages.2.message.role", json!("assistant")),
        ]
        .into_iter()
        .collect();
        let m = from_openinference(&attrs, "llm.input_messages").unwrap();
        let roles: Vec<MsgRole> = m.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [MsgRole::System, MsgRole::User, MsgRole::Assistant, MsgRole::Tool]
        );
        assert_eq!(m[2].tool_calls[0].arguments, Some(json!({"q": 1})));
        assert_eq!(m[3].tool_call_id.as_deref(), Some("c9"));
        assert!(from_openinference(&attrs, "llm.output_messages").is_none());
    }

    #[test]
    fn deprecated_events() {
        let (side, m) = from_event(
            "gen_ai.choice",
            &json!({"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"a\":2}"}}]}}),
        )
        .unwrap();
        assert_eq!(side, Side::Output);
        assert_eq!(m.tool_calls[0].arguments, Some(json!({"a": 2})));
        assert_eq!(m.finish_reason.as_deref(), Some("tool_calls"));
        let (side, m) = from_event("gen_ai.tool.message", &json!({"content":"42","id":"c1"})).unwrap();
        assert_eq!(
            (side, m.role, m.tool_call_id.as_deref()),
            (Side::Input, MsgRole::Tool, Some("c1"))
        );
        assert!(from_event("gen_ai.unknown", &json!({})).is_none());
    }
}
