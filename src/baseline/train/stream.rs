//! Training straight from files: sessions are built and measured as their
//! steps stream in, so memory holds open sessions, not the whole run.

use super::{SessionRow, TrainError, measure_all, train_rows, validate};
use crate::baseline::types::*;
use crate::features::sequence::FnvState;
use crate::features::{OutputObs, Rules, SessionAccumulator};
use crate::model::{SegmentField, Step, group_sessions, task_part};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A session measured as its steps arrive in seq order from 0: its steps
/// are dropped once accumulated, so memory holds only open sessions' sums.
pub(super) struct Live {
    /// Order key of its first step.
    order: u64,
    /// Order key of the last step accumulated.
    last_order: u64,
    /// The seq expected next.
    next: u64,
    acc: SessionAccumulator,
    outputs: Vec<OutputObs>,
    id: String,
    agent: String,
    task: String,
    task_type: String,
    intent: Option<String>,
}

impl Live {
    fn start(first: &Step, order: u64, by: &[SegmentField]) -> Live {
        Live {
            order,
            last_order: order,
            next: 0,
            acc: SessionAccumulator::default(),
            outputs: Vec::new(),
            id: first.session_id.clone(),
            agent: first.agent.clone(),
            task: task_part(first, by),
            task_type: first.task_type_or_default().to_string(),
            intent: None,
        }
    }

    fn push(&mut self, step: &Step, order: u64, rules: &Rules) {
        if self.intent.is_none() {
            self.intent.clone_from(&step.intent);
        }
        if let Some(o) = self.acc.push(step, rules).output {
            self.outputs.push(o);
        }
        self.next = step.seq + 1;
        self.last_order = order;
    }

    fn finish(self) -> (u64, SessionRow) {
        (
            self.order,
            SessionRow {
                id: self.id,
                agent: self.agent,
                task: self.task,
                task_type: self.task_type,
                intent: self.intent,
                features: self.acc.finish(),
                outputs: self.outputs,
            },
        )
    }
}

/// A session still collecting steps.
pub(super) enum Pending {
    /// In seq order from 0 so far.
    Live(Box<Live>),
    /// Anything else: its steps, kept for sorting when the stream ends, and
    /// the order key of the first.
    Loose(u64, Vec<Step>),
}

/// Builds session rows from a stream of steps (one builder per thread): a
/// session whose steps arrive in seq order from 0 is measured as they
/// arrive and finished by its end step; a session starting elsewhere keeps
/// its steps until the stream ends; a session that breaks its order, or
/// goes on after its end, is measured again from a second read.
pub struct SessionBuilder<'a> {
    rules: Rules<'a>,
    by: &'a [SegmentField],
    open: HashMap<String, Pending, FnvState>,
    rows: Vec<(u64, SessionRow)>,
    finished: HashMap<String, u64, FnvState>,
    reopened: HashSet<String, FnvState>,
}

impl<'a> SessionBuilder<'a> {
    /// An empty builder.
    pub fn new(rules: Rules<'a>, by: &'a [SegmentField]) -> SessionBuilder<'a> {
        SessionBuilder {
            rules,
            by,
            open: HashMap::default(),
            rows: Vec::new(),
            finished: HashMap::default(),
            reopened: HashSet::default(),
        }
    }
}

impl crate::ingest::files::StepSink for SessionBuilder<'_> {
    fn push(&mut self, step: Step, order: u64) {
        if self.reopened.contains(&step.session_id) {
            return; // measured again from the second read
        }
        if self.finished.contains_key(&step.session_id) {
            self.reopened.insert(step.session_id);
            return;
        }
        let is_end = step.kind == crate::model::StepKind::End;
        match self.open.get_mut(&step.session_id) {
            None if step.seq == 0 => {
                let mut live = Live::start(&step, order, self.by);
                live.push(&step, order, &self.rules);
                if is_end {
                    self.finished.insert(step.session_id, order);
                    self.rows.push(live.finish());
                } else {
                    self.open.insert(step.session_id, Pending::Live(Box::new(live)));
                }
            }
            None => {
                self.open
                    .insert(step.session_id.clone(), Pending::Loose(order, vec![step]));
            }
            Some(Pending::Live(live)) if step.seq == live.next => {
                live.push(&step, order, &self.rules);
                if is_end {
                    let Some(Pending::Live(live)) = self.open.remove(&step.session_id) else {
                        unreachable!("matched above")
                    };
                    self.finished.insert(step.session_id, live.order);
                    self.rows.push(live.finish());
                }
            }
            Some(Pending::Live(_)) => {
                self.open.remove(&step.session_id);
                self.reopened.insert(step.session_id);
            }
            Some(Pending::Loose(first, steps)) => {
                *first = (*first).min(order);
                steps.push(step);
            }
        }
    }
}

/// A sink that keeps the steps of some sessions (for recomputing them).
pub(super) struct Collect<'a> {
    ids: &'a HashSet<String>,
    steps: Vec<(u64, Step)>,
}

impl crate::ingest::files::StepSink for Collect<'_> {
    fn push(&mut self, step: Step, order: u64) {
        if self.ids.contains(&step.session_id) {
            self.steps.push((order, step));
        }
    }
}

/// Rows of loose steps in first-appearance order (sessions sorted by seq, duplicates dropped).
pub(super) fn rows_of(mut steps: Vec<(u64, Step)>, rules: &Rules, by: &[SegmentField]) -> Vec<(u64, SessionRow)> {
    steps.sort_by_key(|x| x.0);
    let mut first: HashMap<String, u64> = HashMap::new();
    for (o, s) in &steps {
        first.entry(s.session_id.clone()).or_insert(*o);
    }
    let grouped = group_sessions(steps.into_iter().map(|x| x.1));
    let rows = measure_all(&grouped.sessions, rules, by);
    rows.into_iter().map(|r| (first[&r.id], r)).collect()
}

/// Trains straight from input files without holding every step in memory
/// (same result as [`train`] on the same steps). Returns the baseline and
/// what was read (bad records included); with bad records and without
/// `skip_bad`, no baseline is built.
pub fn train_files(
    paths: &[std::path::PathBuf],
    format: Option<crate::ingest::Format>,
    opts: &crate::ingest::ReadOptions,
    rules: &Rules,
    strict: bool,
    skip_bad: bool,
    cfg: &TrainConfig,
) -> Result<(Option<Baseline>, crate::ingest::files::Streamed), TrainFilesError> {
    validate(cfg)?;
    let prices = rules.prices;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let by = cfg.segment_by.clone();
    let mut builders: Vec<SessionBuilder> = (0..threads).map(|_| SessionBuilder::new(*rules, &by)).collect();
    let streamed = crate::ingest::files::stream(paths, format, opts, prices, strict, &mut builders)?;
    if !streamed.errors.is_empty() && !skip_bad {
        return Ok((None, streamed));
    }
    // Merge: a session finished in one builder and seen nowhere else is
    // final; a session left open is completed from the loose steps other
    // builders hold of it (a session cut by a chunk boundary); sessions that
    // broke their order or went on after their end are measured again.
    let mut seen: HashMap<&str, usize, FnvState> = HashMap::default();
    for b in &builders {
        for id in b.finished.keys().chain(b.open.keys()) {
            *seen.entry(id.as_str()).or_insert(0) += 1;
        }
    }
    let mut dirty: HashSet<String, FnvState> = builders.iter().flat_map(|b| b.reopened.iter().cloned()).collect();
    for b in &builders {
        for id in b.finished.keys() {
            if seen[id.as_str()] > 1 {
                dirty.insert(id.clone());
            }
        }
    }
    drop(seen);
    let mut rows: Vec<(u64, SessionRow)> = Vec::new();
    let mut pieces: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    for b in builders {
        rows.extend(b.rows.into_iter().filter(|(_, r)| !dirty.contains(&r.id)));
        for (id, p) in b.open {
            if !dirty.contains(&id) {
                pieces.entry(id).or_default().push(p);
            }
        }
    }
    let mut partial: Vec<(u64, Step)> = Vec::new();
    for (id, parts) in pieces {
        let mut live: Option<Box<Live>> = None;
        let mut loose: Vec<(u64, Step)> = Vec::new();
        let mut ok = true;
        for p in parts {
            match p {
                Pending::Live(l) if live.is_none() => live = Some(l),
                Pending::Live(_) => ok = false, // two starts: measured again
                Pending::Loose(order, steps) => loose.extend(steps.into_iter().map(|s| (order, s))),
            }
        }
        match live {
            Some(mut l) if ok => {
                loose.sort_by_key(|(order, s)| (s.seq, *order));
                loose.dedup_by_key(|(_, s)| s.seq);
                let first = l.order.min(loose.first().map_or(u64::MAX, |x| x.0));
                for (order, s) in loose {
                    if s.seq >= l.next {
                        l.push(&s, order.max(l.last_order), rules);
                    } else if order <= l.last_order {
                        ok = false; // an earlier copy of a step already measured
                        break;
                    }
                }
                if ok {
                    l.order = first;
                    rows.push(l.finish());
                } else {
                    dirty.insert(id);
                }
            }
            Some(_) => {
                dirty.insert(id);
            }
            None => partial.extend(loose),
        }
    }
    rows.extend(rows_of(partial, rules, &by));
    if !dirty.is_empty() {
        let dirty: HashSet<String> = dirty.into_iter().collect();
        let mut collect = [Collect {
            ids: &dirty,
            steps: Vec::new(),
        }];
        crate::ingest::files::stream(paths, format, opts, prices, false, &mut collect)?;
        let [c] = collect;
        rows.extend(rows_of(c.steps, rules, &by));
    }
    if rows.is_empty() {
        return Err(TrainError::Empty.into());
    }
    rows.sort_by_key(|r| r.0);
    let rows: Vec<SessionRow> = rows.into_iter().map(|r| r.1).collect();
    let baseline = train_rows(&rows, streamed.files.clone(), cfg, rules)?;
    Ok((Some(baseline), streamed))
}

/// Why training from files failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainFilesError {
    /// Reading failed.
    #[error(transparent)]
    Input(#[from] crate::ingest::files::InputError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
}
