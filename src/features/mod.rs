//! Features: sessions → numbers. Pure; the same code serves training and
//! live scoring.

pub mod grounding;
pub mod sequence;
pub mod session;
mod state;
pub mod taxonomy;
pub mod text;

use crate::model::PriceTable;
use serde::{Deserialize, Serialize};

/// A rule file a baseline was trained with (taxonomy, grounding), stored in
/// it whole so scoring measures exactly as training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSource {
    /// The file's `version`.
    pub version: String,
    /// SHA-256 of `text`.
    pub sha256: String,
    /// The whole file.
    pub text: String,
}

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
    /// Claim extraction and grounding rules.
    pub grounding: &'a Grounding,
}

impl<'a> Rules<'a> {
    /// These prices and this taxonomy with the shipped lexicons.
    pub fn new(prices: &'a PriceTable, taxonomy: &'a Taxonomy) -> Rules<'a> {
        Rules {
            prices,
            lexicons: Lexicons::builtin(),
            taxonomy,
            grounding: Grounding::builtin(),
        }
    }

    /// The same with these grounding rules.
    pub fn with_grounding(self, grounding: &'a Grounding) -> Rules<'a> {
        Rules { grounding, ..self }
    }

    /// These prices with the shipped lexicons and taxonomy.
    pub fn builtin(prices: &'a PriceTable) -> Rules<'a> {
        Rules::new(prices, Taxonomy::builtin())
    }
}

pub use grounding::{ClaimKind, Contradiction, Grounding, GroundingObs};
pub use session::{
    Feature, LENGTH_BANDS, LEXICON_FEATURES, LONG_SESSION_MESSAGES, N_FEATURES, OutputObs, SessionAccumulator,
    SessionFeatures, StepObs, length_band, session_features,
};
pub use taxonomy::Taxonomy;
pub use text::{Lexicons, TextScores};
