//! Readers: bytes in one of the supported formats → steps, plus one error per
//! bad record. Each reader is a pure function; a bad record never stops the
//! others and never panics.
//!
//! Formats: native NDJSON and MessagePack ([`native`]), and OTLP traces and
//! logs in protobuf or JSON encoding ([`otlp`]) mapped from the OpenTelemetry
//! GenAI, OpenInference and OpenLLMetry conventions ([`otel`]). Files and
//! folders on disk are expanded, read and streamed in order by [`files`].

pub mod files;
pub mod native;
pub mod otel;
pub mod otlp;

use crate::model::Step;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// An input encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Native steps, one JSON object per line.
    Ndjson,
    /// Native steps as MessagePack: a stream of maps, or one array of maps.
    Msgpack,
    /// OTLP `ExportTraceServiceRequest`, protobuf encoding.
    OtlpProto,
    /// OTLP `ExportTraceServiceRequest`, JSON encoding.
    OtlpJson,
}

impl Format {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Msgpack => "msgpack",
            Format::OtlpProto => "otlp-proto",
            Format::OtlpJson => "otlp-json",
        }
    }

    /// Guesses the format from the file name, then from the content:
    /// `.jsonl`/`.ndjson` → NDJSON, `.msgpack`/`.mpk` → MessagePack,
    /// `.pb`/`.binpb`/`.otlp` → OTLP protobuf; a `.json` file (or any text
    /// starting with `{`) holding `resourceSpans` → OTLP JSON, else NDJSON.
    pub fn detect(path: &Path, bytes: &[u8]) -> Format {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_lowercase();
        if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            return Format::Ndjson;
        }
        if name.ends_with(".msgpack") || name.ends_with(".mpk") || name.ends_with(".mp") {
            return Format::Msgpack;
        }
        if name.ends_with(".pb") || name.ends_with(".binpb") || name.ends_with(".otlp") || name.ends_with(".protobuf") {
            return Format::OtlpProto;
        }
        Format::sniff(bytes)
    }

    /// Guesses the format from content alone.
    pub fn sniff(bytes: &[u8]) -> Format {
        let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        match first {
            Some(b'{') | Some(b'[') => {
                let head = &bytes[..bytes.len().min(4096)];
                if head.windows(13).any(|w| w == b"resourceSpans" || w == b"resource_span") {
                    Format::OtlpJson
                } else {
                    Format::Ndjson
                }
            }
            // MessagePack fixmap/map16/map32 or fixarray/array16/array32
            Some(0x80..=0x9f | 0xdc..=0xdf) => Format::Msgpack,
            Some(_) => Format::OtlpProto,
            None => Format::Ndjson,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the input a record sits, so errors point at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// 1-based line of an NDJSON input.
    Line(usize),
    /// 0-based record index of a MessagePack input.
    Record(usize),
    /// A span of an OTLP input.
    Span {
        /// Trace id, hex.
        trace_id: String,
        /// Span id, hex.
        span_id: String,
    },
    /// The input as a whole (it could not be decoded at all).
    Body,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Record(n) => write!(f, "record {n}"),
            Location::Span { trace_id, span_id } => write!(f, "span {span_id} (trace {trace_id})"),
            Location::Body => write!(f, "body"),
        }
    }
}

/// One bad record: where, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordError {
    /// Where the record is.
    pub location: Location,
    /// The offending field or attribute, when one can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{}`: {}", self.location, field, self.message),
            None => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// What a reader produced from one input.
#[derive(Debug, Default)]
pub struct ReadOutput {
    /// The good records, in input order.
    pub steps: Vec<Step>,
    /// One entry per bad record.
    pub errors: Vec<RecordError>,
    /// Records that are valid but carry no agent step (e.g. OTLP spans from
    /// other instrumentation, or structural CHAIN spans).
    pub ignored: usize,
}

/// Options that change how traces map to steps.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Span or resource attributes holding the task type, first match wins.
    pub task_type_attributes: Vec<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            task_type_attributes: vec!["agentdrift.task_type".to_string(), "gen_ai.task.type".to_string()],
        }
    }
}

/// One input file as read.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct InputFile {
    /// Path as given (or found under a given directory).
    pub path: String,
    /// Detected or forced format.
    pub format: String,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Good records.
    pub steps: usize,
    /// Bad records.
    pub errors: usize,
}

/// Reads bytes in the given format.
pub fn read(format: Format, bytes: &[u8], opts: &ReadOptions) -> ReadOutput {
    match format {
        Format::Ndjson => native::read_ndjson(bytes),
        Format::Msgpack => native::read_msgpack(bytes),
        Format::OtlpProto => otlp::read_otlp_proto(bytes, opts),
        Format::OtlpJson => otlp::read_otlp_json(bytes, opts),
    }
}
