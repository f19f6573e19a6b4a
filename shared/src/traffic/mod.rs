//! Traffic selection: weighted and sticky choice of a backend target per route,
//! schedules, overrides, mirroring marks, path rewrites, the health gate's
//! rollbacks and per-target circuit breakers.
//!
//! `config` parses and checks, `select` chooses a target for a request, `state`
//! holds what workers share (breakers, rollbacks).

pub mod config;
pub mod select;
pub mod state;

pub use config::TrafficSettings;
pub use select::{choose, Choice, Reason, RequestFacts};
