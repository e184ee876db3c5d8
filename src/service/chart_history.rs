//! The recent readings of every session-level chart, for the console's
//! control-chart view: a bounded ring per (segment, chart), in memory.

use crate::detect::event::ChartPoint;
use std::collections::{HashMap, VecDeque};

/// Points kept per chart.
pub const POINTS_PER_CHART: usize = 1000;

/// The rings, keyed by segment (`agent/task_type`) and chart id.
#[derive(Debug, Default)]
pub struct ChartHistory {
    series: HashMap<String, HashMap<String, VecDeque<ChartPoint>>>,
}

impl ChartHistory {
    /// Adds one reading; the oldest goes when the ring is full.
    pub fn push(&mut self, segment: String, point: ChartPoint) {
        let ring = self
            .series
            .entry(segment)
            .or_default()
            .entry(point.chart.clone())
            .or_insert_with(|| VecDeque::with_capacity(64));
        if ring.len() == POINTS_PER_CHART {
            ring.pop_front();
        }
        ring.push_back(point);
    }

    /// A chart's points, oldest first.
    pub fn points(&self, segment: &str, chart: &str) -> Vec<ChartPoint> {
        self.series
            .get(segment)
            .and_then(|s| s.get(chart))
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(chart: &str, i: usize) -> ChartPoint {
        ChartPoint {
            chart: chart.into(),
            session_id: format!("s{i}"),
            ts: i as i64,
            statistic: i as f64,
            limit: 3.0,
            events: vec![],
        }
    }

    #[test]
    fn each_ring_keeps_its_newest_points_in_order() {
        let mut h = ChartHistory::default();
        for i in 0..POINTS_PER_CHART + 5 {
            h.push("a/t".into(), p("ewma:x", i));
        }
        h.push("a/t".into(), p("cusum:y", 0));
        let x = h.points("a/t", "ewma:x");
        assert_eq!(x.len(), POINTS_PER_CHART);
        assert_eq!(x[0].session_id, "s5", "the 5 oldest went");
        assert_eq!(x.last().unwrap().session_id, format!("s{}", POINTS_PER_CHART + 4));
        assert_eq!(h.points("a/t", "cusum:y").len(), 1);
        assert!(h.points("b/t", "ewma:x").is_empty());
    }
}
