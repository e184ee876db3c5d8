//! The recent readings of every session-level chart, for the console's
//! control-chart view: a bounded ring per (segment, chart), in memory,
//! indexed by position (no per-reading strings but one shared session id).

use crate::baseline::Baseline;
use crate::detect::event::{ChartPoint, SessionReadings};
use std::collections::VecDeque;
use std::sync::Arc;

/// Points kept per chart.
pub const POINTS_PER_CHART: usize = 500;

/// One kept reading.
#[derive(Debug)]
struct Point {
    ts: i64,
    session: Arc<str>,
    statistic: f64,
    limit: f64,
    events: Box<[String]>,
}

/// A chart's id and its ring.
type Ring = (String, VecDeque<Point>);

/// The rings, by segment and chart position in the baseline.
#[derive(Debug, Default)]
pub struct ChartHistory {
    /// Per segment: its name and its charts' rings.
    segments: Vec<(String, Vec<Ring>)>,
}

impl ChartHistory {
    /// Empty rings for every chart of the baseline (they allocate on first use).
    pub fn new(baseline: &Baseline) -> ChartHistory {
        ChartHistory {
            segments: baseline
                .segments
                .iter()
                .map(|s| {
                    let charts = s.charts.iter().map(|c| (c.id.clone(), VecDeque::new())).collect();
                    (s.key.to_string(), charts)
                })
                .collect(),
        }
    }

    /// Adds a session's readings; the oldest of a full ring goes.
    pub fn push(&mut self, r: SessionReadings) {
        let Some((_, charts)) = self.segments.get_mut(r.segment) else {
            return;
        };
        let session: Arc<str> = r.session_id.into();
        for x in r.readings {
            let Some((_, ring)) = charts.get_mut(usize::from(x.chart)) else {
                continue;
            };
            if ring.len() == POINTS_PER_CHART {
                ring.pop_front();
            }
            ring.push_back(Point {
                ts: r.ts,
                session: session.clone(),
                statistic: x.statistic,
                limit: x.limit,
                events: x.events.into_boxed_slice(),
            });
        }
    }

    /// Adds the readings a log entry produced (taking them out of its output).
    pub fn take_from(&mut self, out: &mut crate::engine::Output) {
        for r in std::mem::take(&mut out.points) {
            self.push(r);
        }
    }

    /// A chart's points, oldest first.
    pub fn points(&self, segment: &str, chart: &str) -> Vec<ChartPoint> {
        self.segments
            .iter()
            .find(|(name, _)| name == segment)
            .and_then(|(_, charts)| charts.iter().find(|(id, _)| id == chart))
            .map(|(id, ring)| {
                ring.iter()
                    .map(|p| ChartPoint {
                        chart: id.clone(),
                        session_id: p.session.to_string(),
                        ts: p.ts,
                        statistic: p.statistic,
                        limit: p.limit,
                        events: p.events.to_vec(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::event::Reading;

    #[test]
    fn each_ring_keeps_its_newest_points_in_order() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/taubench-gpt-4o-airline.adb");
        let b = crate::baseline::load(std::path::Path::new(path)).unwrap();
        let (si, seg) = b
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.charts.len() >= 2)
            .unwrap();
        let mut h = ChartHistory::new(&b);
        let reading = |chart: u16, i: usize| Reading {
            chart,
            statistic: i as f64,
            limit: 3.0,
            events: if i == 7 { vec!["ev".into()] } else { vec![] },
        };
        for i in 0..POINTS_PER_CHART + 5 {
            h.push(SessionReadings {
                segment: si,
                session_id: format!("s{i}"),
                ts: i as i64,
                readings: vec![reading(0, i)],
            });
        }
        h.push(SessionReadings {
            segment: si,
            session_id: "t".into(),
            ts: 0,
            readings: vec![reading(1, 7)],
        });
        let name = seg.key.to_string();
        let x = h.points(&name, &seg.charts[0].id);
        assert_eq!(x.len(), POINTS_PER_CHART);
        assert_eq!(x[0].session_id, "s5", "the 5 oldest went");
        assert_eq!(x.last().unwrap().session_id, format!("s{}", POINTS_PER_CHART + 4));
        assert_eq!(x[0].chart, seg.charts[0].id);
        let y = h.points(&name, &seg.charts[1].id);
        assert_eq!(y.len(), 1);
        assert_eq!(y[0].events, ["ev"]);
        assert!(h.points("no/such", &seg.charts[0].id).is_empty());
    }
}
