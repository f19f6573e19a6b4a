//! The root context: configuration, the counter tables, and the tick that adds each
//! VM's counts to the metrics and runs the alert.

use crate::store::HostStore;
use crate::stream::RateLimitStream;
use gatehouse_host::{HostClock, HostRandom, Metric};
use gatehouse_shared::host::{Clock, RandomSource, SharedStore};
use gatehouse_shared::ratelimit::alert::{self, Action, Delivery};
use gatehouse_shared::ratelimit::config::KeySource;
use gatehouse_shared::ratelimit::table::{self, Table};
use gatehouse_shared::ratelimit::{LimitResult, RateLimitSettings};
use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// How often each VM adds its counts to the metrics and looks at the alert.
const TICK: Duration = Duration::from_millis(200);
/// The shared-data key of the process's slot-hashing seed.
const SEED_KEY: &str = "gatehouse.ratelimit.seed";

/// Per-limit, per-tier counters.
#[derive(Debug, Clone, Copy)]
pub struct TierMetrics {
    allowed: Metric,
    limited: Metric,
    shadow_limited: Metric,
    contention: Metric,
}

/// Counts a VM keeps between ticks, per limit and tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct TierCounts {
    pub allowed: u64,
    pub limited: u64,
    pub shadow_limited: u64,
    pub contention: u64,
}

impl TierCounts {
    pub fn add(&mut self, result: LimitResult) {
        match result {
            LimitResult::Allowed => self.allowed += 1,
            LimitResult::Limited => self.limited += 1,
            LimitResult::ShadowLimited => self.shadow_limited += 1,
            LimitResult::Contention => self.contention += 1,
        }
    }
}

/// What one VM knows and counts.
pub struct VmState {
    pub settings: RateLimitSettings,
    pub seed: u64,
    /// Whether requests need the client address, the auth filter's attribute.
    pub needs_client: bool,
    pub needs_auth: bool,
    pub counts: HashMap<(usize, String), TierCounts>,
    pub evictions: Vec<u64>,
    /// Requests and limited requests since the last tick, for the alert.
    pub requests: u64,
    pub limited: u64,
}

pub type SharedState = Rc<RefCell<VmState>>;

struct Metrics {
    tiers: HashMap<(usize, String), TierMetrics>,
    evictions: Vec<Metric>,
    alerts_sent: Metric,
    alert_failures: Metric,
}

#[derive(Default)]
pub struct RateLimitRoot {
    state: Option<SharedState>,
    metrics: Option<Metrics>,
    deliveries: BTreeMap<u32, Delivery>,
}

/// A metric name part: lowercase, `[a-z0-9_]`.
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

fn define_metrics(settings: &RateLimitSettings) -> Metrics {
    let base = format!("gatehouse_ratelimit_{}", sanitize(&settings.name));
    let mut tiers = HashMap::new();
    let mut evictions = Vec::new();
    for (index, limit) in settings.limits.iter().enumerate() {
        let prefix = format!("{base}_{}", sanitize(&limit.name));
        for tier in limit.tiers.keys() {
            let name = |what: &str| format!("{prefix}_{}_{what}_total", sanitize(tier));
            tiers.insert(
                (index, tier.clone()),
                TierMetrics {
                    allowed: Metric::counter(&name("allowed")),
                    limited: Metric::counter(&name("limited")),
                    shadow_limited: Metric::counter(&name("shadow_limited")),
                    contention: Metric::counter(&name("contention")),
                },
            );
        }
        evictions.push(Metric::counter(&format!("{prefix}_evictions_total")));
    }
    Metrics {
        tiers,
        evictions,
        alerts_sent: Metric::counter(&format!("{base}_alerts_sent_total")),
        alert_failures: Metric::counter(&format!("{base}_alert_failures_total")),
    }
}

/// The process's slot-hashing seed: made by the first VM to configure (Envoy's main
/// thread, before any worker), read by the others.
fn shared_seed(store: &HostStore) -> u64 {
    if let Ok(Some((bytes, _))) = store.get(SEED_KEY) {
        if let Ok(array) = <[u8; 8]>::try_from(bytes.as_slice()) {
            return u64::from_le_bytes(array);
        }
    }
    let mut seed = [0u8; 8];
    HostRandom::default().fill(&mut seed);
    if store.set(SEED_KEY, &seed, None).is_err() {
        warn!("could not store the counter seed; this VM hashes with its own");
    }
    match store.get(SEED_KEY) {
        Ok(Some((bytes, _))) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| u64::from_le_bytes(seed)),
        _ => u64::from_le_bytes(seed),
    }
}

fn delta(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl RateLimitRoot {
    /// Adds the VM's counts to the metrics and the alert window.
    fn flush(&mut self, state: &SharedState, now_ms: u64) {
        let mut vm = state.borrow_mut();
        if let Some(metrics) = &self.metrics {
            for (key, counts) in vm.counts.iter_mut() {
                if let Some(tier) = metrics.tiers.get(key) {
                    tier.allowed.add(delta(counts.allowed));
                    tier.limited.add(delta(counts.limited));
                    tier.shadow_limited.add(delta(counts.shadow_limited));
                    tier.contention.add(delta(counts.contention));
                }
                *counts = TierCounts::default();
            }
            for (index, count) in vm.evictions.iter_mut().enumerate() {
                if let Some(metric) = metrics.evictions.get(index) {
                    metric.add(delta(*count));
                }
                *count = 0;
            }
        }
        let Some(settings) = vm.settings.alert.clone() else {
            return;
        };
        let name = vm.settings.name.clone();
        if (vm.requests > 0 || vm.limited > 0)
            && alert::add_counts(
                &HostStore,
                &name,
                &settings,
                now_ms,
                vm.requests,
                vm.limited,
            )
        {
            vm.requests = 0;
            vm.limited = 0;
        }
        drop(vm);
        let report = alert::tick(&HostStore, &name, &settings, now_ms);
        match report.transition {
            Some(Action::Trigger) => warn!(
                "rate-limit alert {name}: limited share over {}%",
                settings.trigger_percent
            ),
            Some(Action::Resolve) => info!(
                "rate-limit alert {name}: limited share back under {}%",
                settings.resolve_percent
            ),
            None => {}
        }
        if report.given_up {
            error!(
                "rate-limit alert {name}: gave up delivering after {} attempts",
                alert::MAX_ATTEMPTS
            );
        }
        if let Some(delivery) = report.delivery {
            self.send(&name, &settings, delivery, now_ms);
        }
    }

    fn send(
        &mut self,
        name: &str,
        settings: &gatehouse_shared::ratelimit::config::AlertSettings,
        delivery: Delivery,
        now_ms: u64,
    ) {
        let headers = vec![
            (":method", "POST"),
            (":path", settings.path.as_str()),
            (":authority", settings.authority.as_str()),
            ("content-type", "application/json"),
        ];
        match self.dispatch_http_call(
            &settings.cluster,
            headers,
            Some(delivery.body.as_bytes()),
            vec![],
            Duration::from_millis(settings.timeout_ms),
        ) {
            Ok(token) => {
                self.deliveries.insert(token, delivery);
            }
            Err(status) => {
                warn!(
                    "rate-limit alert {name}: cannot call cluster {:?}: {status:?}",
                    settings.cluster
                );
                if let Some(metrics) = &self.metrics {
                    metrics.alert_failures.add(1);
                }
                alert::delivered(&HostStore, name, &delivery, false, now_ms);
            }
        }
    }
}

impl Context for RateLimitRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body_size: usize,
        _trailers: usize,
    ) {
        let Some(delivery) = self.deliveries.remove(&token) else {
            return;
        };
        let Some(state) = self.state.clone() else {
            return;
        };
        let name = state.borrow().settings.name.clone();
        let status = self.get_http_call_response_header(":status");
        let success = status
            .as_deref()
            .and_then(|status| status.parse::<u16>().ok())
            .is_some_and(|status| (200..300).contains(&status));
        if let Some(metrics) = &self.metrics {
            if success {
                metrics.alerts_sent.add(1);
            } else {
                metrics.alert_failures.add(1);
            }
        }
        if !success {
            warn!(
                "rate-limit alert {name}: webhook answered {:?} (attempt {})",
                status.unwrap_or_else(|| "no answer".into()),
                delivery.attempt
            );
        }
        alert::delivered(
            &HostStore,
            &name,
            &delivery,
            success,
            HostClock.now_millis(),
        );
    }
}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let settings = match RateLimitSettings::from_json(&bytes) {
            Ok(settings) => settings,
            Err(problem) => {
                error!("ratelimit configuration refused: {problem}");
                return false;
            }
        };
        let store = HostStore;
        for limit in &settings.limits {
            let table = Table::of(&settings, limit);
            match table::create(&store, &table) {
                Ok(true) => info!(
                    "ratelimit {}: counter table for {} ready ({} slots)",
                    settings.name, limit.name, settings.slots
                ),
                Ok(false) => {}
                Err(problem) => {
                    error!(
                        "ratelimit {}: cannot create the table of {}: {problem:?}",
                        settings.name, limit.name
                    );
                    return false;
                }
            }
        }
        if let Some(alert_settings) = &settings.alert {
            if let Err(problem) = alert::prepare(
                &store,
                &settings.name,
                alert_settings,
                HostClock.now_millis(),
            ) {
                error!(
                    "ratelimit {}: cannot prepare the alert: {problem:?}",
                    settings.name
                );
                return false;
            }
        }
        let seed = shared_seed(&store);
        info!(
            "ratelimit filter configured version={} {}",
            env!("CARGO_PKG_VERSION"),
            settings.summary()
        );
        self.metrics = Some(define_metrics(&settings));
        let needs_client = settings
            .limits
            .iter()
            .any(|limit| limit.key == KeySource::ClientAddress);
        let needs_auth = settings.limits.iter().any(|limit| {
            matches!(limit.key, KeySource::Consumer | KeySource::Claim(_)) || limit.tiers.len() > 1
        });
        let evictions = vec![0; settings.limits.len()];
        self.state = Some(Rc::new(RefCell::new(VmState {
            settings,
            seed,
            needs_client,
            needs_auth,
            counts: HashMap::new(),
            evictions,
            requests: 0,
            limited: 0,
        })));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = self.state.clone() {
            self.flush(&state, HostClock.now_millis());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(RateLimitStream::new(state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
