//! The traffic filter's configuration: strict parse, then checked.

use crate::auth::rules::{Methods, PathMatch, RawPathMatch};
use crate::client_address::MAX_TRUSTED_HOPS;
use crate::config::{check_header_name, parse_json, ConfigError};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const MAX_ROUTES: usize = 64;
pub const MAX_TARGETS: usize = 16;
/// The longest window a health gate or breaker counts over.
pub const MAX_WINDOW_SECONDS: u64 = 3600;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: String,
    #[serde(default = "default_target_header")]
    target_header: String,
    #[serde(default = "default_mirror_header")]
    mirror_header: String,
    #[serde(default)]
    trusted_proxy_hops: u32,
    #[serde(default)]
    r#override: Option<RawOverride>,
    routes: Vec<RawRoute>,
}

fn default_target_header() -> String {
    "x-gatehouse-target".into()
}
fn default_mirror_header() -> String {
    "x-gatehouse-mirror".into()
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawOverride {
    header: String,
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default, rename = "match")]
    matches: Option<RawMatch>,
    targets: Vec<RawTarget>,
    #[serde(default)]
    sticky: Option<RawSticky>,
    #[serde(default)]
    schedule: Vec<RawStep>,
    #[serde(default)]
    mirror: Option<RawMirror>,
    #[serde(default)]
    health_gate: Option<RawHealthGate>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    path: Option<RawPathMatch>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    weight: u32,
    #[serde(default)]
    rewrite: Option<RawRewrite>,
    #[serde(default)]
    circuit_breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    prefix: String,
    replacement: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    #[serde(default)]
    consecutive_failures: u32,
    #[serde(default)]
    failure_percent: u32,
    #[serde(default = "default_window")]
    window_seconds: u64,
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    #[serde(default = "default_open")]
    open_seconds: u64,
    #[serde(default = "default_probes")]
    half_open_probes: u32,
}

fn default_window() -> u64 {
    10
}
fn default_min_requests() -> u64 {
    20
}
fn default_open() -> u64 {
    10
}
fn default_probes() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum RawSticky {
    Consumer,
    ClientAddress,
    Header { name: String },
    Cookie { name: String },
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: String,
    weights: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawMirror {
    percent: f64,
    #[serde(default)]
    target: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawHealthGate {
    stable: String,
    #[serde(default = "default_window")]
    window_seconds: u64,
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    max_error_percent: f64,
    #[serde(default = "default_cooldown")]
    cooldown_seconds: u64,
    #[serde(default)]
    webhook: Option<RawWebhook>,
}

fn default_cooldown() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    cluster: String,
    #[serde(default = "default_webhook_path")]
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_webhook_timeout")]
    timeout_ms: u64,
}

fn default_webhook_path() -> String {
    "/".into()
}
fn default_webhook_timeout() -> u64 {
    3000
}

/// Who may force a target, and with which header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub header: String,
    pub roles: Vec<String>,
}

/// What keeps a caller on one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sticky {
    Consumer,
    ClientAddress,
    Header(String),
    Cookie(String),
}

/// A path rewrite for one target: `prefix` (at a segment boundary) becomes
/// `replacement`; the rest of the path and the query are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rewrite {
    pub prefix: String,
    pub replacement: String,
}

/// A target's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerSettings {
    /// Open after this many failures in a row (0: off).
    pub consecutive_failures: u32,
    /// Or after this share of failures over the window (0: off).
    pub failure_percent: u32,
    pub window_seconds: u64,
    pub min_requests: u64,
    pub open_ms: u64,
    pub half_open_probes: u32,
}

/// One backend target of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub weight: u32,
    pub rewrite: Option<Rewrite>,
    pub breaker: Option<BreakerSettings>,
}

/// A weight change at a moment (ms since the epoch), weights by target index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at_ms: u64,
    pub weights: Vec<u32>,
}

/// Where a rollback is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
}

/// When a new target's errors send its traffic back to the stable one.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthGate {
    /// Index of the stable target.
    pub stable: usize,
    pub window_seconds: u64,
    pub min_requests: u64,
    pub max_error_percent: f64,
    pub cooldown_ms: u64,
    pub webhook: Option<Webhook>,
}

/// A checked route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub methods: Methods,
    pub path: Option<PathMatch>,
    pub targets: Vec<Target>,
    pub sticky: Option<Sticky>,
    pub schedule: Vec<Step>,
    /// Share of requests marked for mirroring, in percent.
    pub mirror_percent: f64,
    /// The shadow target named for the copies (published with the decision; the
    /// Envoy route's mirror policy decides where the copy goes).
    pub mirror_target: Option<String>,
    pub health_gate: Option<HealthGate>,
    /// Changes whenever the route's definition does: a rollback recorded under
    /// another definition does not hold.
    pub fingerprint: u64,
}

impl Route {
    /// The weights in force at `now_ms`: the last schedule step at or before it, or
    /// the targets' own weights.
    pub fn weights_at(&self, now_ms: u64) -> Vec<u32> {
        self.schedule
            .iter()
            .rev()
            .find(|step| step.at_ms <= now_ms)
            .map_or_else(
                || self.targets.iter().map(|target| target.weight).collect(),
                |step| step.weights.clone(),
            )
    }

    /// The length of the per-second window kept for the route's targets.
    pub fn window_seconds(&self) -> u64 {
        let gate = self
            .health_gate
            .as_ref()
            .map_or(0, |gate| gate.window_seconds);
        let breaker = self
            .targets
            .iter()
            .filter_map(|target| target.breaker.map(|breaker| breaker.window_seconds))
            .max()
            .unwrap_or(0);
        gate.max(breaker).max(1)
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSettings {
    pub name: String,
    pub target_header: String,
    pub mirror_header: String,
    pub trusted_proxy_hops: u32,
    pub override_: Option<Override>,
    pub routes: Vec<Route>,
}

fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            path,
            format!("{name:?} must be 1 to 32 of a-z, 0-9, - and _"),
        ))
    }
}

fn check_weights(path: &str, weights: &[u32]) -> Result<(), ConfigError> {
    let sum: u64 = weights.iter().map(|weight| u64::from(*weight)).sum();
    if sum != 100 {
        return Err(ConfigError::invalid(
            path,
            format!("weights must sum to 100, not {sum}"),
        ));
    }
    Ok(())
}

impl TrafficSettings {
    /// The JSON Schema of the configuration (what `gatehouse schema traffic` prints).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RawSettings)).unwrap_or_default()
    }

    /// Parses and checks a configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawSettings = parse_json(bytes)?;
        check_name("name", &raw.name)?;
        let target_header = check_header_name("target_header", &raw.target_header)?;
        let mirror_header = check_header_name("mirror_header", &raw.mirror_header)?;
        if raw.trusted_proxy_hops > MAX_TRUSTED_HOPS {
            return Err(ConfigError::invalid(
                "trusted_proxy_hops",
                format!("must be at most {MAX_TRUSTED_HOPS}"),
            ));
        }
        let override_ = match raw.r#override {
            Some(raw) => {
                let header = check_header_name("override.header", &raw.header)?;
                if raw.roles.is_empty() {
                    return Err(ConfigError::invalid(
                        "override.roles",
                        "name at least one role",
                    ));
                }
                Some(Override {
                    header,
                    roles: raw.roles,
                })
            }
            None => None,
        };
        if raw.routes.is_empty() || raw.routes.len() > MAX_ROUTES {
            return Err(ConfigError::invalid(
                "routes",
                format!("give between 1 and {MAX_ROUTES} routes"),
            ));
        }
        let mut routes: Vec<Route> = Vec::new();
        for (index, raw_route) in raw.routes.into_iter().enumerate() {
            let path = format!("routes[{index}]");
            let route = check_route(&path, raw_route)?;
            if routes.iter().any(|other| other.name == route.name) {
                return Err(ConfigError::invalid(
                    format!("{path}.name"),
                    format!("{:?} is used twice", route.name),
                ));
            }
            routes.push(route);
        }
        Ok(Self {
            name: raw.name,
            target_header,
            mirror_header,
            trusted_proxy_hops: raw.trusted_proxy_hops,
            override_,
            routes,
        })
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|route| {
                let targets: Vec<String> = route
                    .targets
                    .iter()
                    .map(|target| format!("{}={}", target.name, target.weight))
                    .collect();
                format!("{}({})", route.name, targets.join(","))
            })
            .collect();
        format!("name={} routes=[{}]", self.name, routes.join(" "))
    }
}

fn check_route(path: &str, raw: RawRoute) -> Result<Route, ConfigError> {
    check_name(&format!("{path}.name"), &raw.name)?;
    let (methods, path_match) = match raw.matches {
        Some(matches) => (
            Methods::try_new(&format!("{path}.match.methods"), &matches.methods)?,
            matches
                .path
                .map(|raw_path| PathMatch::try_new(&format!("{path}.match.path"), raw_path))
                .transpose()?,
        ),
        None => (Methods::default(), None),
    };
    if raw.targets.is_empty() || raw.targets.len() > MAX_TARGETS {
        return Err(ConfigError::invalid(
            format!("{path}.targets"),
            format!("give between 1 and {MAX_TARGETS} targets"),
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    for (index, raw_target) in raw.targets.into_iter().enumerate() {
        let at = format!("{path}.targets[{index}]");
        check_name(&format!("{at}.name"), &raw_target.name)?;
        if targets.iter().any(|other| other.name == raw_target.name) {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                format!("{:?} is used twice", raw_target.name),
            ));
        }
        if raw_target.weight > 100 {
            return Err(ConfigError::invalid(
                format!("{at}.weight"),
                "must be between 0 and 100",
            ));
        }
        let rewrite = match raw_target.rewrite {
            Some(rewrite) => {
                for (field, value) in [
                    ("prefix", &rewrite.prefix),
                    ("replacement", &rewrite.replacement),
                ] {
                    let normal = crate::path::normalize(value, false).ok();
                    if normal
                        .as_ref()
                        .is_none_or(|normal| normal.path != *value || normal.query.is_some())
                    {
                        return Err(ConfigError::invalid(
                            format!("{at}.rewrite.{field}"),
                            format!("{value:?} is not an absolute path in normal form"),
                        ));
                    }
                }
                Some(Rewrite {
                    prefix: rewrite.prefix,
                    replacement: rewrite.replacement,
                })
            }
            None => None,
        };
        let breaker = raw_target
            .circuit_breaker
            .map(|raw| check_breaker(&format!("{at}.circuit_breaker"), raw))
            .transpose()?;
        targets.push(Target {
            name: raw_target.name,
            weight: raw_target.weight,
            rewrite,
            breaker,
        });
    }
    let weights: Vec<u32> = targets.iter().map(|target| target.weight).collect();
    check_weights(&format!("{path}.targets"), &weights)?;
    let index_of = |name: &str| targets.iter().position(|target| target.name == name);

    let sticky = match raw.sticky {
        None => None,
        Some(RawSticky::Consumer) => Some(Sticky::Consumer),
        Some(RawSticky::ClientAddress) => Some(Sticky::ClientAddress),
        Some(RawSticky::Header { name }) => Some(Sticky::Header(check_header_name(
            &format!("{path}.sticky.name"),
            &name,
        )?)),
        Some(RawSticky::Cookie { name }) => {
            if name.is_empty() || name.contains([';', '=', ' ']) {
                return Err(ConfigError::invalid(
                    format!("{path}.sticky.name"),
                    format!("{name:?} is not a cookie name"),
                ));
            }
            Some(Sticky::Cookie(name))
        }
    };

    let mut schedule: Vec<Step> = Vec::new();
    for (index, raw_step) in raw.schedule.into_iter().enumerate() {
        let at = format!("{path}.schedule[{index}]");
        let at_ms = crate::time::parse_rfc3339_millis(&raw_step.at).ok_or_else(|| {
            ConfigError::invalid(
                format!("{at}.at"),
                format!(
                    "{:?} is not an RFC 3339 time in UTC (2026-12-01T00:00:00Z)",
                    raw_step.at
                ),
            )
        })?;
        if let Some(previous) = schedule.last() {
            if at_ms <= previous.at_ms {
                return Err(ConfigError::invalid(
                    format!("{at}.at"),
                    "steps must be in increasing time, each at its own moment",
                ));
            }
        }
        let mut weights = vec![0u32; targets.len()];
        for (name, weight) in &raw_step.weights {
            let Some(target) = index_of(name) else {
                return Err(ConfigError::invalid(
                    format!("{at}.weights.{name}"),
                    format!("{name:?} is not a target of the route"),
                ));
            };
            if *weight > 100 {
                return Err(ConfigError::invalid(
                    format!("{at}.weights.{name}"),
                    "must be between 0 and 100",
                ));
            }
            weights[target] = *weight;
        }
        check_weights(&format!("{at}.weights"), &weights)?;
        schedule.push(Step { at_ms, weights });
    }

    let mirror_target = raw.mirror.as_ref().and_then(|mirror| mirror.target.clone());
    let mirror_percent = match raw.mirror {
        Some(mirror) => {
            if !(mirror.percent.is_finite() && (0.0..=100.0).contains(&mirror.percent)) {
                return Err(ConfigError::invalid(
                    format!("{path}.mirror.percent"),
                    "must be between 0 and 100",
                ));
            }
            if let Some(target) = &mirror.target {
                if index_of(target).is_none() {
                    return Err(ConfigError::invalid(
                        format!("{path}.mirror.target"),
                        format!("{target:?} is not a target of the route"),
                    ));
                }
            }
            mirror.percent
        }
        None => 0.0,
    };

    let health_gate = match raw.health_gate {
        Some(gate) => {
            let at = format!("{path}.health_gate");
            let Some(stable) = index_of(&gate.stable) else {
                return Err(ConfigError::invalid(
                    format!("{at}.stable"),
                    format!("{:?} is not a target of the route", gate.stable),
                ));
            };
            if !(1..=MAX_WINDOW_SECONDS).contains(&gate.window_seconds) {
                return Err(ConfigError::invalid(
                    format!("{at}.window_seconds"),
                    format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
                ));
            }
            if gate.min_requests == 0 {
                return Err(ConfigError::invalid(
                    format!("{at}.min_requests"),
                    "must be at least 1",
                ));
            }
            if !(gate.max_error_percent.is_finite()
                && gate.max_error_percent >= 0.0
                && gate.max_error_percent < 100.0)
            {
                return Err(ConfigError::invalid(
                    format!("{at}.max_error_percent"),
                    "must be at least 0 and under 100",
                ));
            }
            if !(1..=7 * 86_400).contains(&gate.cooldown_seconds) {
                return Err(ConfigError::invalid(
                    format!("{at}.cooldown_seconds"),
                    "must be between 1 and 604800",
                ));
            }
            let webhook = match gate.webhook {
                Some(webhook) => {
                    if webhook.cluster.is_empty() || !webhook.path.starts_with('/') {
                        return Err(ConfigError::invalid(
                            format!("{at}.webhook"),
                            "needs a cluster and a path starting with /",
                        ));
                    }
                    if !(100..=60_000).contains(&webhook.timeout_ms) {
                        return Err(ConfigError::invalid(
                            format!("{at}.webhook.timeout_ms"),
                            "must be between 100 and 60000",
                        ));
                    }
                    Some(Webhook {
                        authority: webhook.authority.unwrap_or_else(|| webhook.cluster.clone()),
                        cluster: webhook.cluster,
                        path: webhook.path,
                        timeout_ms: webhook.timeout_ms,
                    })
                }
                None => None,
            };
            Some(HealthGate {
                stable,
                window_seconds: gate.window_seconds,
                min_requests: gate.min_requests,
                max_error_percent: gate.max_error_percent,
                cooldown_ms: gate.cooldown_seconds * 1000,
                webhook,
            })
        }
        None => None,
    };

    let definition = format!(
        "{methods:?}|{path_match:?}|{targets:?}|{sticky:?}|{schedule:?}|{mirror_percent}|{health_gate:?}"
    );
    let digest = Sha256::digest(definition.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Ok(Route {
        name: raw.name,
        methods,
        path: path_match,
        targets,
        sticky,
        schedule,
        mirror_percent,
        mirror_target,
        health_gate,
        fingerprint: u64::from_le_bytes(first),
    })
}

fn check_breaker(path: &str, raw: RawBreaker) -> Result<BreakerSettings, ConfigError> {
    if raw.consecutive_failures == 0 && raw.failure_percent == 0 {
        return Err(ConfigError::invalid(
            path,
            "give consecutive_failures or failure_percent",
        ));
    }
    if raw.failure_percent > 100 {
        return Err(ConfigError::invalid(
            format!("{path}.failure_percent"),
            "must be between 0 and 100",
        ));
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&raw.window_seconds) {
        return Err(ConfigError::invalid(
            format!("{path}.window_seconds"),
            format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
        ));
    }
    if !(1..=86_400).contains(&raw.open_seconds) {
        return Err(ConfigError::invalid(
            format!("{path}.open_seconds"),
            "must be between 1 and 86400",
        ));
    }
    if !(1..=1000).contains(&raw.half_open_probes) {
        return Err(ConfigError::invalid(
            format!("{path}.half_open_probes"),
            "must be between 1 and 1000",
        ));
    }
    Ok(BreakerSettings {
        consecutive_failures: raw.consecutive_failures,
        failure_percent: raw.failure_percent,
        window_seconds: raw.window_seconds,
        min_requests: raw.min_requests.max(1),
        open_ms: raw.open_seconds * 1000,
        half_open_probes: raw.half_open_probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<TrafficSettings, ConfigError> {
        TrafficSettings::from_json(value.to_string().as_bytes())
    }

    fn base() -> serde_json::Value {
        json!({"name": "orders", "routes": [{"name": "orders",
            "match": {"path": {"prefix": "/api/v1/orders"}},
            "targets": [{"name": "monolith", "weight": 95},
                        {"name": "orders-v2", "weight": 5,
                         "rewrite": {"prefix": "/api/v1/orders", "replacement": "/orders/v2"}}]}]})
    }

    #[test]
    fn a_route_reads_with_its_defaults() {
        let settings = parse(base()).unwrap();
        assert_eq!(settings.target_header, "x-gatehouse-target");
        let route = &settings.routes[0];
        assert_eq!(route.weights_at(0), vec![95, 5]);
        assert_eq!(route.window_seconds(), 1);
    }

    #[test]
    fn schedules_give_the_weights_in_force() {
        let mut config = base();
        config["routes"][0]["schedule"] = json!([
            {"at": "2026-01-01T00:00:00Z", "weights": {"monolith": 75, "orders-v2": 25}},
            {"at": "2026-01-08T00:00:00Z", "weights": {"monolith": 50, "orders-v2": 50}},
            {"at": "2026-01-15T00:00:00Z", "weights": {"orders-v2": 100}},
        ]);
        let route = &parse(config).unwrap().routes[0];
        let day = 86_400_000;
        let jan1 = 1_767_225_600_000;
        assert_eq!(route.weights_at(jan1 - 1), vec![95, 5]);
        assert_eq!(route.weights_at(jan1), vec![75, 25]);
        assert_eq!(route.weights_at(jan1 + 7 * day - 1), vec![75, 25]);
        assert_eq!(route.weights_at(jan1 + 7 * day), vec![50, 50]);
        assert_eq!(route.weights_at(jan1 + 30 * day), vec![0, 100]);
    }

    #[test]
    fn bad_configurations_name_the_field() {
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c["routes"][0]["targets"][0]["weight"] = json!(90)),
                "routes[0].targets",
            ),
            (
                Box::new(|c| c["routes"][0]["targets"][0]["weight"] = json!(195)),
                "routes[0].targets[0].weight",
            ),
            (
                Box::new(|c| c["routes"][0]["targets"][1]["name"] = json!("monolith")),
                "routes[0].targets[1].name",
            ),
            (
                Box::new(|c| c["routes"][0]["targets"] = json!([])),
                "routes[0].targets",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["schedule"] =
                        json!([{"at": "2026-01-01T00:00:00Z", "weights": {"nowhere": 100}}])
                }),
                "routes[0].schedule[0].weights.nowhere",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["schedule"] =
                        json!([{"at": "2026-01-01T00:00:00Z", "weights": {"monolith": 50}}])
                }),
                "routes[0].schedule[0].weights",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["schedule"] = json!([
                {"at": "2026-01-08T00:00:00Z", "weights": {"monolith": 50, "orders-v2": 50}},
                {"at": "2026-01-01T00:00:00Z", "weights": {"monolith": 75, "orders-v2": 25}}])
                }),
                "routes[0].schedule[1].at",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["schedule"] = json!([
                {"at": "2026-01-01T00:00:00Z", "weights": {"monolith": 50, "orders-v2": 50}},
                {"at": "2026-01-01T00:00:00Z", "weights": {"monolith": 75, "orders-v2": 25}}])
                }),
                "routes[0].schedule[1].at",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["schedule"] =
                        json!([{"at": "next tuesday", "weights": {"monolith": 100}}])
                }),
                "routes[0].schedule[0].at",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["health_gate"] =
                        json!({"stable": "legacy", "max_error_percent": 10})
                }),
                "routes[0].health_gate.stable",
            ),
            (
                Box::new(|c| c["routes"][0]["mirror"] = json!({"percent": 10, "target": "shadow"})),
                "routes[0].mirror.target",
            ),
            (
                Box::new(|c| c["routes"][0]["mirror"] = json!({"percent": 120})),
                "routes[0].mirror.percent",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["targets"][1]["rewrite"]["replacement"] = json!("orders/v2")
                }),
                "routes[0].targets[1].rewrite.replacement",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["targets"][1]["circuit_breaker"] = json!({"open_seconds": 5})
                }),
                "routes[0].targets[1].circuit_breaker",
            ),
            (
                Box::new(|c| {
                    c["routes"][0]["sticky"] = json!({"kind": "header", "name": "X-User"})
                }),
                "routes[0].sticky.name",
            ),
            (
                Box::new(|c| c["routes"][0]["surprise"] = json!(1)),
                "routes[0].surprise",
            ),
            (
                Box::new(|c| c["override"] = json!({"header": "x-force", "roles": []})),
                "override.roles",
            ),
            (Box::new(|c| c["name"] = json!("Orders!")), "name"),
        ];
        for (change, field) in cases {
            let mut config = base();
            change(&mut config);
            let error = parse(config.clone()).unwrap_err();
            assert_eq!(error.path(), field, "{config}: {error}");
        }
    }

    #[test]
    fn schedule_times_are_utc_only() {
        let mut config = base();
        config["routes"][0]["schedule"] = json!([
            {"at": "2026-01-08T00:00:00.0+02:00", "weights": {"monolith": 100}}]);
        let error = parse(config).unwrap_err();
        assert_eq!(error.path(), "routes[0].schedule[0].at", "{error}");
        assert!(error.to_string().contains("in UTC"), "{error}");
    }

    #[test]
    fn the_fingerprint_changes_with_the_route() {
        let first = parse(base()).unwrap().routes[0].fingerprint;
        let mut changed = base();
        changed["routes"][0]["targets"][0]["weight"] = json!(75);
        changed["routes"][0]["targets"][1]["weight"] = json!(25);
        assert_ne!(parse(changed).unwrap().routes[0].fingerprint, first);
        assert_eq!(parse(base()).unwrap().routes[0].fingerprint, first);
    }
}
