//! Shewhart individuals chart for N(0,1) scores with the Western Electric run
//! rules, each switchable:
//! 1. one point beyond c (always on);
//! 2. two of the last three in (2c/3, c] on the same side;
//! 3. four of the last five beyond c/3 on the same side;
//! 4. eight in a row on the same side of the centre line.
//!
//! With c = 3 these are the textbook zones at 1, 2 and 3 σ. Windows count only
//! points observed so far (zero state).
//!
//! The ARL is exact: the running chart and the Markov chain share one
//! transition function ([`RuleState::step`]), and the chain over its
//! reachable states is solved by BiCGSTAB. A design for a target ARL scales c
//! (all zone boundaries together).

use super::{ChartError, Direction, Signal, check_finite, check_range};
use crate::stats::dist::norm_cdf;
use crate::stats::linalg::{Csr, bicgstab};
use crate::stats::root::brent;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which run rules are on (rule 1 is always on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rules {
    /// Rule 2: 2 of 3 in the outer zone.
    pub r2: bool,
    /// Rule 3: 4 of 5 beyond the inner zone.
    pub r3: bool,
    /// Rule 4: a run on one side.
    pub r4: bool,
    /// Length of the rule-4 run (Western Electric: 8). Rule 4 alone caps the
    /// in-control ARL at 2^run − 1 whatever the limits, so designs for long
    /// ARLs lengthen the run.
    pub run: u8,
}

impl Rules {
    /// Rule 1 only.
    pub const ONE: Rules = Rules {
        r2: false,
        r3: false,
        r4: false,
        run: 8,
    };
    /// Rules 1–4.
    pub const ALL: Rules = Rules {
        r2: true,
        r3: true,
        r4: true,
        run: 8,
    };

    /// Parses `1,2,3,4` or `1+2+3+4` (rule 1 is implied).
    pub fn parse(s: &str) -> Result<Rules, ChartError> {
        let mut r = Rules::ONE;
        for part in s.split([',', '+']).map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "1" => {}
                "2" => r.r2 = true,
                "3" => r.r3 = true,
                "4" => r.r4 = true,
                other => {
                    return Err(ChartError::BadRules(other.to_string()));
                }
            }
        }
        Ok(r)
    }

    /// `1+2+3+4`-style name.
    pub fn name(&self) -> String {
        let mut s = "1".to_string();
        for (on, n) in [(self.r2, "+2"), (self.r3, "+3"), (self.r4, "+4")] {
            if on {
                s.push_str(n);
            }
        }
        if self.r4 && self.run != 8 {
            s.push_str(&format!(" (rule 4 run {})", self.run));
        }
        s
    }
}

/// Zone of a non-signalling point: ±1 (centre to c/3), ±2, ±3 (2c/3 to c).
type Zone = i8;

/// What the rules remember about the recent past, compressed to what the
/// enabled rules need (so the Markov chain stays small).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RuleState {
    /// Zones of the last four points, most recent first (0 = not observed or
    /// not needed). Positions 0–1 keep ±3/±2/0, positions 2–3 keep ±2/0.
    recent: [Zone; 4],
    /// Signed length of the current same-side run (0 at start or if rule 4 is off).
    run: i8,
}

impl RuleState {
    /// The next state after a point in `zone`, or the number of the rule that fires.
    pub fn step(self, zone: Zone, rules: Rules) -> Result<RuleState, u8> {
        let side = zone.signum();
        let count = |depth: usize, pred: &dyn Fn(Zone) -> bool| -> usize {
            usize::from(pred(zone)) + self.recent[..depth].iter().filter(|z| pred(**z)).count()
        };
        if rules.r2 && count(2, &|z: Zone| z == 3 * side) >= 2 {
            return Err(2);
        }
        if rules.r3 && count(4, &|z: Zone| z.signum() == side && z.abs() >= 2) >= 4 {
            return Err(3);
        }
        let run = if rules.r4 {
            if self.run.signum() == side {
                self.run + side
            } else {
                side
            }
        } else {
            0
        };
        if run.unsigned_abs() >= rules.run {
            return Err(4);
        }
        let keep12 = |z: Zone| -> Zone {
            match (rules.r2, rules.r3) {
                (true, true) if z.abs() >= 2 => z,
                (true, false) if z.abs() == 3 => z,
                (false, true) if z.abs() >= 2 => 2 * z.signum(),
                _ => 0,
            }
        };
        let keep34 = |z: Zone| -> Zone { if rules.r3 && z.abs() >= 2 { 2 * z.signum() } else { 0 } };
        Ok(RuleState {
            recent: [
                keep12(zone),
                keep12(self.recent[0]),
                keep34(self.recent[1]),
                keep34(self.recent[2]),
            ],
            run,
        })
    }
}

/// A Shewhart design: rules and the rule-1 limit c.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShewhartDesign {
    /// Enabled run rules.
    pub rules: Rules,
    /// Rule-1 limit in σ (zones at c/3, 2c/3, c).
    pub c: f64,
}

impl ShewhartDesign {
    /// A validated design.
    pub fn new(rules: Rules, c: f64) -> Result<ShewhartDesign, ChartError> {
        check_range("limit", c, 0.3, 20.0)?;
        Ok(ShewhartDesign { rules, c })
    }

    /// The design with in-control ARL `arl0`: zone limits scaled together;
    /// with rule 4, its run is first lengthened (from the given length) until
    /// the target is reachable at all.
    pub fn for_arl0(rules: Rules, arl0: f64) -> Result<ShewhartDesign, ChartError> {
        ShewhartDesign::for_arl_at(rules, arl0, 0.0)
    }

    /// The design whose ARL at mean shift `delta` is `arl0` (see
    /// [`EwmaDesign::for_arl_at`](super::ewma::EwmaDesign::for_arl_at)).
    pub fn for_arl_at(mut rules: Rules, arl0: f64, delta: f64) -> Result<ShewhartDesign, ChartError> {
        check_range("arl0", arl0, 1.5, 1e9)?;
        check_range("delta", delta, 0.0, 3.0)?;
        const C_MAX: f64 = 9.0;
        while rules.r4 && (ShewhartDesign { rules, c: C_MAX }).arl(delta) < arl0 {
            if rules.run >= 40 {
                return Err(ChartError::Unreachable { arl0 });
            }
            rules.run += 1;
        }
        let f = |c: f64| ShewhartDesign { rules, c }.arl(delta).ln() - arl0.ln();
        let c = brent(f, 0.5, C_MAX, 1e-10).ok_or(ChartError::Unreachable { arl0 })?;
        ShewhartDesign::new(rules, c)
    }

    /// Zone of x, or the side of a rule-1 signal.
    /// The bound (in σ, on the side of the signal) that the point which
    /// fired `rule` lies beyond: c for rule 1, the zone edges 2c/3 and c/3
    /// for rules 2 and 3, the centre line for rule 4's run.
    pub fn rule_limit(&self, rule: u8) -> f64 {
        match rule {
            2 => 2.0 * self.c / 3.0,
            3 => self.c / 3.0,
            4 => 0.0,
            _ => self.c,
        }
    }

    fn zone(&self, x: f64) -> Result<Zone, Direction> {
        let c = self.c;
        let a = x.abs();
        if a > c {
            return Err(if x > 0.0 { Direction::Up } else { Direction::Down });
        }
        let z = if a > 2.0 * c / 3.0 {
            3
        } else if a > c / 3.0 {
            2
        } else {
            1
        };
        Ok(if x > 0.0 { z } else { -z })
    }

    /// Probability of each zone −3..=3 (index zone+3; index 3 is unused)
    /// and of a rule-1 signal, for N(delta, 1).
    fn zone_probs(&self, delta: f64) -> [f64; 7] {
        let b = [self.c / 3.0, 2.0 * self.c / 3.0, self.c];
        let cdf = |x: f64| norm_cdf(x - delta);
        let mut p = [0.0; 7];
        p[4] = cdf(b[0]) - cdf(0.0);
        p[5] = cdf(b[1]) - cdf(b[0]);
        p[6] = cdf(b[2]) - cdf(b[1]);
        p[2] = cdf(0.0) - cdf(-b[0]);
        p[1] = cdf(-b[0]) - cdf(-b[1]);
        p[0] = cdf(-b[1]) - cdf(-b[2]);
        p
    }

    /// Exact zero-state ARL at mean shift `delta` (rule 1 alone: closed form).
    pub fn arl(&self, delta: f64) -> f64 {
        let p = self.zone_probs(delta);
        if !self.rules.r2 && !self.rules.r3 && !self.rules.r4 {
            return 1.0 / (norm_cdf(-self.c - delta) + norm_cdf(-self.c + delta));
        }
        let zones: [Zone; 6] = [-3, -2, -1, 1, 2, 3];
        let mut index: HashMap<RuleState, usize> = HashMap::new();
        let mut states = vec![RuleState::default()];
        index.insert(RuleState::default(), 0);
        let mut rows: Vec<Vec<(usize, f64)>> = Vec::new();
        let mut i = 0;
        while i < states.len() {
            let mut row = vec![(i, 1.0)];
            for z in zones {
                if let Ok(next) = states[i].step(z, self.rules) {
                    let j = *index.entry(next).or_insert_with(|| {
                        states.push(next);
                        states.len() - 1
                    });
                    let pz = p[(z + 3) as usize];
                    match row.iter_mut().find(|(c, _)| *c == j) {
                        Some(e) => e.1 -= pz,
                        None => row.push((j, -pz)),
                    }
                }
            }
            rows.push(row);
            i += 1;
        }
        let x = bicgstab(&Csr::from_rows(&rows), &vec![1.0; rows.len()], 1e-13, 100_000)
            .expect("the run-rule chain solves");
        x[0]
    }

    /// Number of reachable non-signal states of the rule chain.
    pub fn chain_states(&self) -> usize {
        let mut seen = std::collections::HashSet::from([RuleState::default()]);
        let mut stack = vec![RuleState::default()];
        while let Some(s) = stack.pop() {
            for z in [-3, -2, -1, 1, 2, 3] {
                if let Ok(n) = s.step(z, self.rules)
                    && seen.insert(n)
                {
                    stack.push(n);
                }
            }
        }
        seen.len()
    }
}

/// A running Shewhart chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shewhart {
    /// The design.
    pub design: ShewhartDesign,
    state: RuleState,
}

impl Shewhart {
    /// A chart at its zero state.
    pub fn new(design: ShewhartDesign) -> Shewhart {
        Shewhart {
            design,
            state: RuleState::default(),
        }
    }

    /// Adds an observation; on a signal the rule history restarts.
    pub fn observe(&mut self, x: f64) -> Result<Option<Signal>, ChartError> {
        check_finite(x)?;
        let fired = match self.design.zone(x) {
            Err(direction) => Some((1u8, direction)),
            Ok(z) => match self.state.step(z, self.design.rules) {
                Ok(next) => {
                    self.state = next;
                    None
                }
                Err(rule) => Some((rule, if z > 0 { Direction::Up } else { Direction::Down })),
            },
        };
        Ok(fired.map(|(rule, direction)| {
            self.state = RuleState::default();
            Signal {
                statistic: x,
                limit: self.design.rule_limit(rule),
                direction,
                rule: Some(rule),
            }
        }))
    }
}
