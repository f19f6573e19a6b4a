//! What one VM knows: the settings, each provider's key set, verified tokens, and
//! the requests waiting for keys.

use crate::metrics::AuthMetrics;
use gatehouse_shared::auth::config::Remote;
use gatehouse_shared::auth::keys::{refetch_may_help, FetchTimes};
use gatehouse_shared::auth::{AuthSettings, KeyLookup, ProviderKeys, TokenCache};
use proxy_wasm::hostcalls;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A provider's keys in this VM, and its fetch bookkeeping.
#[derive(Debug, Default)]
pub struct ProviderState {
    pub keys: Option<ProviderKeys>,
    /// The shared-data version the keys were parsed from.
    pub shared_version: Option<u32>,
    /// A token named a key this set lacks.
    pub refetch_wanted: bool,
    /// The call in flight from this VM, and what it fetches.
    pub in_flight: Option<(u32, Stage)>,
}

/// What a key fetch is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks(Remote),
}

/// A request paused until its provider's keys arrive.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub context_id: u32,
    pub provider: String,
    /// When to give up, ms since the epoch.
    pub deadline_ms: u64,
    /// The key generation it saw; a new one wakes it.
    pub generation: Option<u64>,
}

pub struct VmState {
    pub settings: Rc<AuthSettings>,
    pub providers: BTreeMap<String, ProviderState>,
    pub cache: TokenCache,
    pub waiters: Vec<Waiter>,
    pub metrics: AuthMetrics,
    /// Decisions counted since the last tick: the root adds them to the shared
    /// counters, so a request pays no host call for its count.
    pub counts: DecisionCounts,
}

/// Per-request counters, kept in the VM between ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecisionCounts {
    pub allowed: u64,
    pub denied: u64,
    pub shadow_denied: u64,
}

pub type SharedState = Rc<RefCell<VmState>>;

impl VmState {
    pub fn new(settings: Rc<AuthSettings>, metrics: AuthMetrics) -> Self {
        let mut providers = BTreeMap::new();
        for provider in &settings.providers {
            let mut state = ProviderState::default();
            if let Some(keys) = &provider.inline_keys {
                state.keys = Some(ProviderKeys {
                    keys: Rc::new(keys.clone()),
                    generation: 1,
                });
            }
            providers.insert(provider.name.clone(), state);
        }
        Self {
            cache: TokenCache::new(settings.token_cache_entries),
            settings,
            providers,
            waiters: Vec::new(),
            metrics,
            counts: DecisionCounts::default(),
        }
    }

    /// Adds the decisions counted since the last call to the shared counters.
    pub fn flush_counts(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        let add = |metric: &gatehouse_host::Metric, count: u64| {
            metric.add(i64::try_from(count).unwrap_or(i64::MAX));
        };
        add(&self.metrics.allowed, counts.allowed);
        add(&self.metrics.denied, counts.denied);
        add(&self.metrics.shadow_denied, counts.shadow_denied);
    }

    /// The generation of a provider's keys, if any are loaded.
    pub fn generation(&self, provider: &str) -> Option<u64> {
        self.providers
            .get(provider)
            .and_then(|state| state.keys.as_ref())
            .map(|keys| keys.generation)
    }
}

/// The shared-data key holding the last fetch attempt for a provider by any
/// worker (ms since the epoch, little-endian); its compare-and-swap elects the
/// worker that fetches.
pub fn attempt_key(provider: &str) -> String {
    format!("gatehouse.auth.{provider}.attempt")
}

/// The shared-data key holding when the last fetch for a provider ended.
pub fn settled_key(provider: &str) -> String {
    format!("gatehouse.auth.{provider}.settled")
}

/// A time (ms since the epoch) kept in shared data.
pub fn shared_time(key: &str) -> Option<u64> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(bytes), _)) => bytes.as_slice().try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

/// Notes in shared data that a fetch for `provider` ended.
pub fn mark_settled(provider: &str, now_ms: u64) {
    let _ = hostcalls::set_shared_data(&settled_key(provider), Some(&now_ms.to_le_bytes()), None);
}

/// The key sets as the decision sees them.
pub struct Lookup<'a> {
    pub settings: &'a AuthSettings,
    pub providers: &'a BTreeMap<String, ProviderState>,
    pub now_ms: u64,
}

impl KeyLookup for Lookup<'_> {
    fn keys(&self, provider: &str) -> Option<ProviderKeys> {
        self.providers
            .get(provider)
            .and_then(|state| state.keys.clone())
    }

    fn may_refetch(&self, provider: &str) -> bool {
        let Some(settings) = self.settings.provider(provider) else {
            return false;
        };
        // Only a token naming an unknown key gets here, so the shared-data reads
        // are not on the path of ordinary requests.
        let times = FetchTimes {
            attempt_ms: shared_time(&attempt_key(provider)),
            settled_ms: shared_time(&settled_key(provider)),
            in_flight_here: self
                .providers
                .get(provider)
                .is_some_and(|state| state.in_flight.is_some()),
        };
        refetch_may_help(settings, times, self.now_ms, self.settings.key_wait_ms)
    }
}
