//! One request against every limit: which apply, what key and tier each counts,
//! whether the request is refused, and what the client is told.

use super::algorithm::{Quota, Rule};
use super::config::{Contention, KeySource, Limit, Mode, RateLimitSettings};
use super::table::{fingerprint, Counted, Receipt, Table};
use crate::host::SharedStore;
use crate::path::normalize;
use std::net::IpAddr;

/// What the filter knows about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `:path` as received.
    pub path: &'a str,
    /// The client address, resolved with the trusted hops.
    pub client: Option<IpAddr>,
    /// The consumer and tier the auth filter published, if it ran before.
    pub consumer: Option<&'a str>,
    pub tier: Option<&'a str>,
    /// The verified token claims the auth filter published (`publish_claims`).
    pub claims: Option<&'a std::collections::BTreeMap<String, String>>,
    pub headers: &'a [(String, Vec<u8>)],
}

/// What one limit made of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResult {
    Allowed,
    Limited,
    ShadowLimited,
    /// The compare-and-swap retries ran out.
    Contention,
}

/// One applicable limit's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOutcome {
    /// Index into the settings' limits.
    pub limit: usize,
    pub tier: String,
    pub rule: Rule,
    pub result: LimitResult,
    pub quota: Option<Quota>,
    /// Counting this client evicted another client's entry.
    pub evicted: bool,
}

/// The request's outcome over all limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Every applicable limit evaluated, in order (evaluation stops at a refusal).
    pub outcomes: Vec<LimitOutcome>,
    /// The outcome (index into `outcomes`) that refuses the request.
    pub refused: Option<usize>,
    /// The outcome whose figures the response headers carry: the refusing one, or
    /// the admitting one with the fewest requests left.
    pub shown: Option<usize>,
}

impl Decision {
    /// The outcome to publish: the refusal, else the first shadow limit, else none.
    pub fn notable(&self) -> Option<&LimitOutcome> {
        match self.refused {
            Some(index) => self.outcomes.get(index),
            None => self
                .outcomes
                .iter()
                .find(|outcome| outcome.result == LimitResult::ShadowLimited),
        }
    }
}

/// The client address as a limit counts it: IPv4 whole, IPv6 cut to the prefix.
pub fn address_key(ip: IpAddr, ipv6_prefix_length: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let bits = u128::from(v6);
                let prefix = u32::from(ipv6_prefix_length.min(128));
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                format!("{}/{prefix}", std::net::Ipv6Addr::from(bits & mask))
            }
        },
    }
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_slice())
}

/// Decides a request. `seed` keys the slot hashing (the same in every VM).
pub fn decide(
    settings: &RateLimitSettings,
    facts: &RequestFacts<'_>,
    store: &dyn SharedStore,
    seed: u64,
    now_ms: u64,
) -> Decision {
    // A path that does not normalize is counted by every limit: refusing it is the
    // auth filter's job, escaping a path-scoped limit must not be possible.
    let normalized = normalize(facts.path, false).ok();
    let mut decision = Decision::default();
    let mut taken: Vec<(usize, u64, Receipt, Rule)> = Vec::new();

    for (index, limit) in settings.limits.iter().enumerate() {
        if !applies(
            limit,
            facts.method,
            normalized.as_ref().map(|n| n.path.as_str()),
        ) {
            continue;
        }
        let key = match &limit.key {
            KeySource::ClientAddress => facts
                .client
                .map(|ip| address_key(ip, settings.ipv6_prefix_length).into_bytes()),
            KeySource::Consumer => facts.consumer.map(|consumer| consumer.as_bytes().to_vec()),
            KeySource::Header(name) => header(facts.headers, name).map(<[u8]>::to_vec),
            // Verified by the auth filter and published by it: a client cannot
            // choose it, and it survives `strip_credential`.
            KeySource::Claim(path) => facts
                .claims
                .and_then(|claims| claims.get(&path.join(".")))
                .map(|value| value.as_bytes().to_vec()),
        };
        let Some(key) = key.filter(|key| !key.is_empty()) else {
            continue;
        };
        let (tier, rule) = limit.tier(facts.tier);
        let client = fingerprint(seed, &limit.name, &key);
        let table = Table::of(settings, limit);
        let counted = table.count(store, client, &rule, now_ms, settings.cas_retries);
        let mut outcome = LimitOutcome {
            limit: index,
            tier: tier.to_string(),
            rule,
            result: LimitResult::Allowed,
            quota: None,
            evicted: false,
        };
        let refuse = match counted {
            Counted::Admitted {
                receipt,
                quota,
                evicted,
            } => {
                taken.push((index, client, receipt, rule));
                outcome.quota = Some(quota);
                outcome.evicted = evicted;
                false
            }
            Counted::Refused { quota, evicted } => {
                outcome.quota = Some(quota);
                outcome.evicted = evicted;
                if limit.mode == Mode::Shadow {
                    outcome.result = LimitResult::ShadowLimited;
                    false
                } else {
                    outcome.result = LimitResult::Limited;
                    true
                }
            }
            Counted::Contention => {
                outcome.result = LimitResult::Contention;
                settings.on_contention == Contention::Deny && limit.mode == Mode::Enforce
            }
        };
        decision.outcomes.push(outcome);
        if refuse {
            decision.refused = Some(decision.outcomes.len() - 1);
            // A refused request takes no budget: what earlier limits counted for it
            // goes back.
            for (earlier, client, receipt, rule) in &taken {
                if let Some(limit) = settings.limits.get(*earlier) {
                    let table = Table::of(settings, limit);
                    table.give_back(store, *client, *receipt, rule, now_ms, settings.cas_retries);
                }
            }
            break;
        }
    }

    decision.shown = match decision.refused {
        Some(index) => decision
            .outcomes
            .get(index)
            .and_then(|outcome| outcome.quota)
            .map(|_| index),
        None => decision
            .outcomes
            .iter()
            .enumerate()
            .filter(|(_, outcome)| outcome.result == LimitResult::Allowed)
            .filter_map(|(index, outcome)| outcome.quota.map(|quota| (index, quota)))
            .min_by_key(|(_, quota)| (quota.remaining, u64::MAX - quota.reset_ms))
            .map(|(index, _)| index),
    };
    decision
}

fn applies(limit: &Limit, method: &str, path: Option<&str>) -> bool {
    if !limit.methods.matches(method) {
        return false;
    }
    match (&limit.path, path) {
        (Some(matcher), Some(path)) => matcher.matches(path),
        _ => true,
    }
}

fn seconds_up(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The rate-limit response headers for a limit's figures.
pub fn headers(limit: &str, quota: &Quota, rule: &Rule, refused: bool) -> Vec<(String, String)> {
    let reset = seconds_up(quota.reset_ms);
    let window = rule.window_ms / 1000;
    let mut out = vec![
        ("x-ratelimit-limit".to_string(), quota.limit.to_string()),
        (
            "x-ratelimit-remaining".to_string(),
            quota.remaining.to_string(),
        ),
        ("x-ratelimit-reset".to_string(), reset.to_string()),
        (
            "ratelimit-policy".to_string(),
            format!("\"{limit}\";q={};w={window}", quota.limit),
        ),
        (
            "ratelimit".to_string(),
            format!("\"{limit}\";r={};t={reset}", quota.remaining),
        ),
    ];
    if refused {
        out.push((
            "retry-after".to_string(),
            retry_after_seconds(quota).to_string(),
        ));
    }
    out
}

/// Whole seconds to wait before retrying, at least 1.
pub fn retry_after_seconds(quota: &Quota) -> u64 {
    seconds_up(quota.retry_after_ms).max(1)
}

/// The 429 body.
pub fn body(limit: &str, retry_after: u64, correlation_id: &str) -> String {
    serde_json::json!({
        "error": "rate_limited",
        "message": "too many requests",
        "limit": limit,
        "retry_after_seconds": retry_after,
        "correlation_id": correlation_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::table::create_all;
    use super::*;
    use crate::host::MemoryStore;
    use serde_json::{json, Value};

    const T0: u64 = 1_800_000_000_000;

    fn settings(value: Value) -> RateLimitSettings {
        RateLimitSettings::from_json(value.to_string().as_bytes()).unwrap()
    }

    fn ready(settings: &RateLimitSettings) -> MemoryStore {
        let store = MemoryStore::default();
        create_all(&store, settings).unwrap();
        store
    }

    fn facts<'a>(
        path: &'a str,
        client: &str,
        headers: &'a [(String, Vec<u8>)],
    ) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            path,
            client: client.parse().ok(),
            consumer: None,
            tier: None,
            claims: None,
            headers,
        }
    }

    #[test]
    fn ipv6_clients_are_grouped_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a, 64), address_key(b, 64));
        assert_ne!(address_key(a, 64), address_key(c, 64));
        assert_ne!(address_key(a, 128), address_key(b, 128));
        assert_eq!(
            address_key("::ffff:10.0.0.1".parse().unwrap(), 64),
            "10.0.0.1"
        );
        assert_eq!(address_key("10.0.0.1".parse().unwrap(), 64), "10.0.0.1");
    }

    #[test]
    fn a_refusal_by_a_later_limit_gives_back_the_earlier_ones() {
        let settings = settings(json!({"name": "t", "slots": 64, "limits": [
            {"name": "wide", "key": {"kind": "client_address"},
             "tiers": {"default": {"requests": 3, "window_seconds": 60}}},
            {"name": "narrow", "key": {"kind": "client_address"}, "match": {"path": {"prefix": "/narrow/"}},
             "tiers": {"default": {"requests": 1, "window_seconds": 60}}},
        ]}));
        let store = ready(&settings);
        let headers = vec![];
        let narrow = facts("/narrow/x", "10.0.0.1", &headers);
        assert_eq!(decide(&settings, &narrow, &store, 5, T0).refused, None);
        for _ in 0..5 {
            let decision = decide(&settings, &narrow, &store, 5, T0);
            let refused = decision.refused.unwrap();
            assert_eq!(decision.outcomes[refused].limit, 1);
        }
        // The wide limit lost nothing to the five refusals: two more pass.
        let wide = facts("/other", "10.0.0.1", &headers);
        assert_eq!(decide(&settings, &wide, &store, 5, T0).refused, None);
        assert_eq!(decide(&settings, &wide, &store, 5, T0).refused, None);
        assert!(decide(&settings, &wide, &store, 5, T0).refused.is_some());
    }

    #[test]
    fn tiers_keys_and_shadow_mode() {
        let settings = settings(json!({"name": "tiers", "slots": 64, "limits": [
            {"name": "plan", "key": {"kind": "consumer"}, "default_tier": "free",
             "tiers": {"free": {"requests": 1, "window_seconds": 60},
                       "pro": {"requests": 3, "window_seconds": 60}}},
            {"name": "tenant", "key": {"kind": "claim", "path": "org.id"}, "mode": "shadow",
             "tiers": {"default": {"requests": 1, "window_seconds": 60}}},
        ]}));
        let store = ready(&settings);
        // A forged token's claim in the request changes nothing: only what auth
        // verified and published counts.
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"org":{"id":"someone-else"}}"#,
        );
        let headers = vec![(
            "authorization".to_string(),
            format!("Bearer e30.{forged}.sig").into_bytes(),
        )];
        let published: std::collections::BTreeMap<String, String> =
            [("org.id".to_string(), "acme".to_string())].into();
        let mut request = facts("/a", "10.0.0.1", &headers);
        request.consumer = Some("alice");
        request.tier = Some("pro");
        request.claims = Some(&published);
        let first = decide(&settings, &request, &store, 5, T0);
        assert_eq!(first.refused, None);
        assert_eq!(first.outcomes[0].tier, "pro");
        let second = decide(&settings, &request, &store, 5, T0);
        assert_eq!(second.outcomes[1].result, LimitResult::ShadowLimited);
        assert_eq!(second.notable().map(|outcome| outcome.limit), Some(1));
        assert_eq!(second.refused, None, "shadow does not refuse");
        decide(&settings, &request, &store, 5, T0);
        let fourth = decide(&settings, &request, &store, 5, T0);
        assert_eq!(fourth.outcomes[fourth.refused.unwrap()].limit, 0);

        // An unknown tier counts in the default one; no consumer, no count.
        request.consumer = Some("bob");
        request.tier = Some("platinum");
        assert_eq!(
            decide(&settings, &request, &store, 5, T0).outcomes[0].tier,
            "free"
        );
        assert!(decide(&settings, &request, &store, 5, T0).refused.is_some());
        request.consumer = None;
        assert!(decide(&settings, &request, &store, 5, T0)
            .outcomes
            .iter()
            .all(|outcome| outcome.limit != 0));
    }

    #[test]
    fn a_path_that_does_not_normalize_counts_everywhere() {
        let settings = settings(json!({"name": "t", "slots": 64, "limits": [
            {"name": "scoped", "key": {"kind": "client_address"}, "match": {"path": {"prefix": "/api/"}},
             "tiers": {"default": {"requests": 1, "window_seconds": 60}}}]}));
        let store = ready(&settings);
        let headers = vec![];
        assert_eq!(
            decide(
                &settings,
                &facts("/api/x", "10.0.0.2", &headers),
                &store,
                1,
                T0
            )
            .refused,
            None
        );
        let sneaky = facts("/%2e%2e/api%2Fx", "10.0.0.2", &headers);
        assert!(decide(&settings, &sneaky, &store, 1, T0).refused.is_some());
        assert!(decide(
            &settings,
            &facts("/elsewhere", "10.0.0.2", &headers),
            &store,
            1,
            T0
        )
        .outcomes
        .is_empty());
    }

    #[test]
    fn the_headers_describe_the_limit_closest_to_exhaustion() {
        let settings = settings(json!({"name": "t", "slots": 64, "limits": [
            {"name": "big", "key": {"kind": "client_address"},
             "tiers": {"default": {"requests": 100, "window_seconds": 60}}},
            {"name": "small", "key": {"kind": "client_address"},
             "tiers": {"default": {"requests": 5, "window_seconds": 10}}}]}));
        let store = ready(&settings);
        let headers = vec![];
        let decision = decide(&settings, &facts("/", "10.0.0.3", &headers), &store, 1, T0);
        let shown = &decision.outcomes[decision.shown.unwrap()];
        assert_eq!(shown.limit, 1);
        let quota = shown.quota.unwrap();
        assert_eq!(quota.remaining, 4);
        let lines = super::headers("small", &quota, &shown.rule, false);
        assert!(lines.contains(&("ratelimit-policy".into(), "\"small\";q=5;w=10".into())));
        assert!(lines.contains(&("ratelimit".into(), "\"small\";r=4;t=11".into())));
        assert!(!lines.iter().any(|(name, _)| name == "retry-after"));
        let body: Value = serde_json::from_str(&body("small", 3, "abc")).unwrap();
        assert_eq!(body["retry_after_seconds"], 3);
        assert_eq!(body["correlation_id"], "abc");
    }
}
