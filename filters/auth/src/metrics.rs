//! The auth filter's metrics.

use gatehouse_host::Metric;

#[derive(Debug, Clone, Copy)]
pub struct AuthMetrics {
    pub allowed: Metric,
    pub denied: Metric,
    pub shadow_denied: Metric,
    pub key_fetches: Metric,
    pub key_fetch_failures: Metric,
    pub key_waits: Metric,
    pub key_wait_timeouts: Metric,
    /// Seconds since the oldest of the filter's fetched key sets was loaded.
    pub key_age: Metric,
}

impl AuthMetrics {
    pub fn define() -> Self {
        Self {
            allowed: Metric::counter("gatehouse_auth_allowed_total"),
            denied: Metric::counter("gatehouse_auth_denied_total"),
            shadow_denied: Metric::counter("gatehouse_auth_shadow_denied_total"),
            key_fetches: Metric::counter("gatehouse_auth_key_fetches_total"),
            key_fetch_failures: Metric::counter("gatehouse_auth_key_fetch_failures_total"),
            key_waits: Metric::counter("gatehouse_auth_key_waits_total"),
            key_wait_timeouts: Metric::counter("gatehouse_auth_key_wait_timeouts_total"),
            key_age: Metric::gauge("gatehouse_auth_key_age_seconds"),
        }
    }
}
