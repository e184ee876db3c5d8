//! Numerical building blocks, statrs-style: one concept per file, validated
//! inputs, tests against closed forms and published values. Pure.

pub mod dist;
pub mod ecdf;
pub mod gtest;
pub mod hash;
pub mod linalg;
pub mod pit;
pub mod quadrature;
pub mod ranks;
pub mod root;

pub use ecdf::Ecdf;
