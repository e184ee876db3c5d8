//! A multi-agent task: the sessions that share a correlation id (or a
//! trace), merged into one tree across agents, with per-agent and total
//! tokens, cost, latency and the task's outcome. Pure: sessions in, report out.

use super::{Outcome, Session, StepKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// Tokens, cost and time of a set of steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// Sessions counted.
    pub sessions: usize,
    /// Steps counted.
    pub steps: usize,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost, where steps give or imply one.
    pub cost_usd: Option<f64>,
    /// Sum of step latencies, where given.
    pub latency_ms: f64,
}

impl Totals {
    fn add_step(&mut self, st: &super::Step) {
        self.steps += 1;
        self.input_tokens += st.input_tokens.unwrap_or(0);
        self.output_tokens += st.output_tokens.unwrap_or(0);
        if let Some(c) = st.cost_usd {
            *self.cost_usd.get_or_insert(0.0) += c;
        }
        self.latency_ms += st.latency_ms.unwrap_or(0.0);
    }

    fn add(&mut self, s: &Session) {
        self.sessions += 1;
        for st in &s.steps {
            self.add_step(st);
        }
    }
}

/// One session of the task.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskSession {
    /// Session id.
    pub session_id: String,
    /// Its agent (of its first step).
    pub agent: String,
    /// The session whose handoff started it (`None`: the root, or no handoff names its agent).
    pub parent_session: Option<String>,
    /// The `seq` of that handoff step.
    pub parent_seq: Option<u64>,
    /// Its outcome (end step).
    pub outcome: Option<Outcome>,
    /// First and last step times, unix ms.
    pub first_ts: i64,
    /// Last step time.
    pub last_ts: i64,
    /// Its tokens, cost, latency.
    pub totals: Totals,
}

/// One step in the merged tree.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskNode {
    /// Session it belongs to.
    pub session_id: String,
    /// Its `seq` there.
    pub seq: u64,
    /// Time, unix ms.
    pub ts: i64,
    /// Step kind.
    pub kind: StepKind,
    /// Agent.
    pub agent: String,
    /// Handoff target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_agent: Option<String>,
    /// Tool called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Depth from the task's root (0), across agents.
    pub depth: u32,
}

/// `GET /v1/tasks/{correlation_id}`: the task whole.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskReport {
    /// The correlation id (or trace id) that joins the sessions.
    pub correlation_id: String,
    /// Its sessions, in the order they started.
    pub sessions: Vec<TaskSession>,
    /// Totals per agent (of each step; `sessions`: the sessions it has steps in).
    pub agents: BTreeMap<String, Totals>,
    /// Totals of the whole task.
    pub total: Totals,
    /// Last step time minus first, ms.
    pub duration_ms: i64,
    /// The outcome of the session that ended last with one.
    pub outcome: Option<Outcome>,
    /// Every step of every session, by time, with its depth from the task's root.
    pub tree: Vec<TaskNode>,
}

/// Merges the sessions of one task. A session hangs under the latest handoff
/// to its agent made before it started in a session already placed; one that
/// no handoff names hangs under the root. Depths count from the root's first
/// step (0): a session's own depths (explicit or from its spans) are shifted
/// below its parent handoff.
pub fn merge(correlation_id: &str, mut sessions: Vec<Session>) -> TaskReport {
    sessions.retain(|s| !s.steps.is_empty());
    sessions.sort_by(|a, b| a.steps[0].ts.cmp(&b.steps[0].ts).then_with(|| a.id.cmp(&b.id)));
    let mut placed: Vec<TaskSession> = Vec::new();
    let mut tree: Vec<TaskNode> = Vec::new();
    let mut agents: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for (i, s) in sessions.iter().enumerate() {
        let first_ts = s.steps[0].ts;
        let agent = s.steps[0].agent.clone();
        let parent = tree
            .iter()
            .filter(|n| {
                n.kind == StepKind::Handoff && n.to_agent.as_deref() == Some(agent.as_str()) && n.ts <= first_ts
            })
            .max_by_key(|n| (n.ts, n.seq))
            .cloned();
        let base = match (&parent, i) {
            (Some(p), _) => p.depth + 1,
            (None, 0) => 0,
            (None, _) => 1,
        };
        let own: Vec<u32> = s.depths().iter().map(|d| d.unwrap_or(0)).collect();
        let min = own.iter().copied().min().unwrap_or(0);
        for (st, d) in s.steps.iter().zip(&own) {
            tree.push(TaskNode {
                session_id: s.id.clone(),
                seq: st.seq,
                ts: st.ts,
                kind: st.kind,
                agent: st.agent.clone(),
                to_agent: st.to_agent.clone(),
                tool: st.tool.clone(),
                depth: base + (d - min),
            });
        }
        let mut totals = Totals::default();
        totals.add(s);
        total.add(s);
        // Per agent by step: one session may hold several agents (an OTLP trace with handoffs).
        let mut seen = std::collections::BTreeSet::new();
        for st in &s.steps {
            let a = agents.entry(st.agent.clone()).or_default();
            a.add_step(st);
            if seen.insert(st.agent.as_str()) {
                a.sessions += 1;
            }
        }
        placed.push(TaskSession {
            session_id: s.id.clone(),
            agent,
            parent_session: parent.as_ref().map(|p| p.session_id.clone()),
            parent_seq: parent.as_ref().map(|p| p.seq),
            outcome: s.steps.iter().rev().find_map(|st| st.outcome),
            first_ts,
            last_ts: s.steps.iter().map(|st| st.ts).max().unwrap_or(first_ts),
            totals,
        });
    }
    tree.sort_by(|a, b| {
        a.ts.cmp(&b.ts)
            .then_with(|| a.session_id.cmp(&b.session_id))
            .then(a.seq.cmp(&b.seq))
    });
    let outcome = sessions
        .iter()
        .flat_map(|s| {
            s.steps
                .iter()
                .filter(|st| st.kind == StepKind::End && st.outcome.is_some())
        })
        .max_by_key(|st| st.ts)
        .and_then(|st| st.outcome);
    let (lo, hi) = (tree.iter().map(|n| n.ts).min(), tree.iter().map(|n| n.ts).max());
    TaskReport {
        correlation_id: correlation_id.to_string(),
        sessions: placed,
        agents,
        total,
        duration_ms: hi.zip(lo).map_or(0, |(h, l)| h - l),
        outcome,
        tree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Step;

    fn step(sid: &str, seq: u64, ts: i64, kind: StepKind, agent: &str) -> Step {
        let mut s = Step::new(sid, seq, ts, kind, agent);
        s.correlation_id = Some("t1".into());
        s
    }

    #[test]
    fn a_handoff_puts_the_next_agent_s_session_under_it() {
        let mut h = step("a", 1, 20, StepKind::Handoff, "triage");
        h.to_agent = Some("billing".into());
        let mut l = step("a", 0, 10, StepKind::Llm, "triage");
        l.input_tokens = Some(100);
        l.output_tokens = Some(10);
        l.cost_usd = Some(0.01);
        let mut b0 = step("b", 0, 30, StepKind::Llm, "billing");
        b0.depth = Some(1); // the producer's depth restarts in the second agent
        b0.input_tokens = Some(50);
        b0.cost_usd = Some(0.02);
        let mut b1 = step("b", 1, 40, StepKind::Tool, "billing");
        b1.depth = Some(2);
        b1.tool = Some("refund".into());
        let mut end = step("b", 2, 50, StepKind::End, "billing");
        end.depth = Some(1);
        end.outcome = Some(Outcome::Success);
        let a = Session::from_sorted("a", vec![l, h]);
        let b = Session::from_sorted("b", vec![b0, b1, end]);
        // Given in any order.
        let r = merge("t1", vec![b, a]);
        assert_eq!(r.sessions[0].session_id, "a");
        assert_eq!(r.sessions[1].parent_session.as_deref(), Some("a"));
        assert_eq!(r.sessions[1].parent_seq, Some(1));
        let depth = |sid: &str, seq: u64| {
            r.tree
                .iter()
                .find(|n| n.session_id == sid && n.seq == seq)
                .unwrap()
                .depth
        };
        assert_eq!((depth("a", 0), depth("a", 1)), (0, 0));
        assert_eq!(depth("b", 0), 1, "below the handoff, not restarted");
        assert_eq!(depth("b", 1), 2);
        assert_eq!(r.total.input_tokens, 150);
        assert_eq!(r.total.output_tokens, 10);
        assert!((r.total.cost_usd.unwrap() - 0.03).abs() < 1e-12);
        assert_eq!(r.agents["billing"].steps, 3);
        assert_eq!(r.agents["triage"].input_tokens, 100);
        assert_eq!(r.outcome, Some(Outcome::Success));
        assert_eq!(r.duration_ms, 40);
        assert_eq!(r.tree.iter().map(|n| n.ts).collect::<Vec<_>>(), [10, 20, 30, 40, 50]);
    }

    #[test]
    fn a_session_no_handoff_names_hangs_under_the_root() {
        let a = Session::from_sorted("a", vec![step("a", 0, 10, StepKind::Llm, "x")]);
        let b = Session::from_sorted("b", vec![step("b", 0, 5, StepKind::Llm, "y")]);
        let r = merge("t1", vec![a, b]);
        assert_eq!(r.sessions[0].session_id, "b", "the earliest is the root");
        assert_eq!(r.sessions[1].parent_session, None);
        assert_eq!(r.tree.iter().find(|n| n.session_id == "a").unwrap().depth, 1);
        assert_eq!(r.outcome, None);
    }
}
