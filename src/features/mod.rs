//! Features: sessions → numbers. Pure; the same code serves training and
//! live scoring.

pub mod sequence;
pub mod session;
mod state;
pub mod taxonomy;
pub mod text;

use crate::model::PriceTable;

/// What measuring a session needs besides its steps, in one value so that
/// training and scoring measure with the same prices, lexicons and rules.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// Model and tool prices, context windows.
    pub prices: &'a PriceTable,
    /// Tone and confidence lexicons.
    pub lexicons: &'a Lexicons,
    /// Error-class, escalation and state rules.
    pub taxonomy: &'a Taxonomy,
}

impl<'a> Rules<'a> {
    /// These prices and this taxonomy with the shipped lexicons.
    pub fn new(prices: &'a PriceTable, taxonomy: &'a Taxonomy) -> Rules<'a> {
        Rules {
            prices,
            lexicons: Lexicons::builtin(),
            taxonomy,
        }
    }

    /// These prices with the shipped lexicons and taxonomy.
    pub fn builtin(prices: &'a PriceTable) -> Rules<'a> {
        Rules::new(prices, Taxonomy::builtin())
    }
}

pub use session::{
    Feature, LENGTH_BANDS, LEXICON_FEATURES, LONG_SESSION_MESSAGES, N_FEATURES, OutputObs, SessionAccumulator,
    SessionFeatures, StepObs, length_band, session_features,
};
pub use taxonomy::{Taxonomy, TaxonomySource};
pub use text::{Lexicons, TextScores};
