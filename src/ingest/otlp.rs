//! OTLP decoding: `ExportTraceServiceRequest` and `ExportLogsServiceRequest`
//! in protobuf or JSON encoding (OTLP/JSON: hex ids, lowerCamelCase fields),
//! then [`super::otel`] maps spans and log events to steps.

use super::{Location, ReadOptions, ReadOutput, RecordError, otel};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Decodes an OTLP protobuf body.
pub fn decode_proto(bytes: &[u8]) -> Result<ExportTraceServiceRequest, RecordError> {
    ExportTraceServiceRequest::decode(bytes).map_err(|e| RecordError {
        location: Location::Body,
        field: None,
        message: format!("not an OTLP ExportTraceServiceRequest (protobuf): {e}"),
    })
}

/// OTLP/JSON bodies are objects; serde would also take an array as a struct.
fn require_object(bytes: &[u8], what: &str) -> Result<(), RecordError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(RecordError {
            location: Location::Body,
            field: None,
            message: format!("not an OTLP {what} (JSON): the body must be a JSON object"),
        }),
    }
}

/// Decodes an OTLP JSON body.
pub fn decode_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, RecordError> {
    require_object(bytes, "ExportTraceServiceRequest")?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| RecordError {
        location: Location::Body,
        field: Some(e.path().to_string()).filter(|p| p != "."),
        message: format!("not an OTLP ExportTraceServiceRequest (JSON): {}", e.inner()),
    })
}

fn finish(decoded: Result<ExportTraceServiceRequest, RecordError>, opts: &ReadOptions) -> ReadOutput {
    match decoded {
        Ok(req) => otel::read_traces(&req, opts),
        Err(e) => ReadOutput {
            errors: vec![e],
            ..ReadOutput::default()
        },
    }
}

/// Reads an OTLP protobuf body into steps.
pub fn read_otlp_proto(bytes: &[u8], opts: &ReadOptions) -> ReadOutput {
    finish(decode_proto(bytes), opts)
}

/// Reads an OTLP JSON body into steps.
pub fn read_otlp_json(bytes: &[u8], opts: &ReadOptions) -> ReadOutput {
    finish(decode_json(bytes), opts)
}

/// Number of spans in a request, for OTLP partial-success accounting.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Decodes an OTLP logs protobuf body.
pub fn decode_logs_proto(bytes: &[u8]) -> Result<ExportLogsServiceRequest, RecordError> {
    ExportLogsServiceRequest::decode(bytes).map_err(|e| RecordError {
        location: Location::Body,
        field: None,
        message: format!("not an OTLP ExportLogsServiceRequest (protobuf): {e}"),
    })
}

/// Decodes an OTLP logs JSON body.
pub fn decode_logs_json(bytes: &[u8]) -> Result<ExportLogsServiceRequest, RecordError> {
    require_object(bytes, "ExportLogsServiceRequest")?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| RecordError {
        location: Location::Body,
        field: Some(e.path().to_string()).filter(|p| p != "."),
        message: format!("not an OTLP ExportLogsServiceRequest (JSON): {}", e.inner()),
    })
}
