//! Features: sessions → numbers. Pure; the same code serves training and
//! live scoring.

pub mod sequence;
pub mod session;
pub mod text;

pub use session::{
    Feature, LEXICON_FEATURES, N_FEATURES, OutputObs, SessionAccumulator, SessionFeatures, StepObs, session_features,
};
pub use text::{Lexicons, TextScores};
