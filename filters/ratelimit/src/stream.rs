//! One request: count it in every limit that applies, answer 429 or let it through,
//! and add the rate-limit headers to its response.

use crate::root::SharedState;
use crate::store::HostStore;
use gatehouse_host::HostClock;
use gatehouse_shared::attributes::{AuthOutcome, RateLimitOutcome, CORRELATION_ID, RATELIMIT};
use gatehouse_shared::client_address;
use gatehouse_shared::host::Clock;
use gatehouse_shared::ratelimit::config::HeaderPolicy;
use gatehouse_shared::ratelimit::decision::{self, LimitOutcome};
use gatehouse_shared::ratelimit::{decide, LimitResult, RequestFacts};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

pub struct RateLimitStream {
    state: SharedState,
    /// Headers to add to the response of an admitted request.
    response_headers: Vec<(String, String)>,
}

impl RateLimitStream {
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            response_headers: Vec::new(),
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

fn publish(outcome: &LimitOutcome, limit: &str) {
    let result = match outcome.result {
        LimitResult::Allowed => "allowed",
        LimitResult::Limited => "limited",
        LimitResult::ShadowLimited => "shadow_limited",
        LimitResult::Contention => "contention",
    };
    let published = RateLimitOutcome {
        result: result.into(),
        limit: Some(limit.to_string()),
    };
    if let Ok(json) = serde_json::to_string(&published) {
        let _ = hostcalls::set_property(vec![RATELIMIT], Some(json.as_bytes()));
    }
}

impl Context for RateLimitStream {}

impl HttpContext for RateLimitStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        let mut vm = self.state.borrow_mut();
        let method = text(&headers, ":method");
        let path = text(&headers, ":path");
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
        let auth: Option<AuthOutcome> = if vm.needs_auth {
            hostcalls::get_property(vec![gatehouse_shared::attributes::AUTH])
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        } else {
            None
        };
        let facts = RequestFacts {
            method: &method,
            path: &path,
            client,
            consumer: auth.as_ref().and_then(|auth| auth.consumer.as_deref()),
            tier: auth.as_ref().and_then(|auth| auth.tier.as_deref()),
            claims: auth.as_ref().map(|auth| &auth.claims),
            headers: &headers,
        };
        let now_ms = HostClock.now_millis();
        let decision = decide(&vm.settings, &facts, &HostStore, vm.seed, now_ms);

        for outcome in &decision.outcomes {
            vm.counts
                .entry((outcome.limit, outcome.tier.clone()))
                .or_default()
                .add(outcome.result);
            if outcome.evicted {
                if let Some(count) = vm.evictions.get_mut(outcome.limit) {
                    *count += 1;
                }
            }
        }
        vm.requests += 1;
        if decision.refused.is_some() {
            vm.limited += 1;
        }
        let limit_name = |outcome: &LimitOutcome| {
            vm.settings
                .limits
                .get(outcome.limit)
                .map(|limit| limit.name.clone())
                .unwrap_or_default()
        };
        if let Some(notable) = decision.notable() {
            publish(notable, &limit_name(notable));
        }
        let policy = vm.settings.response_headers;
        let shown = decision
            .shown
            .and_then(|index| decision.outcomes.get(index))
            .and_then(|outcome| outcome.quota.map(|quota| (outcome, quota)));

        let Some(refused) = decision
            .refused
            .and_then(|index| decision.outcomes.get(index))
        else {
            if policy == HeaderPolicy::Always {
                if let Some((outcome, quota)) = shown {
                    self.response_headers =
                        decision::headers(&limit_name(outcome), &quota, &outcome.rule, false);
                }
            }
            return Action::Continue;
        };

        let name = limit_name(refused);
        let retry_after = refused
            .quota
            .as_ref()
            .map_or(1, decision::retry_after_seconds);
        let mut answer: Vec<(String, String)> = match (policy, refused.quota) {
            (HeaderPolicy::Never, _) | (_, None) => {
                vec![("retry-after".to_string(), retry_after.to_string())]
            }
            (_, Some(quota)) => decision::headers(&name, &quota, &refused.rule, true),
        };
        answer.push(("content-type".into(), "application/json".into()));
        answer.push(("cache-control".into(), "no-store".into()));
        drop(vm);
        let correlation_id = gatehouse_host::property_string(&[CORRELATION_ID]).unwrap_or_default();
        let body = decision::body(&name, retry_after, &correlation_id);
        let pairs: Vec<(&str, &str)> = answer
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let _ = hostcalls::send_http_response(429, pairs, Some(body.as_bytes()));
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.response_headers.is_empty() {
            return Action::Continue;
        }
        // One read and one write of the map instead of a crossing per header.
        let mut map = self.get_http_response_headers_bytes();
        // A 429 here is another instance's refusal: it describes its own limit.
        if map
            .iter()
            .any(|(key, value)| key == ":status" && value.as_slice() == b"429")
        {
            self.response_headers.clear();
            return Action::Continue;
        }
        // Another instance (a later filter, whose response headers come first) may
        // have described a limit closer to exhaustion: keep the closest.
        let remaining = |headers: &[(String, String)]| {
            headers
                .iter()
                .find(|(key, _)| key == "x-ratelimit-remaining")
                .and_then(|(_, value)| value.parse::<u64>().ok())
        };
        let existing = map
            .iter()
            .find(|(key, _)| key == "x-ratelimit-remaining")
            .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse::<u64>().ok());
        if let (Some(existing), Some(ours)) = (existing, remaining(&self.response_headers)) {
            if existing <= ours {
                self.response_headers.clear();
                return Action::Continue;
            }
        }
        for (name, value) in std::mem::take(&mut self.response_headers) {
            map.retain(|(key, _)| *key != name);
            map.push((name, value.into_bytes()));
        }
        let pairs: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_slice()))
            .collect();
        let _ = hostcalls::set_map_bytes(MapType::HttpResponseHeaders, pairs);
        Action::Continue
    }
}
