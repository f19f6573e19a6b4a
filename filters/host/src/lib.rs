//! The proxy-wasm implementations of the policy crate's host traits, and small helpers
//! every gatehouse filter uses to read properties and keep metrics.

#![forbid(unsafe_code)]

use gatehouse_shared::host::{millis_since_epoch, Clock, RandomSource, SplitMix64};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::time::{SystemTime, UNIX_EPOCH};

/// The host's wall clock. A failed host call reads as the epoch, which makes every
/// elapsed time zero rather than failing a request.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(UNIX_EPOCH)
    }
}

/// WASI's random source: every call is a crossing into the host, so use it for
/// seeds and secrets, not per request. Should it ever fail, bytes come from a
/// generator seeded with the time.
#[derive(Debug)]
pub struct HostRandom {
    fallback: SplitMix64,
}

impl Default for HostRandom {
    fn default() -> Self {
        Self {
            fallback: SplitMix64::new(millis_since_epoch(HostClock.now())),
        }
    }
}

impl RandomSource for HostRandom {
    fn fill(&mut self, buffer: &mut [u8]) {
        if getrandom::fill(buffer).is_err() {
            self.fallback.fill(buffer);
        }
    }
}

/// A per-VM generator seeded once from the host's random source: unique values
/// (correlation ids, sampling draws) without a host call each. Predictable to
/// whoever sees enough of its output, so never for secrets.
pub fn seeded_generator() -> SplitMix64 {
    let mut seed = [0u8; 8];
    HostRandom::default().fill(&mut seed);
    SplitMix64::new(u64::from_le_bytes(seed))
}

/// A property as UTF-8 text (lossy); `None` when the host has no value.
pub fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// An integer property (the host encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    let array: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// Publishes a request attribute for later filters and Envoy's access log.
pub fn publish(name: &str, value: &str) {
    // A failure only means a later reader sees nothing; the request goes on.
    let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
}

/// A Prometheus counter or gauge at the admin `/stats/prometheus` endpoint, under
/// exactly the name given. Every VM defines the same name and shares the value.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    id: Option<u32>,
}

impl Metric {
    /// A counter; a host that refuses the definition gives a metric that ignores updates.
    pub fn counter(name: &str) -> Self {
        Self {
            id: hostcalls::define_metric(MetricType::Counter, name).ok(),
        }
    }

    /// A gauge, moved with `add` by every VM.
    pub fn gauge(name: &str) -> Self {
        Self {
            id: hostcalls::define_metric(MetricType::Gauge, name).ok(),
        }
    }

    /// Adds `delta` (negative only for gauges).
    pub fn add(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        if let Some(id) = self.id {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }
}

impl Metric {
    /// Sets a gauge to `value` (every VM writes the same shared gauge).
    pub fn set(&self, value: u64) {
        if let Some(id) = self.id {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// Converts a count to a metric delta, saturating.
pub fn delta(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
