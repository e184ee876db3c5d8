//! Sessions: the ordered steps of one agent task, and the segment they belong to.

use super::segment::SegmentKey;
use super::step::{Step, StepKind};

use std::collections::HashMap;

/// One session: steps sorted by `seq`, duplicates of a `seq` removed.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Session id shared by all steps.
    pub id: String,
    /// Steps in `seq` order.
    pub steps: Vec<Step>,
}

/// Result of grouping loose steps into sessions.
#[derive(Debug, Default)]
pub struct Grouped {
    /// Sessions in order of first appearance of their first step.
    pub sessions: Vec<Session>,
    /// Steps dropped because their (session_id, seq) was already seen.
    pub duplicates: usize,
}

/// Groups steps into sessions, keeping the order sessions first appear in.
pub fn group_sessions(steps: impl IntoIterator<Item = Step>) -> Grouped {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut sessions: Vec<Session> = Vec::new();
    for step in steps {
        match index.get(&step.session_id) {
            Some(&i) => sessions[i].steps.push(step),
            None => {
                index.insert(step.session_id.clone(), sessions.len());
                sessions.push(Session {
                    id: step.session_id.clone(),
                    steps: vec![step],
                });
            }
        }
    }
    let mut duplicates = 0;
    for s in &mut sessions {
        s.steps.sort_by_key(|st| st.seq);
        let before = s.steps.len();
        s.steps.dedup_by_key(|st| st.seq);
        duplicates += before - s.steps.len();
    }
    Grouped { sessions, duplicates }
}

impl Session {
    /// Builds a session from steps already known to share one id.
    pub fn from_sorted(id: impl Into<String>, steps: Vec<Step>) -> Session {
        Session { id: id.into(), steps }
    }

    /// The segment: the agent of the first acting step (llm, tool, handoff,
    /// memory), and the first task type any step carries.
    pub fn segment(&self) -> SegmentKey {
        let agent = self
            .steps
            .iter()
            .find(|s| {
                matches!(
                    s.kind,
                    StepKind::Llm | StepKind::Tool | StepKind::Handoff | StepKind::Memory
                )
            })
            .or(self.steps.first())
            .map(|s| s.agent.clone())
            .unwrap_or_default();
        let task_type = self
            .steps
            .iter()
            .find_map(|s| s.task_type.clone())
            .unwrap_or_else(|| super::step::DEFAULT_TASK_TYPE.to_string());
        SegmentKey { agent, task_type }
    }

    /// The end step, if the session has one.
    pub fn end(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.kind == StepKind::End)
    }

    /// Span depth of each step: the step's own `depth` when given, else the
    /// number of its ancestors found through `parent_span_id` among the
    /// session's steps; `None` where the session has no span information.
    pub fn depths(&self) -> Vec<Option<u32>> {
        let by_span: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.span_id.as_deref().map(|id| (id, i)))
            .collect();
        self.steps
            .iter()
            .map(|s| {
                if s.depth.is_some() {
                    return s.depth;
                }
                s.span_id.as_ref()?;
                let mut depth = 0u32;
                let mut parent = s.parent_span_id.as_deref();
                while let Some(p) = parent {
                    depth += 1;
                    if depth as usize > self.steps.len() {
                        break; // a cycle in bad data; stop rather than loop
                    }
                    parent = by_span.get(p).and_then(|&i| self.steps[i].parent_span_id.as_deref());
                }
                Some(depth)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(session: &str, seq: u64) -> Step {
        Step::new(session, seq, seq as i64, StepKind::Llm, "a")
    }

    #[test]
    fn groups_in_first_appearance_order_and_sorts_by_seq() {
        let g = group_sessions(vec![step("b", 1), step("a", 0), step("b", 0), step("b", 1)]);
        assert_eq!(g.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(g.sessions[0].steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(g.duplicates, 1);
    }

    #[test]
    fn depth_follows_parent_links_and_survives_cycles() {
        let mut a = step("s", 0);
        a.span_id = Some("1".into());
        let mut b = step("s", 1);
        b.span_id = Some("2".into());
        b.parent_span_id = Some("1".into());
        let mut c = step("s", 2);
        c.span_id = Some("3".into());
        c.parent_span_id = Some("2".into());
        let s = Session::from_sorted("s", vec![a.clone(), b, c]);
        assert_eq!(s.depths(), vec![Some(0), Some(1), Some(2)]);
        a.parent_span_id = Some("1".into());
        let cyc = Session::from_sorted("s", vec![a]);
        assert!(cyc.depths()[0].is_some());
        assert_eq!(Session::from_sorted("s", vec![step("s", 0)]).depths(), vec![None]);
    }
}
