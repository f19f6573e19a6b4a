//! One request: choose its target, consult the target's breaker, mark, rewrite and
//! route it; then record how the target answered.

use crate::root::{SharedState, RETRIES};
use crate::store::HostStore;
use gatehouse_host::HostClock;
use gatehouse_shared::attributes::{AuthOutcome, TrafficOutcome, AUTH, CORRELATION_ID, TRAFFIC};
use gatehouse_shared::client_address;
use gatehouse_shared::host::Clock;
use gatehouse_shared::traffic::state::{self, Admission, Breaker, Phase, Transition};
use gatehouse_shared::traffic::{choose, RequestFacts};
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

/// The request's route and target, once chosen.
#[derive(Debug, Clone, Copy)]
struct Chosen {
    route: usize,
    target: usize,
    /// The half-open round this request probes, if it is a probe.
    probe: Option<u32>,
}

pub struct TrafficStream {
    state: SharedState,
    chosen: Option<Chosen>,
    /// The filter answered the request itself.
    answered: bool,
}

impl TrafficStream {
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            chosen: None,
            answered: false,
        }
    }
}

fn text(headers: &[(String, Vec<u8>)], name: &str) -> String {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default()
}

fn unavailable(retry_after_ms: u64) {
    let retry_after = retry_after_ms.div_ceil(1000).max(1);
    let correlation_id = gatehouse_host::property_string(&[CORRELATION_ID]).unwrap_or_default();
    let body = serde_json::json!({
        "error": "unavailable",
        "message": "the backend is temporarily unavailable",
        "retry_after_seconds": retry_after,
        "correlation_id": correlation_id,
    })
    .to_string();
    let retry = retry_after.to_string();
    let _ = hostcalls::send_http_response(
        503,
        vec![
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            ("retry-after", retry.as_str()),
        ],
        Some(body.as_bytes()),
    );
}

impl Context for TrafficStream {}

impl HttpContext for TrafficStream {
    fn on_log(&mut self) {
        self.release_unanswered_probe();
    }

    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        let now_ms = HostClock.now_millis();
        let mut vm = self.state.borrow_mut();
        let settings = &vm.settings;

        // A client never chooses a cluster itself: the headers Envoy routes on are
        // removed from every request, and set only by this filter.
        let override_header = settings.override_.as_ref().map(|rule| rule.header.clone());
        let ours = |name: &str| {
            name == settings.target_header
                || name == settings.mirror_header
                || override_header.as_deref() == Some(name)
        };
        let spoofed: Vec<String> = headers
            .iter()
            .filter(|(name, _)| ours(name))
            .map(|(name, _)| name.clone())
            .collect();

        let wants_auth = vm.needs_consumer
            || override_header
                .as_deref()
                .is_some_and(|name| headers.iter().any(|(key, _)| key == name));
        let auth: Option<AuthOutcome> = if wants_auth {
            hostcalls::get_property(vec![AUTH])
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        } else {
            None
        };
        let client = if vm.needs_client {
            let peer = gatehouse_host::property_string(&["source", "address"]).unwrap_or_default();
            let forwarded: Vec<String> = headers
                .iter()
                .filter(|(key, _)| key == "x-forwarded-for")
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
                .collect();
            let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
            client_address::resolve(&peer, &forwarded, vm.settings.trusted_proxy_hops).ip
        } else {
            None
        };
        let method = text(&headers, ":method");
        let path = text(&headers, ":path");
        let random = vm.random.next_u64();
        let choice = {
            let rolled = &vm.rolled_back;
            let rolled_back = |route: usize, target: usize| {
                rolled
                    .get(route)
                    .and_then(|row| row.get(target))
                    .copied()
                    .unwrap_or(false)
            };
            let facts = RequestFacts {
                method: &method,
                path: &path,
                headers: &headers,
                consumer: auth.as_ref().and_then(|auth| auth.consumer.as_deref()),
                roles: auth.as_ref().map_or(&[], |auth| auth.roles.as_slice()),
                client,
            };
            choose(&vm.settings, &facts, now_ms, &rolled_back, random)
        };

        let target_header = vm.settings.target_header.clone();
        let mirror_header = vm.settings.mirror_header.clone();
        // The client's own routing headers go, one host call each (rare).
        for name in &spoofed {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
        }
        let Some(choice) = choice else {
            return Action::Continue;
        };
        let Some(route) = vm.settings.routes.get(choice.route).cloned() else {
            return Action::Continue;
        };
        let Some(target) = route.targets.get(choice.target).cloned() else {
            return Action::Continue;
        };

        // The target's breaker: closed costs nothing; open is answered from this
        // VM's copy until it may half-open, which is decided on the shared state.
        let mut probe = None;
        if let Some(breaker_settings) = target.breaker {
            let local = vm
                .breakers
                .get(choice.route)
                .and_then(|row| row.get(choice.target))
                .cloned()
                .unwrap_or_default();
            let admission = match local.phase {
                Phase::Closed => Admission::Pass,
                Phase::Open
                    if now_ms < local.opened_ms.saturating_add(breaker_settings.open_ms) =>
                {
                    Admission::Reject {
                        retry_after_ms: local
                            .opened_ms
                            .saturating_add(breaker_settings.open_ms)
                            .saturating_sub(now_ms),
                    }
                }
                _ => {
                    let key = state::key(&vm.settings.name, &route.name, &target.name, "breaker");
                    match state::update(&HostStore, &key, RETRIES, |breaker: &mut Breaker| {
                        breaker.admit(&breaker_settings, now_ms)
                    }) {
                        Some((admission, breaker)) => {
                            if let Some(slot) = vm
                                .breakers
                                .get_mut(choice.route)
                                .and_then(|row| row.get_mut(choice.target))
                            {
                                *slot = breaker;
                            }
                            admission
                        }
                        // Shared data unavailable: let the request through.
                        None => Admission::Pass,
                    }
                }
            };
            match admission {
                Admission::Pass => {}
                Admission::Probe { round } => probe = Some(round),
                Admission::Reject { retry_after_ms } => {
                    if let Some(counts) = vm
                        .counts
                        .get_mut(choice.route)
                        .and_then(|row| row.get_mut(choice.target))
                    {
                        counts.rejected += 1;
                    }
                    drop(vm);
                    self.answered = true;
                    publish(&target.name, None);
                    unavailable(retry_after_ms);
                    return Action::Pause;
                }
            }
        }

        if let Some(counts) = vm
            .counts
            .get_mut(choice.route)
            .and_then(|row| row.get_mut(choice.target))
        {
            counts.requests += 1;
            counts.mirrored += u64::from(choice.mirror);
        }
        drop(vm);
        // One host call per header (measured cheaper than replacing the map).
        let set = |name: &str, value: &str| {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        };
        set(&target_header, &target.name);
        if choice.mirror {
            set(&mirror_header, "1");
        }
        if let Some(rewritten) = &choice.path {
            set(":path", rewritten);
        }
        let mirror = choice
            .mirror
            .then(|| route.mirror_target.as_deref().unwrap_or("mirror"));
        publish(&target.name, mirror);
        self.chosen = Some(Chosen {
            route: choice.route,
            target: choice.target,
            probe,
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(chosen) = self.chosen.take() else {
            return Action::Continue;
        };
        if self.answered {
            return Action::Continue;
        }
        // 5xx from the backend, or Envoy's own 5xx for a reset, a refused
        // connection or a timeout.
        let status = self
            .get_http_response_header(":status")
            .and_then(|status| status.parse::<u16>().ok())
            .unwrap_or(0);
        let failure = status == 0 || status >= 500;
        let now_ms = HostClock.now_millis();
        let mut vm = self.state.borrow_mut();
        if let Some(counts) = vm
            .counts
            .get_mut(chosen.route)
            .and_then(|row| row.get_mut(chosen.target))
        {
            counts.answers += 1;
            counts.failures += u64::from(failure);
        }
        let Some(route) = vm.settings.routes.get(chosen.route) else {
            return Action::Continue;
        };
        let Some(target) = route.targets.get(chosen.target) else {
            return Action::Continue;
        };
        let Some(settings) = target.breaker else {
            return Action::Continue;
        };
        let local = vm
            .breakers
            .get(chosen.route)
            .and_then(|row| row.get(chosen.target))
            .cloned()
            .unwrap_or_default();
        // A success while this VM knows of no failure run changes nothing shared.
        if !failure
            && chosen.probe.is_none()
            && local.phase == Phase::Closed
            && local.consecutive == 0
        {
            return Action::Continue;
        }
        let key = state::key(&vm.settings.name, &route.name, &target.name, "breaker");
        let names = (route.name.clone(), target.name.clone());
        let updated = state::update(&HostStore, &key, RETRIES, |breaker: &mut Breaker| {
            breaker.record(&settings, !failure, chosen.probe, now_ms)
        });
        if let Some((transition, breaker)) = updated {
            if let Some(slot) = vm
                .breakers
                .get_mut(chosen.route)
                .and_then(|row| row.get_mut(chosen.target))
            {
                *slot = breaker;
            }
            match transition {
                Some(Transition::Opened) => {
                    if let Some(counts) = vm
                        .counts
                        .get_mut(chosen.route)
                        .and_then(|row| row.get_mut(chosen.target))
                    {
                        counts.opened += 1;
                    }
                    warn!(
                        "traffic {}: circuit of {}/{} opened",
                        vm.settings.name, names.0, names.1
                    );
                }
                Some(Transition::Closed) => warn!(
                    "traffic {}: circuit of {}/{} closed",
                    vm.settings.name, names.0, names.1
                ),
                None => {}
            }
        }
        Action::Continue
    }
}

impl TrafficStream {
    /// A probe whose response never came (the client went away) gives its place back.
    fn release_unanswered_probe(&mut self) {
        let Some(Chosen {
            route,
            target,
            probe: Some(round),
        }) = self.chosen.take()
        else {
            return;
        };
        let vm = self.state.borrow();
        let Some(route) = vm.settings.routes.get(route) else {
            return;
        };
        let Some(target) = route.targets.get(target) else {
            return;
        };
        let key = state::key(&vm.settings.name, &route.name, &target.name, "breaker");
        let _ = state::update(&HostStore, &key, RETRIES, |breaker: &mut Breaker| {
            breaker.release_probe(round);
        });
    }
}

fn publish(target: &str, mirror: Option<&str>) {
    let outcome = TrafficOutcome {
        target: target.to_string(),
        mirror: mirror.map(str::to_string),
    };
    if let Ok(json) = serde_json::to_string(&outcome) {
        let _ = hostcalls::set_property(vec![TRAFFIC], Some(json.as_bytes()));
    }
}
