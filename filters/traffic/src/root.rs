//! The root context: configuration, and the tick that shares each VM's answer
//! counts, refreshes the breakers and rollbacks every request consults, runs the
//! health gate and keeps the metrics.

use crate::store::HostStore;
use crate::stream::TrafficStream;
use gatehouse_host::{seeded_generator, HostClock, Metric};
use gatehouse_shared::host::{create_if_absent, Clock, SplitMix64};
use gatehouse_shared::traffic::config::{Sticky, TrafficSettings};
use gatehouse_shared::traffic::state::{self, Breaker, Rollback, Transition};
use gatehouse_shared::window;
use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// How often each VM shares its counts and refreshes what requests consult.
const TICK: Duration = Duration::from_millis(100);
/// Compare-and-swap attempts for shared state.
pub const RETRIES: u32 = 16;

/// Per route and target: counts kept in the VM between ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub requests: u64,
    pub answers: u64,
    pub failures: u64,
    pub mirrored: u64,
    pub rejected: u64,
    pub opened: u64,
}

#[derive(Debug, Clone, Copy)]
struct TargetMetrics {
    requests: Metric,
    failures: Metric,
    mirrored: Metric,
    rejected: Metric,
    opened: Metric,
}

/// What one VM knows: settings, the latest breaker and rollback states, counts.
pub struct VmState {
    pub settings: TrafficSettings,
    pub random: SplitMix64,
    /// Whether requests need the auth filter's attribute / the client address.
    pub needs_consumer: bool,
    pub needs_client: bool,
    /// `[route][target]`.
    pub breakers: Vec<Vec<Breaker>>,
    pub rolled_back: Vec<Vec<bool>>,
    pub counts: Vec<Vec<Counts>>,
}

pub type SharedState = Rc<RefCell<VmState>>;

#[derive(Default)]
pub struct TrafficRoot {
    state: Option<SharedState>,
    metrics: Vec<Vec<TargetMetrics>>,
    rollback_metrics: Vec<Metric>,
}

fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn delta(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl TrafficRoot {
    fn tick(&mut self, state: &SharedState, now_ms: u64) {
        let store = HostStore;
        let mut vm = state.borrow_mut();
        let instance = vm.settings.name.clone();
        let routes = vm.settings.routes.clone();
        for (r, route) in routes.iter().enumerate() {
            let len = usize::try_from(route.window_seconds()).unwrap_or(1);
            for (t, target) in route.targets.iter().enumerate() {
                let counts = vm
                    .counts
                    .get_mut(r)
                    .and_then(|row| row.get_mut(t))
                    .map(std::mem::take)
                    .unwrap_or_default();
                if let Some(metrics) = self.metrics.get(r).and_then(|row| row.get(t)) {
                    metrics.requests.add(delta(counts.requests));
                    metrics.failures.add(delta(counts.failures));
                    metrics.mirrored.add(delta(counts.mirrored));
                    metrics.rejected.add(delta(counts.rejected));
                    metrics.opened.add(delta(counts.opened));
                }
                let ring = state::key(&instance, &route.name, &target.name, "answers");
                if (counts.answers > 0 || counts.failures > 0)
                    && !window::add(&store, &ring, len, now_ms, counts.answers, counts.failures)
                {
                    // Kept for the next tick rather than lost.
                    if let Some(slot) = vm.counts.get_mut(r).and_then(|row| row.get_mut(t)) {
                        slot.answers += counts.answers;
                        slot.failures += counts.failures;
                    }
                }

                // The breaker requests consult, refreshed; opened on the failure
                // rate since it last closed.
                if let Some(settings) = target.breaker {
                    let key = state::key(&instance, &route.name, &target.name, "breaker");
                    let window_len = usize::try_from(settings.window_seconds).unwrap_or(1);
                    let updated = state::update(&store, &key, RETRIES, |breaker: &mut Breaker| {
                        let since_s = breaker.closed_ms.div_ceil(1000);
                        let (answers, failures) = window_since(
                            &store,
                            &ring,
                            len.max(window_len),
                            now_ms,
                            since_s,
                            window_len,
                        );
                        breaker.check_rate(&settings, answers, failures, now_ms)
                    });
                    if let Some((transition, breaker)) = updated {
                        if transition == Some(Transition::Opened) {
                            warn!(
                                "traffic {instance}: circuit of {}/{} opened on its failure rate",
                                route.name, target.name
                            );
                            if let Some(metrics) = self.metrics.get(r).and_then(|row| row.get(t)) {
                                metrics.opened.add(1);
                            }
                        }
                        if let Some(slot) = vm.breakers.get_mut(r).and_then(|row| row.get_mut(t)) {
                            *slot = breaker;
                        }
                    }
                }
            }

            // The health gate: every non-stable target, against its window since
            // its last rollback ended.
            let Some(gate) = route.health_gate.clone() else {
                continue;
            };
            for (t, target) in route.targets.iter().enumerate() {
                if t == gate.stable {
                    continue;
                }
                let key = state::key(&instance, &route.name, &target.name, "rollback");
                let ring = state::key(&instance, &route.name, &target.name, "answers");
                let gate_len = usize::try_from(gate.window_seconds).unwrap_or(1);
                let fingerprint = route.fingerprint;
                let updated = state::update(&store, &key, RETRIES, |rollback: &mut Rollback| {
                    if rollback.holds(fingerprint, now_ms) {
                        return None;
                    }
                    let since_s = if rollback.definition == fingerprint {
                        rollback.until_ms.div_ceil(1000)
                    } else {
                        0
                    };
                    let (answers, failures) =
                        window_since(&store, &ring, len.max(gate_len), now_ms, since_s, gate_len);
                    let percent = state::gate_trips(&gate, answers, failures)?;
                    *rollback = Rollback {
                        until_ms: now_ms + gate.cooldown_ms,
                        definition: fingerprint,
                        error_percent: percent,
                        answers,
                    };
                    Some(rollback.clone())
                });
                let Some((started, rollback)) = updated else {
                    continue;
                };
                if let Some(slot) = vm.rolled_back.get_mut(r).and_then(|row| row.get_mut(t)) {
                    *slot = rollback.holds(fingerprint, now_ms);
                }
                if let Some(rollback) = started {
                    // This VM's write started the rollback: it alone tells.
                    warn!(
                        "traffic {instance}: route {} target {} rolled back to {} for {} s ({:.1}% errors over {} answers)",
                        route.name,
                        target.name,
                        route.targets.get(gate.stable).map_or("", |stable| stable.name.as_str()),
                        gate.cooldown_ms / 1000,
                        rollback.error_percent,
                        rollback.answers
                    );
                    if let Some(metric) = self.rollback_metrics.get(r) {
                        metric.add(1);
                    }
                    if let Some(webhook) = &gate.webhook {
                        let until = gatehouse_shared::time::rfc3339_millis(
                            std::time::UNIX_EPOCH + Duration::from_millis(rollback.until_ms),
                        );
                        let body = serde_json::json!({
                            "event": "rollback",
                            "filter": instance,
                            "route": route.name,
                            "target": target.name,
                            "stable": route.targets.get(gate.stable).map(|stable| stable.name.clone()),
                            "error_percent": (rollback.error_percent * 10.0).round() / 10.0,
                            "requests": rollback.answers,
                            "until": until,
                        })
                        .to_string();
                        let headers = vec![
                            (":method", "POST"),
                            (":path", webhook.path.as_str()),
                            (":authority", webhook.authority.as_str()),
                            ("content-type", "application/json"),
                        ];
                        if let Err(status) = self.dispatch_http_call(
                            &webhook.cluster,
                            headers,
                            Some(body.as_bytes()),
                            vec![],
                            Duration::from_millis(webhook.timeout_ms),
                        ) {
                            warn!(
                                "traffic {instance}: cannot call webhook cluster {:?}: {status:?}",
                                webhook.cluster
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Answers and failures over the last `window_len` seconds of a ring of `len`,
/// counting only the seconds from `since_s` on.
fn window_since(
    store: &HostStore,
    key: &str,
    len: usize,
    now_ms: u64,
    since_s: u64,
    window_len: usize,
) -> (u64, u64) {
    use gatehouse_shared::host::SharedStore;
    let now_s = now_ms / 1000;
    let Ok(Some((bytes, _))) = store.get(key) else {
        return (0, 0);
    };
    let mut ring = window::Ring::decode(&bytes, len, now_s);
    ring.advance(now_s);
    let first_counted = (now_s + 1).saturating_sub(window_len as u64).max(since_s);
    ring.buckets
        .iter()
        .enumerate()
        .filter(|(index, _)| ring.first + *index as u64 >= first_counted)
        .fold((0, 0), |(answers, failures), (_, bucket)| {
            (
                answers + u64::from(bucket.0),
                failures + u64::from(bucket.1),
            )
        })
}

impl Context for TrafficRoot {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = self.get_http_call_response_header(":status");
        if !status
            .as_deref()
            .is_some_and(|status| status.starts_with('2'))
        {
            warn!(
                "traffic: rollback webhook answered {}",
                status.unwrap_or_else(|| "nothing".into())
            );
        }
    }
}

impl RootContext for TrafficRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let settings = match TrafficSettings::from_json(&bytes) {
            Ok(settings) => settings,
            Err(problem) => {
                error!("traffic configuration refused: {problem}");
                return false;
            }
        };
        info!(
            "traffic filter configured version={} {}",
            env!("CARGO_PKG_VERSION"),
            settings.summary()
        );
        // Every shared key exists before any worker serves this configuration, so
        // no request or tick has to create one (creation cannot be compare-and-swap).
        let now_ms = HostClock.now_millis();
        for route in &settings.routes {
            let len = usize::try_from(route.window_seconds()).unwrap_or(1);
            let ring = window::Ring::empty(len, now_ms / 1000).encode();
            let breaker = serde_json::to_vec(&Breaker::default()).unwrap_or_default();
            let rollback = serde_json::to_vec(&Rollback::default()).unwrap_or_default();
            for target in &route.targets {
                let key = |what: &str| state::key(&settings.name, &route.name, &target.name, what);
                let created = create_if_absent(&HostStore, &key("answers"), &ring)
                    .and_then(|_| create_if_absent(&HostStore, &key("breaker"), &breaker))
                    .and_then(|_| create_if_absent(&HostStore, &key("rollback"), &rollback));
                if let Err(problem) = created {
                    error!(
                        "traffic {}: cannot prepare shared state: {problem:?}",
                        settings.name
                    );
                    return false;
                }
            }
        }
        let base = format!("gatehouse_traffic_{}", sanitize(&settings.name));
        self.metrics = settings
            .routes
            .iter()
            .map(|route| {
                route
                    .targets
                    .iter()
                    .map(|target| {
                        let name = |what: &str| {
                            format!(
                                "{base}_{}_{}_{what}_total",
                                sanitize(&route.name),
                                sanitize(&target.name)
                            )
                        };
                        TargetMetrics {
                            requests: Metric::counter(&name("requests")),
                            failures: Metric::counter(&name("failures")),
                            mirrored: Metric::counter(&name("mirrored")),
                            rejected: Metric::counter(&name("breaker_rejected")),
                            opened: Metric::counter(&name("breaker_opened")),
                        }
                    })
                    .collect()
            })
            .collect();
        self.rollback_metrics = settings
            .routes
            .iter()
            .map(|route| {
                Metric::counter(&format!("{base}_{}_rollbacks_total", sanitize(&route.name)))
            })
            .collect();
        let shape = |value| -> Vec<Vec<_>> {
            settings
                .routes
                .iter()
                .map(|route| vec![value; route.targets.len()])
                .collect()
        };
        let breakers = settings
            .routes
            .iter()
            .map(|route| vec![Breaker::default(); route.targets.len()])
            .collect();
        let rolled_back = shape(false);
        let counts = settings
            .routes
            .iter()
            .map(|route| vec![Counts::default(); route.targets.len()])
            .collect();
        let needs_consumer = settings
            .routes
            .iter()
            .any(|route| route.sticky == Some(Sticky::Consumer));
        let needs_client = settings
            .routes
            .iter()
            .any(|route| route.sticky == Some(Sticky::ClientAddress));
        let state = Rc::new(RefCell::new(VmState {
            settings,
            random: seeded_generator(),
            needs_consumer,
            needs_client,
            breakers,
            rolled_back,
            counts,
        }));
        self.state = Some(state.clone());
        self.set_tick_period(TICK);
        self.tick(&state, HostClock.now_millis());
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = self.state.clone() {
            self.tick(&state, HostClock.now_millis());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(TrafficStream::new(state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
