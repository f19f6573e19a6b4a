//! The auth filter's policy: configuration, credentials, rules and the decision.

pub mod cache;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod identity;
pub mod keys;
pub mod rules;
#[cfg(test)]
mod tests;

pub use cache::TokenCache;
pub use config::AuthSettings;
pub use decision::{
    decide, Denial, Identity, KeyLookup, KeyWait, ProviderKeys, RequestView, Verdict,
};
