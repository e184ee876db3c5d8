//! agentdrift: learn what normal looks like for an LLM agent from a reference
//! run, then watch live sessions and raise statistically calibrated drift
//! events.
//!
//! Data flows one way: [`ingest`] (bytes → steps) → [`features`] (sessions →
//! numbers) → detectors → events → store/API. The statistical core is pure.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod auth;
pub mod baseline;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod features;
pub mod ingest;
pub mod inject;
pub mod model;
pub mod service;
pub mod spc;
pub mod stats;
pub mod store;
