//! What the traffic filter shares between workers: each target's circuit breaker
//! and the health gate's rollbacks, as small JSON values in shared data changed by
//! compare-and-swap, and each target's answers per second (`crate::window`).

use super::config::{BreakerSettings, HealthGate};
use crate::host::{SharedStore, StoreError};
use serde::{Deserialize, Serialize};

/// Shared-data keys of a route's target.
pub fn key(instance: &str, route: &str, target: &str, what: &str) -> String {
    format!("gatehouse.traffic.{instance}.{route}.{target}.{what}")
}

/// A breaker's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// A circuit breaker's shared state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    pub phase: Phase,
    /// Failures in a row while closed.
    pub consecutive: u32,
    /// When it last opened (ms).
    pub opened_ms: u64,
    /// When it last closed (ms): the failure rate counts from then.
    pub closed_ms: u64,
    pub probes_started: u32,
    pub probes_ok: u32,
}

/// What the breaker says to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// Passes as one of the half-open probes.
    Probe,
    /// Refused; retry after this many ms.
    Reject {
        retry_after_ms: u64,
    },
}

/// A change of phase, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Breaker {
    /// Admits or refuses a request at `now_ms` (moving from open to half-open when
    /// the open time has passed).
    pub fn admit(&mut self, settings: &BreakerSettings, now_ms: u64) -> Admission {
        if self.phase == Phase::Open {
            let reopen = self.opened_ms.saturating_add(settings.open_ms);
            if now_ms < reopen {
                return Admission::Reject {
                    retry_after_ms: reopen - now_ms,
                };
            }
            self.phase = Phase::HalfOpen;
            self.probes_started = 0;
            self.probes_ok = 0;
        }
        match self.phase {
            Phase::HalfOpen if self.probes_started < settings.half_open_probes => {
                self.probes_started += 1;
                Admission::Probe
            }
            // Every probe is out: wait for their answers.
            Phase::HalfOpen => Admission::Reject {
                retry_after_ms: 1000,
            },
            _ => Admission::Pass,
        }
    }

    /// Records an answer. Answers to requests admitted before the breaker opened
    /// change nothing while it is open or half-open.
    pub fn record(
        &mut self,
        settings: &BreakerSettings,
        success: bool,
        probe: bool,
        now_ms: u64,
    ) -> Option<Transition> {
        match (self.phase, probe, success) {
            (Phase::Closed, _, true) => {
                self.consecutive = 0;
                None
            }
            (Phase::Closed, _, false) => {
                self.consecutive = self.consecutive.saturating_add(1);
                (settings.consecutive_failures > 0
                    && self.consecutive >= settings.consecutive_failures)
                    .then(|| self.open(now_ms))
            }
            (Phase::HalfOpen, true, true) => {
                self.probes_ok += 1;
                (self.probes_ok >= settings.half_open_probes).then(|| {
                    *self = Self {
                        closed_ms: now_ms,
                        ..Self::default()
                    };
                    Transition::Closed
                })
            }
            (Phase::HalfOpen, true, false) => Some(self.open(now_ms)),
            _ => None,
        }
    }

    /// Opens on the failure rate, when closed: `answers` and `failures` counted
    /// since it last closed, over the window.
    pub fn check_rate(
        &mut self,
        settings: &BreakerSettings,
        answers: u64,
        failures: u64,
        now_ms: u64,
    ) -> Option<Transition> {
        let over = settings.failure_percent > 0
            && answers >= settings.min_requests
            && failures * 100 > u64::from(settings.failure_percent) * answers;
        (self.phase == Phase::Closed && over).then(|| self.open(now_ms))
    }

    fn open(&mut self, now_ms: u64) -> Transition {
        self.phase = Phase::Open;
        self.opened_ms = now_ms;
        self.consecutive = 0;
        self.probes_started = 0;
        self.probes_ok = 0;
        Transition::Opened
    }
}

/// A rollback of one target to its route's stable target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// It holds until this moment (ms)...
    pub until_ms: u64,
    /// ... and only for the route definition it was decided under.
    pub definition: u64,
    pub error_percent: f64,
    pub answers: u64,
}

impl Rollback {
    pub fn holds(&self, definition: u64, now_ms: u64) -> bool {
        self.definition == definition && now_ms < self.until_ms
    }
}

/// Whether the health gate sends the target back: its error share over the window
/// (counted since the last rollback ended) is over the threshold with enough
/// answers.
pub fn gate_trips(gate: &HealthGate, answers: u64, failures: u64) -> Option<f64> {
    if answers < gate.min_requests || answers == 0 {
        return None;
    }
    let percent = failures as f64 * 100.0 / answers as f64;
    (percent > gate.max_error_percent).then_some(percent)
}

/// Reads a JSON value and its version; a missing or unreadable value is the default.
pub fn read<T: Default + for<'de> Deserialize<'de>>(
    store: &dyn SharedStore,
    key: &str,
) -> Result<(T, Option<u32>), StoreError> {
    Ok(match store.get(key)? {
        Some((bytes, version)) => (
            serde_json::from_slice(&bytes).unwrap_or_default(),
            Some(version),
        ),
        None => (T::default(), None),
    })
}

/// Changes a JSON value with `change` under compare-and-swap, retried; returns what
/// `change` returned for the write that succeeded, with the value written.
pub fn update<T, R>(
    store: &dyn SharedStore,
    key: &str,
    retries: u32,
    mut change: impl FnMut(&mut T) -> R,
) -> Option<(R, T)>
where
    T: Default + Clone + PartialEq + Serialize + for<'de> Deserialize<'de>,
{
    for _ in 0..retries.max(1) {
        let (mut value, version) = read::<T>(store, key).ok()?;
        let before = value.clone();
        let result = change(&mut value);
        if value == before {
            return Some((result, value));
        }
        let bytes = serde_json::to_vec(&value).ok()?;
        match store.set(key, &bytes, version) {
            Ok(()) => return Some((result, value)),
            Err(StoreError::VersionMismatch) => continue,
            Err(StoreError::Unavailable) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryStore;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_percent: 50,
            window_seconds: 10,
            min_requests: 10,
            open_ms: 5_000,
            half_open_probes: 2,
        }
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let settings = settings();
        let mut breaker = Breaker::default();
        assert_eq!(breaker.record(&settings, false, false, 0), None);
        assert_eq!(
            breaker.record(&settings, true, false, 1),
            None,
            "a success resets the run"
        );
        breaker.record(&settings, false, false, 2);
        breaker.record(&settings, false, false, 3);
        assert_eq!(
            breaker.record(&settings, false, false, 4),
            Some(Transition::Opened)
        );
        assert_eq!(
            breaker.admit(&settings, 1_004),
            Admission::Reject {
                retry_after_ms: 4_000
            }
        );
        // After the open time: two probes, then the others wait.
        assert_eq!(breaker.admit(&settings, 5_004), Admission::Probe);
        assert_eq!(breaker.admit(&settings, 5_005), Admission::Probe);
        assert!(matches!(
            breaker.admit(&settings, 5_006),
            Admission::Reject { .. }
        ));
        assert_eq!(breaker.record(&settings, true, true, 5_010), None);
        assert_eq!(
            breaker.record(&settings, true, true, 5_011),
            Some(Transition::Closed)
        );
        assert_eq!(breaker.admit(&settings, 5_012), Admission::Pass);
        assert_eq!(breaker.closed_ms, 5_011);
    }

    #[test]
    fn a_failing_probe_opens_again_and_late_answers_change_nothing() {
        let settings = settings();
        let mut breaker = Breaker::default();
        assert_eq!(
            breaker.check_rate(&settings, 9, 9, 0),
            None,
            "too few answers"
        );
        assert_eq!(
            breaker.check_rate(&settings, 10, 5, 0),
            None,
            "not over half"
        );
        assert_eq!(
            breaker.check_rate(&settings, 10, 6, 0),
            Some(Transition::Opened)
        );
        assert_eq!(breaker.record(&settings, true, false, 10), None);
        assert_eq!(breaker.phase, Phase::Open);
        assert_eq!(breaker.admit(&settings, 5_000), Admission::Probe);
        assert_eq!(
            breaker.record(&settings, false, true, 5_100),
            Some(Transition::Opened)
        );
        assert_eq!(breaker.opened_ms, 5_100);
    }

    #[test]
    fn updates_are_compare_and_swap_and_rollbacks_expire() {
        let store = MemoryStore::default();
        let settings = settings();
        for now in 0..3 {
            update(&store, "b", 4, |breaker: &mut Breaker| {
                breaker.record(&settings, false, false, now)
            });
        }
        let (breaker, _) = read::<Breaker>(&store, "b").unwrap();
        assert_eq!(breaker.phase, Phase::Open);
        store.interfere.set(10);
        assert!(update(&store, "b", 4, |breaker: &mut Breaker| breaker
            .consecutive +=
            1)
        .is_none());
        let rollback = Rollback {
            until_ms: 100,
            definition: 7,
            error_percent: 50.0,
            answers: 20,
        };
        assert!(rollback.holds(7, 99));
        assert!(!rollback.holds(7, 100));
        assert!(!rollback.holds(8, 50));
    }
}
