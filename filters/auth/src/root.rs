//! The root context: configuration, key sets fetched into shared data for every
//! worker, and waking the requests that wait for them.

use crate::apply::{decide_and_apply, Applied};
use crate::metrics::AuthMetrics;
use crate::state::{attempt_key, mark_settled, shared_time, SharedState, Stage, VmState};
use crate::stream::AuthStream;
use gatehouse_host::HostClock;
use gatehouse_shared::auth::config::{KeySource, Remote};
use gatehouse_shared::auth::keys::{fetch_due, jwks_location};
use gatehouse_shared::auth::{AuthSettings, KeyWait, ProviderKeys};
use gatehouse_shared::host::Clock;
use gatehouse_shared::jwt::{parse_jwks, MAX_JWKS_BYTES};
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// How often each VM looks at shared data and its waiting requests.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct AuthRoot {
    state: Option<SharedState>,
    metrics: Option<AuthMetrics>,
}

fn jwks_key(provider: &str) -> String {
    format!("gatehouse.auth.{provider}.jwks")
}

fn loaded_key(provider: &str) -> String {
    format!("gatehouse.auth.{provider}.loaded_at")
}

impl Context for AuthRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let now_ms = HostClock.now_millis();
        let found = state
            .borrow_mut()
            .providers
            .iter_mut()
            .find_map(|(name, provider)| match provider.in_flight.take() {
                Some((in_flight, stage)) if in_flight == token => Some((name.clone(), stage)),
                other => {
                    provider.in_flight = other;
                    None
                }
            });
        let Some((name, stage)) = found else { return };
        let last_stage = matches!(stage, Stage::Jwks(_));
        let status = self.get_http_call_response_header(":status");
        let body = if body_size <= MAX_JWKS_BYTES {
            self.get_http_call_response_body(0, body_size)
        } else {
            None
        };
        let outcome = match (status.as_deref(), body) {
            (Some("200"), Some(body)) => self.accept(&state, &name, stage, &body),
            (Some("200"), None) if body_size > MAX_JWKS_BYTES => {
                Err(format!("answer of {body_size} bytes is too large"))
            }
            (status, _) => Err(format!(
                "answer status {}",
                status.unwrap_or("none (timeout or reset)")
            )),
        };
        if outcome.is_err() || last_stage {
            mark_settled(&name, HostClock.now_millis());
        }
        if let Err(reason) = outcome {
            state.borrow().metrics.key_fetch_failures.add(1);
            warn!(
                "key set fetch failed provider={name} reason={reason}; keeping the last good keys"
            );
        }
        self.sync_and_wake(&state, now_ms);
    }
}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let settings = match AuthSettings::from_json(&bytes) {
            Ok(settings) => settings,
            Err(problem) => {
                error!("auth configuration refused: {problem}");
                return false;
            }
        };
        info!(
            "auth filter configured version={} {}",
            env!("CARGO_PKG_VERSION"),
            settings.summary()
        );
        let metrics = *self.metrics.get_or_insert_with(AuthMetrics::define);
        let remote = settings
            .providers
            .iter()
            .any(|provider| provider.source != KeySource::Inline);
        self.state = Some(Rc::new(RefCell::new(VmState::new(
            Rc::new(settings),
            metrics,
        ))));
        // The tick also adds each VM's decision counts to the shared counters, so
        // it runs even when every key set is inline.
        self.set_tick_period(TICK);
        if remote {
            self.on_tick();
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let now_ms = HostClock.now_millis();
        self.sync_and_wake(&state, now_ms);
        self.fetch_due_keys(&state, now_ms);
        report_key_age(&state, now_ms);
        state.borrow_mut().flush_counts();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(AuthStream::new(context_id, state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The age of the oldest fetched key set, for the gauge.
fn report_key_age(state: &SharedState, now_ms: u64) {
    let vm = state.borrow();
    let oldest = vm
        .settings
        .providers
        .iter()
        .filter(|provider| provider.source != KeySource::Inline)
        .filter_map(|provider| shared_time(&loaded_key(&provider.name)))
        .min();
    if let Some(loaded) = oldest {
        vm.metrics.key_age.set(now_ms.saturating_sub(loaded) / 1000);
    }
}

impl AuthRoot {
    /// Checks a fetched document; a key set goes to shared data for every worker.
    fn accept(
        &mut self,
        state: &SharedState,
        name: &str,
        stage: Stage,
        body: &[u8],
    ) -> Result<(), String> {
        let settings = state.borrow().settings.clone();
        let provider = settings.provider(name).ok_or("provider gone")?;
        match stage {
            Stage::Discovery => {
                let KeySource::Discovery(remote) = &provider.source else {
                    return Err("not a discovery provider".into());
                };
                let location = jwks_location(remote, body, &provider.claims.issuer)?;
                self.dispatch(state, name, &location, Stage::Jwks(location.clone()))
            }
            Stage::Jwks(_) => {
                let (keys, skipped) = parse_jwks(body)?;
                for key in &skipped {
                    warn!(
                        "key skipped provider={name} index={} kid={:?} reason={}",
                        key.index, key.kid, key.reason
                    );
                }
                hostcalls::set_shared_data(&jwks_key(name), Some(body), None)
                    .map_err(|status| format!("shared data refused the key set: {status:?}"))?;
                let now_ms = HostClock.now_millis();
                let _ = hostcalls::set_shared_data(
                    &loaded_key(name),
                    Some(&now_ms.to_le_bytes()),
                    None,
                );
                state.borrow().metrics.key_fetches.add(1);
                info!("key set loaded provider={name} keys={}", keys.keys.len());
                Ok(())
            }
        }
    }

    /// Loads key sets other workers stored, then wakes the requests that can go on.
    fn sync_and_wake(&mut self, state: &SharedState, now_ms: u64) {
        {
            let mut vm = state.borrow_mut();
            let names: Vec<String> = vm.providers.keys().cloned().collect();
            for name in names {
                let Ok((Some(bytes), Some(version))) = hostcalls::get_shared_data(&jwks_key(&name))
                else {
                    continue;
                };
                let Some(provider) = vm.providers.get_mut(&name) else {
                    continue;
                };
                if provider.shared_version == Some(version) {
                    continue;
                }
                provider.shared_version = Some(version);
                if let Ok((keys, _)) = parse_jwks(&bytes) {
                    provider.keys = Some(ProviderKeys {
                        keys: Rc::new(keys),
                        generation: u64::from(version) + 1,
                    });
                    provider.refetch_wanted = false;
                }
            }
        }
        self.wake(state, now_ms);
    }

    fn wake(&mut self, state: &SharedState, now_ms: u64) {
        let waiters = std::mem::take(&mut state.borrow_mut().waiters);
        let mut still = Vec::new();
        for waiter in waiters {
            let current = state.borrow().generation(&waiter.provider);
            let expired = now_ms >= waiter.deadline_ms;
            if current == waiter.generation && !expired {
                still.push(waiter);
                continue;
            }
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue;
            }
            let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
            // Once the wait has run out, missing keys are a 503 (or, under a shadow
            // rule, a recorded one that lets the request through).
            let wait = if expired {
                KeyWait::Never
            } else {
                KeyWait::Keys
            };
            let applied = decide_and_apply(&mut state.borrow_mut(), &headers, now_ms, wait);
            if expired && state.borrow().generation(&waiter.provider).is_none() {
                state.borrow().metrics.key_wait_timeouts.add(1);
            }
            match applied {
                Applied::Continue => {
                    let _ = hostcalls::resume_http_request();
                }
                Applied::Responded => {}
                Applied::Wait { .. } => still.push(crate::state::Waiter {
                    generation: current,
                    ..waiter
                }),
            }
        }
        state.borrow_mut().waiters.extend(still);
    }

    /// Starts the fetches that are due, at most one per provider across workers.
    fn fetch_due_keys(&mut self, state: &SharedState, now_ms: u64) {
        let settings = state.borrow().settings.clone();
        for provider in &settings.providers {
            let first = match &provider.source {
                KeySource::Inline => continue,
                KeySource::JwksUri(remote) => (remote.clone(), Stage::Jwks(remote.clone())),
                KeySource::Discovery(remote) => (remote.clone(), Stage::Discovery),
            };
            let (have_keys, refetch_wanted, busy) = {
                let vm = state.borrow();
                let Some(local) = vm.providers.get(&provider.name) else {
                    continue;
                };
                (
                    local.keys.is_some(),
                    local.refetch_wanted,
                    local.in_flight.is_some(),
                )
            };
            if busy {
                continue;
            }
            let key = attempt_key(&provider.name);
            let (last, version) = match hostcalls::get_shared_data(&key) {
                Ok((Some(bytes), version)) => (
                    bytes.as_slice().try_into().ok().map(u64::from_le_bytes),
                    version,
                ),
                Ok((None, version)) => (None, version),
                Err(_) => continue,
            };
            if !fetch_due(provider, last, now_ms, have_keys, refetch_wanted) {
                continue;
            }
            // Compare-and-swap on the attempt time: one worker wins the fetch.
            if hostcalls::set_shared_data(&key, Some(&now_ms.to_le_bytes()), version).is_err() {
                continue;
            }
            if let Some(local) = state.borrow_mut().providers.get_mut(&provider.name) {
                local.refetch_wanted = false;
            }
            if let Err(reason) = self.dispatch(state, &provider.name, &first.0, first.1) {
                mark_settled(&provider.name, now_ms);
                state.borrow().metrics.key_fetch_failures.add(1);
                warn!(
                    "key set fetch not started provider={} reason={reason}",
                    provider.name
                );
            }
        }
    }

    fn dispatch(
        &mut self,
        state: &SharedState,
        name: &str,
        remote: &Remote,
        stage: Stage,
    ) -> Result<(), String> {
        let headers = vec![
            (":method", "GET"),
            (":path", remote.path.as_str()),
            (":authority", remote.authority.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(remote.timeout_ms);
        let token = self
            .dispatch_http_call(&remote.cluster, headers, None, vec![], timeout)
            .map_err(|status| format!("cluster {} refused the call: {status:?}", remote.cluster))?;
        if let Some(local) = state.borrow_mut().providers.get_mut(name) {
            local.in_flight = Some((token, stage));
        }
        Ok(())
    }
}
