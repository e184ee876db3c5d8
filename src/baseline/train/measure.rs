//! Measuring: one row of features per reference session, on every core.

use super::SessionRow;
use crate::features::{Rules, SessionAccumulator};
use crate::model::{SegmentField, Session, task_part};

/// Measures one session.
pub fn measure(session: &Session, rules: &Rules, by: &[SegmentField]) -> SessionRow {
    let mut acc = SessionAccumulator::default();
    let mut outputs = Vec::new();
    for s in &session.steps {
        if let Some(o) = acc.push(s, rules).output {
            outputs.push(o);
        }
    }
    let first = &session.steps[0];
    SessionRow {
        id: session.id.clone(),
        agent: first.agent.clone(),
        task: task_part(first, by),
        task_type: first.task_type_or_default().to_string(),
        intent: session.steps.iter().find_map(|s| s.intent.clone()),
        features: acc.finish(),
        outputs,
    }
}

/// Measures sessions on every core, keeping their order.
pub fn measure_all(sessions: &[Session], rules: &Rules, by: &[SegmentField]) -> Vec<SessionRow> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let chunk = sessions.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|x| measure(x, rules, by)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("measuring threads do not panic"))
            .collect()
    })
}
