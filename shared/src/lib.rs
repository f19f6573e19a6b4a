//! The gatehouse policy crate.
//!
//! Every decision the gatehouse filters make lives here, in plain Rust with no
//! dependency on a proxy-wasm host, so that it is tested natively. The filter crates
//! read from the host, call into this crate, and write the answer back.

#![forbid(unsafe_code)]

pub mod attributes;
pub mod audit;
pub mod auth;
pub mod client_address;
pub mod config;
pub mod correlation;
pub mod host;
pub mod jwt;
pub mod path;
pub mod ratelimit;
pub mod redact;
pub mod time;
pub mod traffic;
pub mod window;
