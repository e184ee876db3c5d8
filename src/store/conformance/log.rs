//! The log's conformance suite (`log_suite!`): append, deduplication,
//! durable sync, reads from a position, lookups by session.

use super::*;

/// Appends are atomic, durable after `sync`, deduplicated by (session, seq), and keep the raw bytes.
pub fn appends_dedup_and_keep_raw(b: &mut dyn LogBackend) {
    let s = b.log();
    s.sync().expect("a sync with nothing written succeeds");
    let first = s.append(&[step("a1", 0), step("a1", 1), step("b1", 0)], 5).unwrap();
    assert_eq!(first.stored.len(), 3);
    assert_eq!(first.duplicates, 0);
    let again = s.append(&[step("a1", 1), step("a1", 2)], 6).unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(again.stored.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.step_count().unwrap(), 4);
    s.sync().unwrap();
    b.reopen();
    let s = b.log();
    let steps = s.session_steps("a1").unwrap();
    assert_eq!(steps.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(steps[1].raw, raw_of(&step("a1", 1)), "raw bytes as received");
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].id() < w[1].id()));
    assert_eq!(s.log_after(log[1].id(), 1).unwrap().len(), 1);
}

/// OTLP requests are stored whole, once (the same bytes again are a
/// duplicate), and come back from the log, and by position, as received.
pub fn otlp_requests(b: &mut dyn LogBackend) {
    let s = b.log();
    let r = s
        .append(
            &[otlp(OtlpSignal::Traces, b"spans-1"), otlp(OtlpSignal::Logs, b"logs-1")],
            1,
        )
        .unwrap();
    assert_eq!((r.stored.len(), r.duplicates), (2, 0));
    let r = s
        .append(
            &[
                otlp(OtlpSignal::Traces, b"spans-1"),
                otlp(OtlpSignal::Traces, b"spans-2"),
            ],
            2,
        )
        .unwrap();
    assert_eq!(r.duplicates, 1, "the same request twice is stored once");
    assert_eq!(r.stored.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1]);
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 3);
    let ids: Vec<i64> = log.iter().map(LogEntry::id).collect();
    match (&log[0], &log[1]) {
        (
            LogEntry::Otlp {
                request,
                received_ms,
                records,
                ..
            },
            LogEntry::Otlp { request: logs, .. },
        ) => {
            assert_eq!(
                (request.signal, &request.body[..], *received_ms),
                (OtlpSignal::Traces, &b"spans-1"[..], 1)
            );
            assert!(
                records.is_none(),
                "the store gives the bytes back; the reader maps them"
            );
            assert_eq!((logs.signal, logs.encoding), (OtlpSignal::Logs, OtlpEncoding::Proto));
        }
        other => panic!("{other:?}"),
    }
    let id = s.append_settle("t1", ids[2], 77).unwrap();
    match &s.log_after(ids[2], 10).unwrap()[0] {
        LogEntry::Settle {
            id: got,
            after,
            received_ms,
            trace_id,
        } => {
            assert_eq!((*got, *after, *received_ms, trace_id.as_str()), (id, ids[2], 77, "t1"));
        }
        other => panic!("{other:?}"),
    }
    // By position: each request once, in log order; positions of other
    // entries (a settle) or of nothing are not requests.
    let got = s.requests(&[ids[2], ids[0], ids[1], ids[0], id, id + 1000]).unwrap();
    assert_eq!(
        got.iter().map(|r| (&r.body[..], r.signal)).collect::<Vec<_>>(),
        [
            (&b"spans-1"[..], OtlpSignal::Traces),
            (&b"logs-1"[..], OtlpSignal::Logs),
            (&b"spans-2"[..], OtlpSignal::Traces)
        ]
    );
    assert!(s.requests(&[]).unwrap().is_empty());
    // Outcomes reported later sit in the log too.
    let report = OutcomeReport {
        session_id: "d1".into(),
        outcome: Outcome::Failure,
        reward: Some(0.0),
    };
    let r = s
        .append(
            &[NewRecord::Outcome {
                raw: serde_json::to_string(&report).unwrap(),
                report: report.clone(),
            }],
            9,
        )
        .unwrap();
    match &s.log_after(r.stored[0].id - 1, 1).unwrap()[0] {
        LogEntry::Outcome {
            report: got,
            received_ms,
            ..
        } => assert_eq!((got, *received_ms), (&report, 9)),
        other => panic!("{other:?}"),
    }
}

/// Close markers sit in the log with the position they were decided at.
pub fn close_markers(b: &mut dyn LogBackend) {
    let s = b.log();
    let r = s.append(&[step("c1", 0)], 1).unwrap();
    let pos = r.stored[0].id;
    let id = s.append_close("c1", pos, 42).unwrap();
    assert!(id > pos);
    match &s.log_after(pos, 10).unwrap()[0] {
        LogEntry::Close {
            after,
            session_id,
            received_ms,
            ..
        } => {
            assert_eq!((*after, session_id.as_str(), *received_ms), (pos, "c1", 42));
        }
        other => panic!("{other:?}"),
    }
}

/// Native sessions sharing a correlation id are found again after a reopen.
pub fn correlation(b: &mut dyn LogBackend) {
    let s = b.log();
    s.append(&[step("m1", 0), step("m2", 0), step("m1", 1), step("z9", 0)], 1)
        .unwrap();
    s.sync().unwrap();
    b.reopen();
    let s = b.log();
    assert_eq!(
        s.correlated_sessions("corr-m").unwrap(),
        ["m1", "m2"],
        "each session once, sorted"
    );
    assert!(s.correlated_sessions("corr-q").unwrap().is_empty());
    s.ping().unwrap();
}
