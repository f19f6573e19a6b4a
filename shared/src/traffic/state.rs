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
    /// When the current half-open round began (ms); a round whose probes never
    /// answer (the clients went away) is started again after the open time.
    #[serde(default)]
    pub half_open_ms: u64,
    /// Numbers the half-open rounds, so a late answer to an old probe counts nothing.
    #[serde(default)]
    pub round: u32,
}

/// What the breaker says to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// Passes as one of the half-open probes of this round.
    Probe {
        round: u32,
    },
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
            self.start_round(now_ms);
        } else if self.phase == Phase::HalfOpen
            && self.probes_started >= settings.half_open_probes
            && now_ms >= self.half_open_ms.saturating_add(settings.open_ms)
        {
            // The round's probes never all answered: probe again.
            self.start_round(now_ms);
        }
        match self.phase {
            Phase::HalfOpen if self.probes_started < settings.half_open_probes => {
                self.probes_started += 1;
                Admission::Probe { round: self.round }
            }
            // Every probe is out: wait for their answers.
            Phase::HalfOpen => Admission::Reject {
                retry_after_ms: 1000,
            },
            _ => Admission::Pass,
        }
    }

    fn start_round(&mut self, now_ms: u64) {
        self.phase = Phase::HalfOpen;
        self.probes_started = 0;
        self.probes_ok = 0;
        self.half_open_ms = now_ms;
        self.round = self.round.wrapping_add(1);
    }

    /// Records an answer; `probe` is the round of a half-open probe. Answers to
    /// requests admitted before the breaker opened, or to probes of an earlier
    /// round, change nothing while it is open or half-open.
    pub fn record(
        &mut self,
        settings: &BreakerSettings,
        success: bool,
        probe: Option<u32>,
        now_ms: u64,
    ) -> Option<Transition> {
        let probe = probe.is_some_and(|round| round == self.round);
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
                        round: self.round,
                        ..Self::default()
                    };
                    Transition::Closed
                })
            }
            (Phase::HalfOpen, true, false) => Some(self.open(now_ms)),
            _ => None,
        }
    }

    /// Gives back the probe slot of a probe whose client went away before an answer,
    /// so that another request can probe (a client cannot hold the breaker open).
    pub fn release_probe(&mut self, round: u32) {
        if self.phase == Phase::HalfOpen && self.round == round {
            self.probes_started = self.probes_started.saturating_sub(1);
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
        assert_eq!(breaker.record(&settings, false, None, 0), None);
        let reset = breaker.record(&settings, true, None, 1);
        assert_eq!(reset, None, "a success resets the run");
        breaker.record(&settings, false, None, 2);
        breaker.record(&settings, false, None, 3);
        let opened = breaker.record(&settings, false, None, 4);
        assert_eq!(opened, Some(Transition::Opened));
        let early = breaker.admit(&settings, 1_004);
        assert_eq!(
            early,
            Admission::Reject {
                retry_after_ms: 4_000
            }
        );
        // After the open time: two probes, then the others wait.
        let round = breaker.round + 1;
        assert_eq!(breaker.admit(&settings, 5_004), Admission::Probe { round });
        assert_eq!(breaker.admit(&settings, 5_005), Admission::Probe { round });
        let waiting = breaker.admit(&settings, 5_006);
        assert!(matches!(waiting, Admission::Reject { .. }));
        let old = breaker.record(&settings, true, Some(round - 1), 5_009);
        assert_eq!(old, None, "an answer from an older round");
        assert_eq!(breaker.probes_ok, 0);
        assert_eq!(breaker.record(&settings, true, Some(round), 5_010), None);
        let closed = breaker.record(&settings, true, Some(round), 5_011);
        assert_eq!(closed, Some(Transition::Closed));
        assert_eq!(breaker.admit(&settings, 5_012), Admission::Pass);
        assert_eq!(breaker.closed_ms, 5_011);
    }

    #[test]
    fn a_failing_probe_opens_again_and_late_answers_change_nothing() {
        let settings = settings();
        let mut breaker = Breaker::default();
        let few = breaker.check_rate(&settings, 9, 9, 0);
        assert_eq!(few, None, "too few answers");
        let half = breaker.check_rate(&settings, 10, 5, 0);
        assert_eq!(half, None, "not over half");
        let over = breaker.check_rate(&settings, 10, 6, 0);
        assert_eq!(over, Some(Transition::Opened));
        assert_eq!(breaker.record(&settings, true, None, 10), None);
        assert_eq!(breaker.phase, Phase::Open);
        let Admission::Probe { round } = breaker.admit(&settings, 5_000) else {
            panic!("a probe after the open time");
        };
        let failed = breaker.record(&settings, false, Some(round), 5_100);
        assert_eq!(failed, Some(Transition::Opened));
        assert_eq!(breaker.opened_ms, 5_100);
    }

    #[test]
    fn probes_that_never_answer_do_not_hold_the_breaker_half_open() {
        let settings = settings();
        let mut breaker = Breaker::default();
        breaker.check_rate(&settings, 10, 10, 0);
        let probe = |breaker: &mut Breaker, now| {
            matches!(breaker.admit(&settings, now), Admission::Probe { .. })
        };
        assert!(probe(&mut breaker, 5_000));
        assert!(probe(&mut breaker, 5_001));
        // Neither probe's client waited for an answer.
        assert!(!probe(&mut breaker, 9_999));
        let Admission::Probe { round } = breaker.admit(&settings, 10_001) else {
            panic!("a new round of probes after the open time");
        };
        assert_eq!(breaker.record(&settings, true, Some(round), 10_002), None);
        assert!(probe(&mut breaker, 10_003));
        // A probe whose client went away gives its place to another request.
        assert!(!probe(&mut breaker, 10_004));
        breaker.release_probe(round);
        assert!(probe(&mut breaker, 10_005));
        breaker.release_probe(round - 1);
        assert!(
            !probe(&mut breaker, 10_006),
            "an old round's release changes nothing"
        );
    }

    #[test]
    fn updates_are_compare_and_swap_and_rollbacks_expire() {
        let store = MemoryStore::default();
        let settings = settings();
        for now in 0..3 {
            update(&store, "b", 4, |breaker: &mut Breaker| {
                breaker.record(&settings, false, None, now)
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
