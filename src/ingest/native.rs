//! The native step format: NDJSON (one step per line) and MessagePack (a
//! stream of maps, or one array of maps).

use super::{Location, ReadOutput, RecordError};
use crate::model::Step;

/// Parses one JSON-encoded step, naming the field on error.
pub fn parse_json_step(line: &[u8]) -> Result<Step, (Option<String>, String)> {
    // Fast path: plain serde. Only a failing record pays for path tracking.
    let step: Step = match serde_json::from_slice(line) {
        Ok(s) => s,
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_slice(line);
            match serde_path_to_error::deserialize::<_, Step>(de) {
                Ok(s) => s,
                Err(e) => return Err(describe(e.path().to_string(), &strip_position(&e.inner().to_string()))),
            }
        }
    };
    step.validate().map_err(|e| (Some(e.field.to_string()), e.message))?;
    Ok(step)
}

/// The non-blank lines of an NDJSON buffer, so that every NDJSON reader
/// (files, request bodies, byte ranges) numbers lines the same way. Yields
/// (1-based line number, byte offset of the line, the line without its
/// `\n` or `\r\n`).
pub struct NdjsonRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
    lines: usize,
}

impl<'a> NdjsonRecords<'a> {
    /// Records of `bytes`.
    pub fn new(bytes: &'a [u8]) -> NdjsonRecords<'a> {
        NdjsonRecords {
            bytes,
            pos: 0,
            lines: 0,
        }
    }

    /// Lines passed so far, blank ones included (after the last record:
    /// the lines of the buffer).
    pub fn lines(&self) -> usize {
        self.lines
    }
}

impl<'a> Iterator for NdjsonRecords<'a> {
    type Item = (usize, usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.bytes.len() {
            let start = self.pos;
            let end = memchr::memchr(b'\n', &self.bytes[start..]).map_or(self.bytes.len(), |i| start + i);
            self.pos = (end + 1).min(self.bytes.len());
            self.lines += 1;
            let raw = &self.bytes[start..end];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some((self.lines, start, line));
            }
        }
        None
    }
}

/// Reads NDJSON: blank lines are skipped, every other line is one step.
pub fn read_ndjson(bytes: &[u8]) -> ReadOutput {
    let mut out = ReadOutput::default();
    for (line_no, _, line) in NdjsonRecords::new(bytes) {
        match parse_json_step(line) {
            Ok(step) => out.steps.push(step),
            Err((field, message)) => out.errors.push(RecordError {
                location: Location::Line(line_no),
                field,
                message,
            }),
        }
    }
    out
}

/// Reads MessagePack: either one top-level array of step maps, or a stream
/// of step maps. A record that cannot be delimited stops the read (there is
/// no way to find the next record), and is reported.
pub fn read_msgpack(bytes: &[u8]) -> ReadOutput {
    let mut out = ReadOutput::default();
    // First delimit the records (byte ranges), then decode each with
    // rmp-serde so one bad record does not hide the others.
    let mut cursor = std::io::Cursor::new(bytes);
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    while (cursor.position() as usize) < bytes.len() {
        let start = cursor.position() as usize;
        match rmpv::decode::read_value_ref_with_max_depth(&mut cursor, 64) {
            Ok(_) => ranges.push((start, cursor.position() as usize)),
            Err(e) => {
                out.errors.push(RecordError {
                    location: Location::Record(ranges.len()),
                    field: None,
                    message: format!("undecodable MessagePack at byte {start}: {e}"),
                });
                break;
            }
        }
    }
    let records: Vec<&[u8]> = match ranges.as_slice() {
        [(s, e)] if matches!(bytes[*s], 0x90..=0x9f | 0xdc | 0xdd) => {
            // One top-level array: its elements are the records.
            let mut inner = std::io::Cursor::new(&bytes[*s..*e]);
            let n = rmp::decode::read_array_len(&mut inner).unwrap_or(0) as usize;
            let mut items = Vec::with_capacity(n.min(1 << 20));
            for _ in 0..n {
                let a = *s + inner.position() as usize;
                if rmpv::decode::read_value_ref_with_max_depth(&mut inner, 64).is_err() {
                    break;
                }
                items.push(&bytes[a..*s + inner.position() as usize]);
            }
            items
        }
        _ => ranges.iter().map(|&(s, e)| &bytes[s..e]).collect(),
    };
    for (i, rec) in records.into_iter().enumerate() {
        let parsed = serde_path_to_error::deserialize::<_, Step>(&mut rmp_serde::Deserializer::new(rec))
            .map_err(|e| describe(e.path().to_string(), &e.inner().to_string()))
            .and_then(|s| {
                s.validate().map_err(|e| (Some(e.field.to_string()), e.message))?;
                Ok(s)
            });
        match parsed {
            Ok(step) => out.steps.push(step),
            Err((field, message)) => out.errors.push(RecordError {
                location: Location::Record(i),
                field,
                message,
            }),
        }
    }
    out
}

/// Turns a serde path and message into (field, message). Missing/unknown
/// field errors name the field in the message, not in the path.
fn describe(path: String, message: &str) -> (Option<String>, String) {
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| &message[i + p.len()..]))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let field = match (path.as_str(), named) {
        (".", Some(n)) | ("", Some(n)) | ("?", Some(n)) => Some(n),
        (".", None) | ("", None) | ("?", None) => None,
        (p, _) => Some(p.to_string()),
    };
    (field, message.to_string())
}

/// serde_json appends "at line 1 column N" to a one-line record; keep the column.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => {
            let col = message[i..].rsplit(' ').next().unwrap_or("");
            format!("{} (column {col})", &message[..i])
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepKind;

    #[test]
    fn ndjson_records_number_every_line_and_skip_blank_ones() {
        let bytes = b"a\r\n\n  \t\r\nbb\n{c}";
        let mut r = NdjsonRecords::new(bytes);
        let got: Vec<(usize, usize, &[u8])> = r.by_ref().collect();
        assert_eq!(got, [(1, 0, &b"a"[..]), (4, 9, &b"bb"[..]), (5, 12, &b"{c}"[..])]);
        assert_eq!(r.lines(), 5);
        let mut r = NdjsonRecords::new(b"x\n\n");
        assert_eq!(r.by_ref().count(), 1);
        assert_eq!(r.lines(), 2, "a final newline ends a line; it does not start one");
        assert_eq!(NdjsonRecords::new(b"").count(), 0);
    }

    #[test]
    fn ndjson_reports_line_and_field_and_keeps_going() {
        let input = b"{\"session_id\":\"s\",\"seq\":0,\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\"}\n\
            \n\
            {\"session_id\":\"s\",\"seq\":1,\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\",\"input_tokens\":-5}\n\
            {not json\n\
            {\"session_id\":\"s\",\"seq\":2,\"ts\":1,\"kind\":\"wander\",\"agent\":\"a\"}\n\
            {\"session_id\":\"s\",\"seq\":3,\"ts\":1,\"agent\":\"a\"}\r\n\
            {\"session_id\":\"s\",\"seq\":4,\"ts\":1,\"kind\":\"tool\",\"agent\":\"a\"}\n\
            {\"session_id\":\"s\",\"seq\":5,\"ts\":1,\"kind\":\"tool\",\"agent\":\"a\",\"tool\":\"t\"}";
        let out = read_ndjson(input);
        assert_eq!(out.steps.len(), 2);
        assert_eq!(out.steps[1].kind, StepKind::Tool);
        let got: Vec<(Location, Option<&str>)> = out
            .errors
            .iter()
            .map(|e| (e.location.clone(), e.field.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Location::Line(3), Some("input_tokens")),
                (Location::Line(4), None),
                (Location::Line(5), Some("kind")),
                (Location::Line(6), Some("kind")),
                (Location::Line(7), Some("tool")),
            ]
        );
        assert!(out.errors[0].message.contains("-5"), "{}", out.errors[0].message);
        assert!(out.errors[1].message.contains("column"), "{}", out.errors[1].message);
    }

    #[test]
    fn msgpack_reads_streams_and_arrays() {
        let a = Step::new("s", 0, 1, StepKind::Llm, "a");
        let mut b = Step::new("s", 1, 2, StepKind::Tool, "a");
        b.tool = Some("t".into());
        b.args = Some(serde_json::json!({"x": [1, 2]}));
        let mut stream = rmp_serde::to_vec_named(&a).unwrap();
        stream.extend(rmp_serde::to_vec_named(&b).unwrap());
        let out = read_msgpack(&stream);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.steps, vec![a.clone(), b.clone()]);
        let arr = rmp_serde::to_vec_named(&vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(read_msgpack(&arr).steps, vec![a, b]);
    }

    #[test]
    fn msgpack_rejects_nan_and_names_it() {
        let mut a = Step::new("s", 0, 1, StepKind::Llm, "a");
        a.latency_ms = Some(f64::NAN);
        let out = read_msgpack(&rmp_serde::to_vec_named(&a).unwrap());
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].field.as_deref(), Some("latency_ms"));
    }

    #[test]
    fn truncated_msgpack_is_an_error_not_a_panic() {
        let a = Step::new("s", 0, 1, StepKind::Llm, "a");
        let bytes = rmp_serde::to_vec_named(&a).unwrap();
        let out = read_msgpack(&bytes[..bytes.len() - 3]);
        assert_eq!(out.steps.len(), 0);
        assert_eq!(out.errors.len(), 1);
    }
}
