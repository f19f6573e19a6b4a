//! Choosing a target: weighted rendezvous hashing, sticky keys, overrides, the
//! health gate's rollbacks, mirroring and rewrites.
//!
//! Each target scores `-ln(u) / weight`, where `u` in (0, 1) is a fixed hash of the
//! caller's key and the target's name; the lowest score wins. A target then wins
//! for a share of keys exactly proportional to its weight, the same key always gets
//! the same target for the same weights (in every worker, and after restarts: the
//! hash is not seeded), and raising one target's weight lowers only that target's
//! scores, so callers only ever move to it: a caller moved to a new target at 5%
//! stays there at 25%.

use super::config::{Route, Sticky, TrafficSettings};
use crate::path::normalize;
use std::net::IpAddr;

/// FNV-1a, then SplitMix64's finalizer: fixed, fast, well mixed.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The target (index) a key lands on with these weights; `None` if every weight
/// is zero.
pub fn rendezvous(key: u64, names: &[&str], weights: &[u32]) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (index, (name, weight)) in names.iter().zip(weights).enumerate() {
        if *weight == 0 {
            continue;
        }
        let mut bytes = key.to_le_bytes().to_vec();
        bytes.extend_from_slice(name.as_bytes());
        let hash = stable_hash(&bytes);
        // 53 random bits, strictly inside (0, 1).
        let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -unit.ln() / f64::from(*weight);
        if best.is_none_or(|(lowest, _)| score < lowest) {
            best = Some((score, index));
        }
    }
    best.map(|(_, index)| index)
}

/// What the filter knows about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `:path` as received.
    pub path: &'a str,
    pub headers: &'a [(String, Vec<u8>)],
    /// Published by the auth filter, if it ran before.
    pub consumer: Option<&'a str>,
    pub roles: &'a [String],
    /// The client address, resolved with the trusted hops.
    pub client: Option<IpAddr>,
}

/// Why the target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// By the caller's sticky key.
    Sticky,
    /// At random (no key configured or present).
    Random,
    /// Forced by a caller with an override role.
    Override,
    /// The chosen target is rolled back by the health gate: its stable one.
    Rollback,
}

/// The choice for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub route: usize,
    pub target: usize,
    pub reason: Reason,
    pub mirror: bool,
    /// The new `:path` when the target rewrites it.
    pub path: Option<String>,
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_slice())
}

/// The value of cookie `name` from every `cookie` header.
pub fn cookie(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .filter(|(key, _)| key == "cookie")
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value)
                .split(';')
                .map(str::trim)
                .filter_map(|pair| pair.split_once('='))
                .filter(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
                .collect::<Vec<_>>()
        })
        .next()
}

fn sticky_key(route: &Route, facts: &RequestFacts<'_>) -> Option<Vec<u8>> {
    let key = match route.sticky.as_ref()? {
        Sticky::Consumer => facts.consumer.map(|consumer| consumer.as_bytes().to_vec()),
        Sticky::ClientAddress => facts.client.map(|ip| ip.to_string().into_bytes()),
        Sticky::Header(name) => header(facts.headers, name).map(<[u8]>::to_vec),
        Sticky::Cookie(name) => cookie(facts.headers, name).map(String::into_bytes),
    };
    key.filter(|key| !key.is_empty())
}

/// `prefix` (compared without ASCII case) at a segment boundary of `path` replaced
/// by `replacement`, the query kept; `None` when the path does not start with it.
/// Given the normalized path, so that dot segments cannot climb out of it.
pub fn rewrite(path: &str, prefix: &str, replacement: &str) -> Option<String> {
    let (path_part, query) = match path.split_once('?') {
        Some((path_part, query)) => (path_part, Some(query)),
        None => (path, None),
    };
    // Case-insensitive, like the route match.
    let head = path_part.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = path_part.get(prefix.len()..)?;
    if !(rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')) {
        return None;
    }
    let mut out = format!("{}{rest}", replacement.trim_end_matches('/'));
    if out.is_empty() || !out.starts_with('/') {
        out.insert(0, '/');
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// Picks the target. `rolled_back(route, target)` says whether the health gate has
/// sent a target's traffic back to its stable one; `random` is a fresh random value
/// for this request.
pub fn choose(
    settings: &TrafficSettings,
    facts: &RequestFacts<'_>,
    now_ms: u64,
    rolled_back: &dyn Fn(usize, usize) -> bool,
    random: u64,
) -> Option<Choice> {
    let normalized = normalize(facts.path, false).ok()?;
    let (route_index, route) = settings.routes.iter().enumerate().find(|(_, route)| {
        route.methods.matches(facts.method)
            && route
                .path
                .as_ref()
                .is_none_or(|matcher| matcher.matches(&normalized.path))
    })?;
    let names: Vec<&str> = route
        .targets
        .iter()
        .map(|target| target.name.as_str())
        .collect();

    let forced = settings.override_.as_ref().and_then(|rule| {
        let wanted = header(facts.headers, &rule.header)?;
        let allowed = facts.roles.iter().any(|role| rule.roles.contains(role));
        if !allowed {
            return None;
        }
        names.iter().position(|name| name.as_bytes() == wanted)
    });

    let (mut target, mut reason) = match forced {
        Some(target) => (target, Reason::Override),
        None => {
            let weights = route.weights_at(now_ms);
            let (key, reason) = match sticky_key(route, facts) {
                Some(key) => (stable_hash(&key), Reason::Sticky),
                None => (random, Reason::Random),
            };
            (rendezvous(key, &names, &weights)?, reason)
        }
    };
    if reason != Reason::Override {
        if let Some(gate) = &route.health_gate {
            if target != gate.stable && rolled_back(route_index, target) {
                target = gate.stable;
                reason = Reason::Rollback;
            }
        }
    }
    // A second draw from the same random value decides mirroring.
    let mirror = route.mirror_percent > 0.0
        && ((stable_hash(&random.to_le_bytes()) % 10_000) as f64) < route.mirror_percent * 100.0;
    let path = route.targets.get(target).and_then(|chosen| {
        let rule = chosen.rewrite.as_ref()?;
        let normal = match &normalized.query {
            Some(query) => format!("{}?{query}", normalized.path),
            None => normalized.path.clone(),
        };
        rewrite(&normal, &rule.prefix, &rule.replacement)
    });
    Some(Choice {
        route: route_index,
        target,
        reason,
        mirror,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SplitMix64;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> TrafficSettings {
        TrafficSettings::from_json(value.to_string().as_bytes()).unwrap()
    }

    fn split(weights: [u32; 2], sticky: bool) -> TrafficSettings {
        let mut config = json!({"name": "t", "routes": [{"name": "orders",
            "match": {"path": {"prefix": "/api/v1/orders"}},
            "targets": [{"name": "monolith", "weight": weights[0]},
                        {"name": "orders-v2", "weight": weights[1],
                         "rewrite": {"prefix": "/api/v1/orders", "replacement": "/orders/v2"}}]}]});
        if sticky {
            config["routes"][0]["sticky"] = json!({"kind": "header", "name": "x-user"});
        }
        settings(config)
    }

    fn facts<'a>(path: &'a str, headers: &'a [(String, Vec<u8>)]) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            path,
            headers,
            consumer: None,
            roles: &[],
            client: None,
        }
    }

    fn never(_: usize, _: usize) -> bool {
        false
    }

    #[test]
    fn weights_are_honoured_and_zero_is_never_chosen() {
        let mut random = SplitMix64::new(7);
        let ninety_ten = split([90, 10], false);
        let headers = vec![];
        let request = facts("/api/v1/orders/1", &headers);
        let mut new = 0;
        for _ in 0..100_000 {
            let choice = choose(&ninety_ten, &request, 0, &never, random.next_u64()).unwrap();
            new += usize::from(choice.target == 1);
        }
        assert!((9_500..=10_500).contains(&new), "{new}");
        for (weights, expected) in [([100, 0], 0), ([0, 100], 1)] {
            let route = split(weights, false);
            for _ in 0..1000 {
                let choice = choose(&route, &request, 0, &never, random.next_u64()).unwrap();
                assert_eq!(choice.target, expected);
            }
        }
    }

    #[test]
    fn sticky_keys_stay_and_only_move_to_a_growing_target() {
        let users: Vec<Vec<(String, Vec<u8>)>> = (0..5000)
            .map(|n| vec![("x-user".to_string(), format!("user-{n}").into_bytes())])
            .collect();
        let target_at = |weights: [u32; 2], headers: &[(String, Vec<u8>)]| {
            choose(
                &split(weights, true),
                &facts("/api/v1/orders", headers),
                0,
                &never,
                99,
            )
            .unwrap()
            .target
        };
        let mut previous: Vec<usize> = users.iter().map(|user| target_at([95, 5], user)).collect();
        for weights in [[75, 25], [50, 50], [0, 100]] {
            let now: Vec<usize> = users.iter().map(|user| target_at(weights, user)).collect();
            for (before, after) in previous.iter().zip(&now) {
                assert!(
                    !(*before == 1 && *after == 0),
                    "a caller left the growing target"
                );
            }
            let share = now.iter().filter(|target| **target == 1).count();
            let expected = weights[1] as usize * 50;
            assert!(share.abs_diff(expected) <= 150, "{weights:?}: {share}");
            previous = now;
        }
        // The same key, the same answer, whatever the random value.
        let user = &users[3];
        let first = choose(
            &split([50, 50], true),
            &facts("/api/v1/orders", user),
            0,
            &never,
            1,
        );
        let again = choose(
            &split([50, 50], true),
            &facts("/api/v1/orders", user),
            0,
            &never,
            2,
        );
        assert_eq!(first.map(|c| c.target), again.map(|c| c.target));
    }

    #[test]
    fn rewrites_keep_the_query_and_respect_segments() {
        assert_eq!(
            rewrite("/api/v1/orders/7?x=1&y=2", "/api/v1/orders", "/orders/v2"),
            Some("/orders/v2/7?x=1&y=2".into())
        );
        assert_eq!(
            rewrite("/api/v1/orders", "/api/v1/orders", "/orders/v2"),
            Some("/orders/v2".into())
        );
        assert_eq!(
            rewrite("/api/v1/ordersx", "/api/v1/orders", "/orders/v2"),
            None
        );
        assert_eq!(
            rewrite("/api/v1/orders?q", "/api/v1/orders", "/"),
            Some("/?q".into())
        );
        let route = split([0, 100], false);
        let headers = vec![];
        let choice = choose(
            &route,
            &facts("/api/v1/orders/7?x=1", &headers),
            0,
            &never,
            5,
        )
        .unwrap();
        assert_eq!(choice.path.as_deref(), Some("/orders/v2/7?x=1"));
        assert!(choose(&route, &facts("/elsewhere", &headers), 0, &never, 5).is_none());
        // Dot segments are resolved before the rewrite: they cannot climb out of it.
        let climbing = choose(
            &route,
            &facts("/api/v1/orders/../../v1/x", &headers),
            0,
            &never,
            5,
        );
        assert!(climbing.is_none(), "/api/v1/x is not an orders path");
        let inside = choose(
            &route,
            &facts("/api/v1/orders/a/../7", &headers),
            0,
            &never,
            5,
        )
        .unwrap();
        assert_eq!(inside.path.as_deref(), Some("/orders/v2/7"));
    }

    #[test]
    fn overrides_need_the_role_and_rollbacks_send_traffic_to_the_stable_target() {
        let mut config = json!({"name": "t", "override": {"header": "x-force", "roles": ["tester"]},
            "routes": [{"name": "orders", "targets": [{"name": "monolith", "weight": 0}, {"name": "orders-v2", "weight": 100}],
            "health_gate": {"stable": "monolith", "max_error_percent": 10}}]});
        let route = settings(config.clone());
        let headers = vec![("x-force".to_string(), b"monolith".to_vec())];
        let tester = vec!["tester".to_string()];
        let mut request = facts("/x", &headers);
        assert_eq!(
            choose(&route, &request, 0, &never, 1).unwrap().target,
            1,
            "no role"
        );
        request.roles = &tester;
        let forced = choose(&route, &request, 0, &never, 1).unwrap();
        assert_eq!((forced.target, forced.reason), (0, Reason::Override));
        let rolled = |_: usize, target: usize| target == 1;
        let plain = facts("/x", &[]);
        let back = choose(&route, &plain, 0, &rolled, 1).unwrap();
        assert_eq!((back.target, back.reason), (0, Reason::Rollback));
        config["routes"][0]["mirror"] = json!({"percent": 100});
        let mirrored = settings(config);
        assert!(choose(&mirrored, &plain, 0, &never, 3).unwrap().mirror);
        assert!(!choose(&route, &plain, 0, &never, 3).unwrap().mirror);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let headers = vec![("cookie".to_string(), b"a=1; sid=xyz; b=2".to_vec())];
        assert_eq!(cookie(&headers, "sid").as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "none"), None);
    }
}
