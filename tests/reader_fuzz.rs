//! Property tests: arbitrary input never panics a reader, and every record
//! is either a step or an error (nothing silently lost).

use agentdrift::ingest::{Format, ReadOptions, read};
use proptest::prelude::*;

fn all_formats(bytes: &[u8]) {
    for f in [Format::Ndjson, Format::Msgpack, Format::OtlpProto, Format::OtlpJson] {
        let _ = read(f, bytes, &ReadOptions::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_formats(&bytes);
    }

    #[test]
    fn every_nonblank_line_is_a_step_or_an_error(lines in proptest::collection::vec(
        prop_oneof![
            Just(r#"{"session_id":"s","seq":0,"ts":1,"kind":"llm","agent":"a"}"#.to_string()),
            Just(r#"{"session_id":"s","seq":1,"ts":1,"kind":"tool","agent":"a","tool":"t","args":{"x":1}}"#.to_string()),
            "[ -~]{0,40}",
            Just(r#"{"session_id":"s","seq":-1,"ts":1,"kind":"llm","agent":"a"}"#.to_string()),
        ], 0..20)) {
        let text = lines.join("\n");
        let out = read(Format::Ndjson, text.as_bytes(), &ReadOptions::default());
        let nonblank = lines.iter().filter(|l| !l.trim().is_empty()).count();
        prop_assert_eq!(out.steps.len() + out.errors.len(), nonblank);
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..3, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let name = ["genai_single.pb", "openinference_single.pb", "genai_multiagent.pb"][idx];
        let mut bytes = std::fs::read(crate::support::repo().join("fixtures/otel").join(name)).unwrap();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        all_formats(&bytes);
        let json = std::fs::read(crate::support::repo().join("fixtures/otel").join(name.replace(".pb", ".json"))).unwrap();
        let cut = json.len() / 2;
        all_formats(&json[..cut]);
    }
}
