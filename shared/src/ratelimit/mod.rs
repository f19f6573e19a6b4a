//! Rate limiting: limits keyed by client address, consumer, header or claim, with a
//! rule per tier, counted exactly across workers in the proxy's shared data.
//!
//! `algorithm` holds the arithmetic of the sliding window and the token bucket,
//! `table` the fixed table of counters in shared data, `decision` one request
//! against every limit and the answer, `alert` the limited-share alert.

pub mod alert;
pub mod algorithm;
pub mod config;
pub mod decision;
pub mod table;

pub use algorithm::{Algorithm, Quota, Rule};
pub use config::RateLimitSettings;
pub use decision::{decide, Decision, LimitResult, RequestFacts};
