//! The limited-share alert: every VM adds its counts to one ring of per-second
//! buckets in shared data; every VM evaluates it on its tick, and a change of state
//! is claimed by compare-and-swap, so exactly one VM decides each transition and
//! exactly one holds the lease to deliver each event (PagerDuty Events v2 shape).

use super::config::AlertSettings;
use crate::host::SharedStore;
use crate::window;
use serde::{Deserialize, Serialize};

/// Delivery attempts before an event is given up.
pub const MAX_ATTEMPTS: u32 = 20;
/// Longest pause between attempts.
pub const MAX_BACKOFF_MS: u64 = 30_000;

fn counts_key(instance: &str) -> String {
    format!("gatehouse.ratelimit.{instance}.alert.counts")
}

fn state_key(instance: &str) -> String {
    format!("gatehouse.ratelimit.{instance}.alert.state")
}

/// The alert's shared state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub firing: bool,
    /// Numbers the incident (its dedup key).
    pub incident: u64,
    /// The event waiting to be delivered.
    pub pending: Option<Action>,
    pub attempts: u32,
    /// Not before this moment (ms).
    pub next_ms: u64,
    /// A VM is delivering until this moment (ms).
    pub lease_ms: u64,
    /// The figures that caused the pending event.
    pub limited: u64,
    pub total: u64,
}

/// What an event asks of the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Trigger,
    Resolve,
}

/// An event this VM has claimed and must send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub incident: u64,
    pub action: Action,
    pub attempt: u32,
    pub body: String,
}

/// What a tick did, for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    pub transition: Option<Action>,
    pub delivery: Option<Delivery>,
    pub given_up: bool,
}

/// Creates the alert's shared keys, so that no later write has to create one (see
/// `host::create_if_absent`).
pub fn prepare(
    store: &dyn SharedStore,
    instance: &str,
    settings: &AlertSettings,
    now_ms: u64,
) -> Result<(), crate::host::StoreError> {
    let len = usize::try_from(settings.window_seconds).unwrap_or(60);
    let ring = window::Ring::empty(len, now_ms / 1000).encode();
    crate::host::create_if_absent(store, &counts_key(instance), &ring)?;
    let state = serde_json::to_vec(&AlertState::default()).unwrap_or_default();
    crate::host::create_if_absent(store, &state_key(instance), &state)?;
    Ok(())
}

/// Adds this VM's counts since the last tick to the ring. Returns false when the
/// store kept changing (the counts are kept for the next tick).
pub fn add_counts(
    store: &dyn SharedStore,
    instance: &str,
    settings: &AlertSettings,
    now_ms: u64,
    total: u64,
    limited: u64,
) -> bool {
    let len = usize::try_from(settings.window_seconds).unwrap_or(60);
    window::add(store, &counts_key(instance), len, now_ms, total, limited)
}

fn read_state(store: &dyn SharedStore, instance: &str) -> Option<(AlertState, Option<u32>)> {
    match store.get(&state_key(instance)) {
        Ok(Some((bytes, version))) => Some((
            serde_json::from_slice(&bytes).unwrap_or_default(),
            Some(version),
        )),
        Ok(None) => Some((AlertState::default(), None)),
        Err(_) => None,
    }
}

fn write_state(
    store: &dyn SharedStore,
    instance: &str,
    state: &AlertState,
    version: Option<u32>,
) -> bool {
    serde_json::to_vec(state)
        .ok()
        .is_some_and(|bytes| store.set(&state_key(instance), &bytes, version).is_ok())
}

/// Evaluates the window and, if an event is due and nobody is delivering it,
/// claims it for this VM.
pub fn tick(
    store: &dyn SharedStore,
    instance: &str,
    settings: &AlertSettings,
    now_ms: u64,
) -> TickReport {
    let mut report = TickReport::default();
    let len = usize::try_from(settings.window_seconds).unwrap_or(60);
    let (total, limited) = window::totals(store, &counts_key(instance), len, now_ms);
    let share = if total == 0 {
        0.0
    } else {
        limited as f64 * 100.0 / total as f64
    };

    let Some((mut state, version)) = read_state(store, instance) else {
        return report;
    };
    let before = state.clone();
    // A pending event that no attempt has been made for can be withdrawn: the
    // webhook never heard of it. Once an attempt was made, it may have arrived.
    let untried = state.attempts == 0;
    if !state.firing && total >= settings.min_requests && share > settings.trigger_percent {
        state.firing = true;
        state.pending = match state.pending {
            // Back over the threshold before the resolve went out: the same
            // incident is still open at the webhook, nothing to send.
            Some(Action::Resolve) if untried => None,
            // The resolve may have arrived: trigger the same incident again.
            Some(Action::Resolve) => Some(Action::Trigger),
            _ => {
                state.incident = state.incident.wrapping_add(1).max(now_ms);
                Some(Action::Trigger)
            }
        };
        report.transition = Some(Action::Trigger);
    } else if state.firing && share < settings.resolve_percent {
        state.firing = false;
        state.pending = match state.pending {
            // A trigger never attempted needs no resolve.
            Some(Action::Trigger) if untried => None,
            _ => Some(Action::Resolve),
        };
        report.transition = Some(Action::Resolve);
    }
    if report.transition.is_some() {
        state.attempts = 0;
        state.next_ms = now_ms;
        state.lease_ms = 0;
        state.limited = limited;
        state.total = total;
    }
    let due = state.pending.is_some() && now_ms >= state.next_ms && now_ms >= state.lease_ms;
    let mut claimed = None;
    if due {
        if state.attempts >= MAX_ATTEMPTS {
            state.pending = None;
            report.given_up = true;
        } else if let Some(action) = state.pending {
            state.attempts += 1;
            state.lease_ms = now_ms + settings.timeout_ms + 1000;
            claimed = Some(Delivery {
                incident: state.incident,
                action,
                attempt: state.attempts,
                body: event_body(instance, settings, &state, action),
            });
        }
    }
    if state != before {
        if write_state(store, instance, &state, version) {
            report.delivery = claimed;
        } else {
            // Another VM changed it first: it decides this time.
            report.transition = None;
            report.given_up = false;
        }
    }
    report
}

/// Records the answer to a delivery: done on success, retried later on failure.
pub fn delivered(
    store: &dyn SharedStore,
    instance: &str,
    delivery: &Delivery,
    success: bool,
    now_ms: u64,
) {
    for _ in 0..16 {
        let Some((mut state, version)) = read_state(store, instance) else {
            return;
        };
        if state.incident != delivery.incident || state.pending != Some(delivery.action) {
            return;
        }
        if success {
            state.pending = None;
        } else {
            let backoff = 1000u64
                .saturating_mul(1 << delivery.attempt.saturating_sub(1).min(15))
                .min(MAX_BACKOFF_MS);
            state.next_ms = now_ms + backoff;
        }
        state.lease_ms = 0;
        if write_state(store, instance, &state, version) {
            return;
        }
    }
}

/// The dedup key PagerDuty groups the trigger and the resolve by.
pub fn dedup_key(instance: &str, incident: u64) -> String {
    format!("gatehouse-ratelimit-{instance}-{incident}")
}

fn event_body(
    instance: &str,
    settings: &AlertSettings,
    state: &AlertState,
    action: Action,
) -> String {
    let dedup = dedup_key(instance, state.incident);
    match action {
        Action::Resolve => serde_json::json!({
            "routing_key": settings.routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        }),
        Action::Trigger => {
            let share = if state.total == 0 {
                0.0
            } else {
                (state.limited as f64 * 1000.0 / state.total as f64).round() / 10.0
            };
            serde_json::json!({
                "routing_key": settings.routing_key,
                "event_action": "trigger",
                "dedup_key": dedup,
                "payload": {
                    "summary": format!(
                        "gatehouse ratelimit {instance}: {share}% of {} requests limited over {} s (threshold {}%)",
                        state.total, settings.window_seconds, settings.trigger_percent
                    ),
                    "source": settings.source,
                    "severity": settings.severity,
                    "component": "gatehouse-ratelimit",
                    "group": instance,
                    "class": "rate_limited_share",
                    "custom_details": {
                        "limited": state.limited,
                        "total": state.total,
                        "share_percent": share,
                        "window_seconds": settings.window_seconds,
                        "trigger_percent": settings.trigger_percent,
                        "resolve_percent": settings.resolve_percent,
                    },
                },
            })
        }
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryStore;

    const T0: u64 = 1_800_000_000_000;

    fn settings() -> AlertSettings {
        AlertSettings {
            cluster: "pd".into(),
            path: "/v2/enqueue".into(),
            authority: "pd".into(),
            timeout_ms: 1000,
            routing_key: "rk".into(),
            trigger_percent: 5.0,
            resolve_percent: 2.0,
            window_seconds: 10,
            min_requests: 20,
            severity: "warning".into(),
            source: "gw".into(),
        }
    }

    #[test]
    fn two_vms_fire_once_deliver_once_and_resolve_once() {
        let store = MemoryStore::default();
        let settings = settings();
        prepare(&store, "edge", &settings, T0).unwrap();
        assert_eq!(store.entries.borrow().len(), 2);
        prepare(&store, "edge", &settings, T0).unwrap();
        // Under the minimum: nothing.
        assert!(add_counts(&store, "edge", &settings, T0, 10, 5));
        assert_eq!(tick(&store, "edge", &settings, T0).transition, None);
        // Over: the first VM to tick claims the trigger; the second sees it taken.
        assert!(add_counts(&store, "edge", &settings, T0 + 500, 90, 2));
        let first = tick(&store, "edge", &settings, T0 + 600);
        let second = tick(&store, "edge", &settings, T0 + 601);
        assert_eq!(first.transition, Some(Action::Trigger));
        let delivery = first.delivery.unwrap();
        assert_eq!(second, TickReport::default());
        let body: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["payload"]["custom_details"]["share_percent"], 7.0);
        assert_eq!(body["payload"]["custom_details"]["total"], 100);

        // The delivery fails: retried after a pause, by whichever VM ticks then.
        delivered(&store, "edge", &delivery, false, T0 + 700);
        assert_eq!(tick(&store, "edge", &settings, T0 + 1_000).delivery, None);
        let retry = tick(&store, "edge", &settings, T0 + 1_700)
            .delivery
            .unwrap();
        assert_eq!((retry.attempt, retry.incident), (2, delivery.incident));
        delivered(&store, "edge", &retry, true, T0 + 1_800);
        assert_eq!(
            tick(&store, "edge", &settings, T0 + 5_000),
            TickReport::default()
        );

        // The window slides past the limited requests: one resolve, same dedup key.
        let later = T0 + 12_000;
        let resolve = tick(&store, "edge", &settings, later);
        assert_eq!(resolve.transition, Some(Action::Resolve));
        let resolve = resolve.delivery.unwrap();
        let body: serde_json::Value = serde_json::from_str(&resolve.body).unwrap();
        assert_eq!(body["event_action"], "resolve");
        assert_eq!(body["dedup_key"], dedup_key("edge", delivery.incident));
        assert_eq!(
            tick(&store, "edge", &settings, later + 1),
            TickReport::default()
        );
        delivered(&store, "edge", &resolve, true, later + 2);
        assert_eq!(
            tick(&store, "edge", &settings, later + 3_000),
            TickReport::default()
        );
    }

    #[test]
    fn a_resolve_follows_every_trigger_that_may_have_arrived() {
        let store = MemoryStore::default();
        let settings = settings();
        add_counts(&store, "edge", &settings, T0, 100, 50);
        let trigger = tick(&store, "edge", &settings, T0).delivery.unwrap();
        // The share falls while the trigger is in flight: a resolve must follow it.
        let resolve = tick(&store, "edge", &settings, T0 + 12_000);
        assert_eq!(resolve.transition, Some(Action::Resolve));
        delivered(&store, "edge", &trigger, true, T0 + 12_001);
        let sent = tick(&store, "edge", &settings, T0 + 15_000)
            .delivery
            .unwrap();
        assert_eq!(sent.action, Action::Resolve);
        assert_eq!(sent.incident, trigger.incident);

        // Over the threshold again while that resolve is out: the same incident
        // is triggered again, never left open under an orphan key.
        add_counts(&store, "edge", &settings, T0 + 15_500, 100, 50);
        let again = tick(&store, "edge", &settings, T0 + 15_600);
        assert_eq!(again.transition, Some(Action::Trigger));
        let retrigger = again.delivery.unwrap_or_else(|| panic!("a trigger is due"));
        assert_eq!(
            (retrigger.action, retrigger.incident),
            (Action::Trigger, trigger.incident)
        );
        // The resolve's late failure changes nothing any more.
        delivered(&store, "edge", &sent, false, T0 + 15_700);
        let (state, _) = read_state(&store, "edge").unwrap();
        assert_eq!(state.pending, Some(Action::Trigger));
    }

    #[test]
    fn a_lost_vm_lease_expires_and_an_event_is_given_up_after_the_attempts() {
        let store = MemoryStore::default();
        let settings = settings();
        add_counts(&store, "edge", &settings, T0, 100, 50);
        let first = tick(&store, "edge", &settings, T0).delivery.unwrap();
        // No answer ever comes: the lease (timeout + 1 s) runs out, another VM retries.
        assert_eq!(tick(&store, "edge", &settings, T0 + 1_500).delivery, None);
        let again = tick(&store, "edge", &settings, T0 + 2_001)
            .delivery
            .unwrap();
        assert_eq!(again.attempt, first.attempt + 1);
        let mut now = T0 + 2_001;
        let mut last = again;
        let mut given_up = false;
        for _ in 0..100 {
            delivered(&store, "edge", &last, false, now);
            now += MAX_BACKOFF_MS;
            // Keep the share high so the alert stays on.
            add_counts(&store, "edge", &settings, now, 100, 50);
            let report = tick(&store, "edge", &settings, now);
            if report.given_up {
                given_up = true;
                break;
            }
            last = report.delivery.unwrap();
        }
        assert!(given_up);
        assert!(last.attempt <= MAX_ATTEMPTS);
    }
}
