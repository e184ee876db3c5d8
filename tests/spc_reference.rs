//! Chart designs and count tests against the independent reference values in
//! `../shared/reference/` (computed in Python/scipy by published methods and
//! cross-checked against published tables; see that folder's README for the
//! tolerances used here).

use crate::support::{num, read_csv, rel, shared};
use agentdrift::spc::cusum::{self, CusumDesign};
use agentdrift::spc::ewma::{self, EwmaDesign, EwmaLimits};
use agentdrift::spc::hotelling::{T2Case, t2_ucl};
use agentdrift::spc::shewhart::{Rules, ShewhartDesign};
use agentdrift::stats::gtest::markov_gof;
use ndarray::Array2;

fn reference(name: &str) -> Vec<std::collections::HashMap<String, String>> {
    read_csv(&shared().join("reference").join(name))
}

#[test]
fn ewma_markov_chain_matches_reference_chain_of_same_size() {
    for r in reference("ewma_arl.csv") {
        let (lambda, h, delta) = (
            num(&r, "lambda").unwrap(),
            num(&r, "limit_h").unwrap(),
            num(&r, "delta").unwrap(),
        );
        for n in [201usize, 401] {
            let got = ewma::arl_markov(lambda, h, delta, n);
            let want = num(&r, &format!("arl_mc_N{n}")).unwrap();
            // Same discretisation: README expects agreement to ~1e-9.
            assert!(rel(got, want) < 1e-8, "λ={lambda} δ={delta} N={n}: {got} vs {want}");
        }
    }
}

#[test]
fn ewma_nystrom_matches_reference_and_designs_reproduce_l() {
    for r in reference("ewma_arl.csv") {
        let (lambda, h, delta) = (
            num(&r, "lambda").unwrap(),
            num(&r, "limit_h").unwrap(),
            num(&r, "delta").unwrap(),
        );
        let got = ewma::arl_nystrom(lambda, h, delta, ewma::NYSTROM_NODES);
        let want = num(&r, "arl_reference").unwrap();
        assert!(rel(got, want) < 1e-6, "λ={lambda} δ={delta}: {got} vs {want}");
        // The design's own node count (fewer nodes for wider kernels) is as accurate.
        let d = EwmaDesign::new(lambda, num(&r, "L").unwrap(), EwmaLimits::Asymptotic).unwrap();
        assert!(
            rel(d.arl(delta), want) < 1e-6,
            "design nodes λ={lambda} δ={delta}: {} vs {want}",
            d.arl(delta)
        );
        if delta == 0.0 {
            let d = EwmaDesign::for_arl0(lambda, num(&r, "arl0_target").unwrap(), EwmaLimits::Asymptotic).unwrap();
            let l = num(&r, "L").unwrap();
            assert!((d.l - l).abs() < 1e-7, "λ={lambda}: L {} vs {l}", d.l);
        }
    }
}

#[test]
fn ewma_published_tables() {
    for r in reference("ewma_published_crosscheck.csv") {
        let (lambda, l, delta) = (
            num(&r, "lambda").unwrap(),
            num(&r, "L").unwrap(),
            num(&r, "delta").unwrap(),
        );
        let d = EwmaDesign::new(lambda, l, EwmaLimits::Asymptotic).unwrap();
        let got = d.arl(delta);
        assert!(rel(got, num(&r, "arl_nystrom_gl200").unwrap()) < 1e-6, "{r:?}: {got}");
        // Published tables print 3-4 significant figures.
        assert!(rel(got, num(&r, "published_arl").unwrap()) < 2.5e-3, "{r:?}: {got}");
    }
}

#[test]
fn cusum_chains_nystrom_and_solved_limits_match_reference() {
    for r in reference("cusum_arl.csv") {
        let (k, h, delta) = (num(&r, "k").unwrap(), num(&r, "h").unwrap(), num(&r, "delta").unwrap());
        for t in [100usize, 200] {
            let got = cusum::two_sided(cusum::arl1_markov(k, h, delta, t), cusum::arl1_markov(k, h, -delta, t));
            let want = num(&r, &format!("arl2_mc_t{t}")).unwrap();
            assert!(rel(got, want) < 1e-8, "k={k} h={h} δ={delta} t={t}: {got} vs {want}");
        }
        let d = CusumDesign::new(k, h, 0.0).unwrap();
        let got = d.arl(delta);
        let want = num(&r, "arl2_reference").unwrap();
        assert!(rel(got, want) < 1e-6, "k={k} h={h} δ={delta}: {got} vs {want}");
        if let Some(up) = num(&r, "arl1_upper_ref") {
            let got = cusum::arl1_nystrom(k, h, delta, cusum::NYSTROM_NODES);
            assert!(rel(got, up) < 1e-6, "one-sided k={k} h={h} δ={delta}: {got} vs {up}");
        }
        let source = r["h_source"].clone();
        if let Some(target) = source.strip_prefix("solved_arl0=")
            && delta == 0.0
        {
            let d = CusumDesign::for_arl0(k, target.parse().unwrap(), 0.0).unwrap();
            assert!((d.h - h).abs() < 1e-7, "k={k}: h {} vs {h}", d.h);
        }
    }
}

#[test]
fn cusum_published_tables() {
    for r in reference("cusum_published_crosscheck.csv") {
        let (k, h, delta) = (num(&r, "k").unwrap(), num(&r, "h").unwrap(), num(&r, "delta").unwrap());
        let got = if r["sided"] == "one" {
            cusum::arl1_nystrom(k, h, delta, cusum::NYSTROM_NODES)
        } else {
            CusumDesign::new(k, h, 0.0).unwrap().arl(delta)
        };
        assert!(rel(got, num(&r, "arl_nystrom_gl120").unwrap()) < 1e-6, "{r:?}: {got}");
        // Waldmann's 117.4 comes from bounds (README); every other cell agrees to its printed digits.
        let tol = if r["source"].starts_with("Waldmann1986 T1") {
            2e-3
        } else {
            2.5e-3
        };
        assert!(rel(got, num(&r, "published_arl").unwrap()) < tol, "{r:?}: {got}");
    }
}

#[test]
fn shewhart_run_rules_exact_arl() {
    for r in reference("shewhart_we_arl_exact.csv") {
        let rules = Rules::parse(&r["rules"]).unwrap();
        let delta = num(&r, "delta").unwrap();
        let got = ShewhartDesign::new(rules, 3.0).unwrap().arl(delta);
        let want = num(&r, "arl_exact_markov").unwrap();
        assert!(
            rel(got, want) < 1e-7,
            "rules {} δ={delta}: {got} vs {want}",
            rules.name()
        );
    }
    // The Monte Carlo rows agree with the exact values within their standard errors.
    for r in reference("shewhart_we_arl_sim.csv") {
        let rules = Rules::parse(&r["rules"]).unwrap();
        let got = ShewhartDesign::new(rules, 3.0).unwrap().arl(num(&r, "delta").unwrap());
        let z = (num(&r, "arl_sim_mean").unwrap() - got) / num(&r, "arl_sim_se").unwrap();
        assert!(z.abs() < 3.0, "{r:?}: exact {got}");
    }
}

#[test]
fn hotelling_limits() {
    for r in reference("hotelling_t2_ucl.csv") {
        let p = num(&r, "p").unwrap() as u32;
        let alpha = num(&r, "alpha").unwrap();
        let case = match r["case"].as_str() {
            "known" => T2Case::Known,
            "estimated_phase2" => T2Case::Phase2 {
                m: num(&r, "m").unwrap() as u32,
            },
            "estimated_phase1" => T2Case::Phase1 {
                m: num(&r, "m").unwrap() as u32,
            },
            other => panic!("case {other}"),
        };
        let got = t2_ucl(p, alpha, case).unwrap();
        let want = num(&r, "ucl").unwrap();
        assert!(rel(got, want) < 1e-8, "{r:?}: {got}");
    }
}

#[test]
fn markov_g_tests() {
    let cells = reference("markov_test_matrices.csv");
    for r in reference("markov_test_results.csv") {
        let example = &r["example"];
        let k = num(&r, "n_states").unwrap() as usize;
        let mut reference_counts = Array2::<f64>::zeros((k, k));
        let mut observed = Array2::<f64>::zeros((k, k));
        for c in cells.iter().filter(|c| &c["example"] == example) {
            let (i, j) = (num(c, "row_from").unwrap() as usize, num(c, "col_to").unwrap() as usize);
            reference_counts[[i, j]] = num(c, "reference_count").unwrap();
            observed[[i, j]] = num(c, "observed_count").unwrap();
        }
        let t = markov_gof(&reference_counts, &observed, num(&r, "smoothing_alpha").unwrap());
        let g = num(&r, "G").unwrap();
        if g.is_infinite() {
            assert!(t.g.is_infinite() && t.p_value == 0.0, "{example}");
        } else {
            assert!(rel(t.g, g) < 1e-8, "{example}: G {} vs {g}", t.g);
            assert!(
                rel(t.p_value, num(&r, "p_value_G").unwrap()) < 1e-7,
                "{example}: p {}",
                t.p_value
            );
            assert!(
                rel(t.x2, num(&r, "pearson_X2").unwrap()) < 1e-8,
                "{example}: X2 {}",
                t.x2
            );
            assert!(
                rel(t.p_value_x2, num(&r, "p_value_X2").unwrap()) < 1e-6,
                "{example}: pX2 {}",
                t.p_value_x2
            );
        }
        assert_eq!(t.df, num(&r, "df").unwrap(), "{example}");
        assert_eq!(t.rows_used as f64, num(&r, "n_rows_used").unwrap(), "{example}");
        assert_eq!(t.cells_used as f64, num(&r, "n_cells_used").unwrap(), "{example}");
    }
}
