//! The ratelimit filter's configuration: strict parse, then checked into the form
//! the filter uses.

use super::algorithm::{Algorithm, Rule};
use crate::auth::rules::{Methods, PathMatch, RawPathMatch};
use crate::client_address::MAX_TRUSTED_HOPS;
use crate::config::{check_header_name, parse_json, ConfigError};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Most limits one filter instance evaluates.
pub const MAX_LIMITS: usize = 32;
/// Bounds of the counter table per limit.
pub const MIN_SLOTS: u32 = 16;
pub const MAX_SLOTS: u32 = 1 << 20;
/// Most counter slots of one instance (all its limits): about 150 bytes each.
pub const MAX_TOTAL_SLOTS: u64 = 1 << 21;
/// The longest window: 30 days.
pub const MAX_WINDOW_SECONDS: u64 = 30 * 86_400;
/// The largest count a rule may name.
pub const MAX_REQUESTS: u64 = 1_000_000_000;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: String,
    #[serde(default)]
    trusted_proxy_hops: u32,
    #[serde(default = "default_ipv6_prefix")]
    ipv6_prefix_length: u8,
    #[serde(default = "default_slots")]
    slots: u32,
    #[serde(default = "default_retries")]
    cas_retries: u32,
    #[serde(default)]
    on_contention: Contention,
    #[serde(default)]
    response_headers: HeaderPolicy,
    limits: Vec<RawLimit>,
    #[serde(default)]
    alert: Option<RawAlert>,
}

fn default_ipv6_prefix() -> u8 {
    64
}
fn default_slots() -> u32 {
    16_384
}
fn default_retries() -> u32 {
    16
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    key: RawKey,
    #[serde(default = "default_algorithm")]
    algorithm: RawAlgorithm,
    #[serde(default, rename = "match")]
    matches: Option<RawMatch>,
    tiers: BTreeMap<String, RawRule>,
    #[serde(default = "default_tier_name")]
    default_tier: String,
    #[serde(default)]
    mode: Mode,
}

fn default_algorithm() -> RawAlgorithm {
    RawAlgorithm::SlidingWindow
}
fn default_tier_name() -> String {
    "default".into()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
enum RawAlgorithm {
    SlidingWindow,
    TokenBucket,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum RawKey {
    ClientAddress,
    Consumer,
    ApiKey {
        #[serde(default = "default_api_key_header")]
        header: String,
    },
    Header {
        name: String,
    },
    Claim {
        path: String,
    },
}

fn default_api_key_header() -> String {
    "x-api-key".into()
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
struct RawRule {
    requests: u64,
    window_seconds: u64,
    #[serde(default)]
    burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawAlert {
    cluster: String,
    #[serde(default = "default_alert_path")]
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_alert_timeout")]
    timeout_ms: u64,
    routing_key: String,
    #[serde(default = "default_trigger")]
    trigger_percent: f64,
    #[serde(default)]
    resolve_percent: Option<f64>,
    #[serde(default = "default_alert_window")]
    window_seconds: u64,
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default = "default_source")]
    source: String,
}

fn default_alert_path() -> String {
    "/v2/enqueue".into()
}
fn default_alert_timeout() -> u64 {
    3000
}
fn default_trigger() -> f64 {
    5.0
}
fn default_alert_window() -> u64 {
    60
}
fn default_min_requests() -> u64 {
    100
}
fn default_severity() -> String {
    "warning".into()
}
fn default_source() -> String {
    "gatehouse".into()
}

/// What happens when the compare-and-swap retries run out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Contention {
    /// Let the request through uncounted.
    #[default]
    Allow,
    /// Answer 429.
    Deny,
}

/// Which responses carry the rate-limit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HeaderPolicy {
    #[default]
    Always,
    Limited,
    Never,
}

/// Enforce a limit, or only count and publish what it would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The client address (IPv6 grouped by the configured prefix).
    ClientAddress,
    /// The consumer the auth filter published.
    Consumer,
    /// A request header's value (an API key header is one).
    Header(String),
    /// A claim of the bearer token, by path.
    Claim(Vec<String>),
}

/// A checked limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub key: KeySource,
    pub algorithm: Algorithm,
    pub methods: Methods,
    pub path: Option<PathMatch>,
    pub tiers: BTreeMap<String, Rule>,
    pub default_tier: String,
    pub mode: Mode,
    /// Changes exactly when what the limit counts changes (key, algorithm, match,
    /// tiers, table size); stored with its counters so that an unrelated
    /// configuration change keeps them.
    pub fingerprint: u64,
}

impl Limit {
    /// The tier a request is counted in, and its rule.
    pub fn tier<'s>(&'s self, published: Option<&'s str>) -> (&'s str, Rule) {
        if let Some(tier) = published {
            if let Some((name, rule)) = self.tiers.get_key_value(tier) {
                return (name, *rule);
            }
        }
        let rule = self.tiers.get(&self.default_tier).copied().unwrap_or(Rule {
            requests: 1,
            window_ms: 1000,
            burst: 1,
        });
        (&self.default_tier, rule)
    }
}

/// Where the alert goes and when.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
    pub routing_key: String,
    pub trigger_percent: f64,
    pub resolve_percent: f64,
    pub window_seconds: u64,
    pub min_requests: u64,
    pub severity: String,
    pub source: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub name: String,
    pub trusted_proxy_hops: u32,
    pub ipv6_prefix_length: u8,
    pub slots: u32,
    pub cas_retries: u32,
    pub on_contention: Contention,
    pub response_headers: HeaderPolicy,
    pub limits: Vec<Limit>,
    pub alert: Option<AlertSettings>,
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

impl RateLimitSettings {
    /// The JSON Schema of the configuration (what `gatehouse schema ratelimit` prints).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RawSettings)).unwrap_or_default()
    }

    /// Parses and checks a configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawSettings = parse_json(bytes)?;
        check_name("name", &raw.name)?;
        if raw.trusted_proxy_hops > MAX_TRUSTED_HOPS {
            return Err(ConfigError::invalid(
                "trusted_proxy_hops",
                format!("must be at most {MAX_TRUSTED_HOPS}"),
            ));
        }
        if !(1..=128).contains(&raw.ipv6_prefix_length) {
            return Err(ConfigError::invalid(
                "ipv6_prefix_length",
                "must be between 1 and 128",
            ));
        }
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&raw.slots) {
            return Err(ConfigError::invalid(
                "slots",
                format!("must be between {MIN_SLOTS} and {MAX_SLOTS}"),
            ));
        }
        if !(1..=1000).contains(&raw.cas_retries) {
            return Err(ConfigError::invalid(
                "cas_retries",
                "must be between 1 and 1000",
            ));
        }
        if raw.limits.is_empty() || raw.limits.len() > MAX_LIMITS {
            return Err(ConfigError::invalid(
                "limits",
                format!("give between 1 and {MAX_LIMITS} limits"),
            ));
        }
        if u64::from(raw.slots) * raw.limits.len() as u64 > MAX_TOTAL_SLOTS {
            return Err(ConfigError::invalid(
                "slots",
                format!(
                    "slots x limits must be at most {MAX_TOTAL_SLOTS} (shared data has no delete)"
                ),
            ));
        }
        let mut limits: Vec<Limit> = Vec::new();
        for (index, raw_limit) in raw.limits.into_iter().enumerate() {
            let path = format!("limits[{index}]");
            let limit = check_limit(&path, raw_limit, raw.slots)?;
            if limits.iter().any(|other| other.name == limit.name) {
                return Err(ConfigError::invalid(
                    format!("{path}.name"),
                    format!("{:?} is used twice", limit.name),
                ));
            }
            limits.push(limit);
        }
        let alert = raw.alert.map(check_alert).transpose()?;
        Ok(Self {
            name: raw.name,
            trusted_proxy_hops: raw.trusted_proxy_hops,
            ipv6_prefix_length: raw.ipv6_prefix_length,
            slots: raw.slots,
            cas_retries: raw.cas_retries,
            on_contention: raw.on_contention,
            response_headers: raw.response_headers,
            limits,
            alert,
        })
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let limits: Vec<String> = self
            .limits
            .iter()
            .map(|limit| {
                let tiers: Vec<String> = limit
                    .tiers
                    .iter()
                    .map(|(tier, rule)| {
                        format!("{tier}={}/{}s", rule.requests, rule.window_ms / 1000)
                    })
                    .collect();
                format!(
                    "{}({:?},{:?},{})",
                    limit.name,
                    limit.algorithm,
                    limit.mode,
                    tiers.join(",")
                )
            })
            .collect();
        format!(
            "name={} slots={} limits=[{}] alert={}",
            self.name,
            self.slots,
            limits.join(" "),
            if self.alert.is_some() { "on" } else { "off" }
        )
    }
}

fn check_limit(path: &str, raw: RawLimit, slots: u32) -> Result<Limit, ConfigError> {
    check_name(&format!("{path}.name"), &raw.name)?;
    let key = match raw.key {
        RawKey::ClientAddress => KeySource::ClientAddress,
        RawKey::Consumer => KeySource::Consumer,
        RawKey::ApiKey { header } => {
            KeySource::Header(check_header_name(&format!("{path}.key.header"), &header)?)
        }
        RawKey::Header { name } => {
            KeySource::Header(check_header_name(&format!("{path}.key.name"), &name)?)
        }
        RawKey::Claim { path: claim } => {
            let parts: Vec<String> = claim.split('.').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                return Err(ConfigError::invalid(
                    format!("{path}.key.path"),
                    format!("{claim:?} is not a claim path (names joined by dots)"),
                ));
            }
            KeySource::Claim(parts)
        }
    };
    let algorithm = match raw.algorithm {
        RawAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
        RawAlgorithm::TokenBucket => Algorithm::TokenBucket,
    };
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
    if raw.tiers.is_empty() {
        return Err(ConfigError::invalid(
            format!("{path}.tiers"),
            "give at least one tier",
        ));
    }
    let mut tiers = BTreeMap::new();
    for (tier, rule) in raw.tiers {
        let at = format!("{path}.tiers.{tier}");
        check_name(&at, &tier)?;
        if !(1..=MAX_REQUESTS).contains(&rule.requests) {
            return Err(ConfigError::invalid(
                format!("{at}.requests"),
                format!("must be between 1 and {MAX_REQUESTS}"),
            ));
        }
        if !(1..=MAX_WINDOW_SECONDS).contains(&rule.window_seconds) {
            return Err(ConfigError::invalid(
                format!("{at}.window_seconds"),
                format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
            ));
        }
        let burst = rule.burst.unwrap_or(rule.requests);
        if !(1..=MAX_REQUESTS).contains(&burst) {
            return Err(ConfigError::invalid(
                format!("{at}.burst"),
                format!("must be between 1 and {MAX_REQUESTS}"),
            ));
        }
        tiers.insert(
            tier,
            Rule {
                requests: rule.requests,
                window_ms: rule.window_seconds * 1000,
                burst,
            },
        );
    }
    if !tiers.contains_key(&raw.default_tier) {
        return Err(ConfigError::invalid(
            format!("{path}.default_tier"),
            format!("{:?} is not one of the limit's tiers", raw.default_tier),
        ));
    }
    let definition = format!(
        "{key:?}|{algorithm:?}|{methods:?}|{path_match:?}|{tiers:?}|{}|{slots}",
        raw.default_tier
    );
    let digest = Sha256::digest(definition.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Ok(Limit {
        name: raw.name,
        key,
        algorithm,
        methods,
        path: path_match,
        tiers,
        default_tier: raw.default_tier,
        mode: raw.mode,
        fingerprint: u64::from_le_bytes(first),
    })
}

fn check_alert(raw: RawAlert) -> Result<AlertSettings, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::invalid("alert.cluster", "must name a cluster"));
    }
    if !raw.path.starts_with('/') {
        return Err(ConfigError::invalid("alert.path", "must start with /"));
    }
    if raw.routing_key.is_empty() {
        return Err(ConfigError::invalid(
            "alert.routing_key",
            "must not be empty",
        ));
    }
    let percent = |value: f64| value.is_finite() && value > 0.0 && value <= 100.0;
    if !percent(raw.trigger_percent) {
        return Err(ConfigError::invalid(
            "alert.trigger_percent",
            "must be above 0 and at most 100",
        ));
    }
    let resolve = raw.resolve_percent.unwrap_or(raw.trigger_percent / 2.0);
    if !(resolve.is_finite() && resolve >= 0.0 && resolve < raw.trigger_percent) {
        return Err(ConfigError::invalid(
            "alert.resolve_percent",
            "must be at least 0 and under trigger_percent",
        ));
    }
    if !(2..=3600).contains(&raw.window_seconds) {
        return Err(ConfigError::invalid(
            "alert.window_seconds",
            "must be between 2 and 3600",
        ));
    }
    if raw.min_requests == 0 {
        return Err(ConfigError::invalid(
            "alert.min_requests",
            "must be at least 1",
        ));
    }
    if !(100..=60_000).contains(&raw.timeout_ms) {
        return Err(ConfigError::invalid(
            "alert.timeout_ms",
            "must be between 100 and 60000",
        ));
    }
    if !["critical", "error", "warning", "info"].contains(&raw.severity.as_str()) {
        return Err(ConfigError::invalid(
            "alert.severity",
            "must be critical, error, warning or info",
        ));
    }
    Ok(AlertSettings {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: raw.path,
        timeout_ms: raw.timeout_ms,
        routing_key: raw.routing_key,
        trigger_percent: raw.trigger_percent,
        resolve_percent: resolve,
        window_seconds: raw.window_seconds,
        min_requests: raw.min_requests,
        severity: raw.severity,
        source: raw.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<RateLimitSettings, ConfigError> {
        RateLimitSettings::from_json(value.to_string().as_bytes())
    }

    fn minimal() -> serde_json::Value {
        json!({"name": "edge", "limits": [{"name": "per-address", "key": {"kind": "client_address"},
               "tiers": {"default": {"requests": 500, "window_seconds": 10}}}]})
    }

    #[test]
    fn a_minimal_configuration_gets_the_defaults() {
        let settings = parse(minimal()).unwrap();
        assert_eq!(settings.slots, 16_384);
        assert_eq!(settings.cas_retries, 16);
        assert_eq!(settings.on_contention, Contention::Allow);
        assert_eq!(settings.response_headers, HeaderPolicy::Always);
        let limit = &settings.limits[0];
        assert_eq!(limit.algorithm, Algorithm::SlidingWindow);
        assert_eq!(limit.mode, Mode::Enforce);
        assert_eq!(
            limit.tier(Some("gold")),
            (
                "default",
                Rule {
                    requests: 500,
                    window_ms: 10_000,
                    burst: 500
                }
            )
        );
    }

    #[test]
    fn every_key_kind_reads() {
        for (key, expected) in [
            (json!({"kind": "consumer"}), KeySource::Consumer),
            (
                json!({"kind": "api_key"}),
                KeySource::Header("x-api-key".into()),
            ),
            (
                json!({"kind": "header", "name": "x-tenant"}),
                KeySource::Header("x-tenant".into()),
            ),
            (
                json!({"kind": "claim", "path": "org.id"}),
                KeySource::Claim(vec!["org".into(), "id".into()]),
            ),
        ] {
            let mut config = minimal();
            config["limits"][0]["key"] = key;
            assert_eq!(parse(config).unwrap().limits[0].key, expected);
        }
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let cases = [
            (json!({"name": "edge"}), "."),
            (json!({"name": "Edge!", "limits": []}), "name"),
            (json!({"name": "edge", "limits": []}), "limits"),
            (
                json!({"name": "edge", "slots": 3, "limits": minimal()["limits"]}),
                "slots",
            ),
            (
                json!({"name": "edge", "cas_retries": 0, "limits": minimal()["limits"]}),
                "cas_retries",
            ),
            (
                json!({"name": "edge", "ipv6_prefix_length": 0, "limits": minimal()["limits"]}),
                "ipv6_prefix_length",
            ),
            (
                json!({"name": "edge", "trusted_proxy_hops": 99, "limits": minimal()["limits"]}),
                "trusted_proxy_hops",
            ),
            (
                json!({"name": "edge", "on_contention": "maybe", "limits": minimal()["limits"]}),
                "on_contention",
            ),
            (
                json!({"name": "edge", "surprise": 1, "limits": minimal()["limits"]}),
                "surprise",
            ),
        ];
        for (config, field) in cases {
            let error = parse(config.clone()).unwrap_err();
            assert_eq!(error.path(), field, "{config}: {error}");
        }
        let limit_cases = [
            (
                json!({"kind": "header", "name": "X-Tenant"}),
                "key",
                "limits[0].key.name",
            ),
            (
                json!({"kind": "claim", "path": "org..id"}),
                "key",
                "limits[0].key.path",
            ),
            (json!({"kind": "cookie"}), "key", "limits[0].key.kind"),
            (json!({}), "tiers", "limits[0].tiers"),
            (
                json!({"default": {"requests": 0, "window_seconds": 10}}),
                "tiers",
                "limits[0].tiers.default.requests",
            ),
            (
                json!({"default": {"requests": 5, "window_seconds": 0}}),
                "tiers",
                "limits[0].tiers.default.window_seconds",
            ),
            (
                json!({"default": {"requests": 5, "window_seconds": 10, "burst": 0}}),
                "tiers",
                "limits[0].tiers.default.burst",
            ),
            (
                json!({"free": {"requests": 5, "window_seconds": 10}}),
                "tiers",
                "limits[0].default_tier",
            ),
            (
                json!({"path": {"prefix": "/a/../b"}}),
                "match",
                "limits[0].match.path",
            ),
            (
                json!({"methods": ["FETCH"]}),
                "match",
                "limits[0].match.methods[0]",
            ),
            (json!("sometimes"), "mode", "limits[0].mode"),
        ];
        for (value, field, path) in limit_cases {
            let mut config = minimal();
            config["limits"][0][field] = value;
            let error = parse(config.clone()).unwrap_err();
            assert_eq!(error.path(), path, "{config}: {error}");
        }
        let mut twice = minimal();
        let first = twice["limits"][0].clone();
        twice["limits"].as_array_mut().unwrap().push(first);
        assert_eq!(parse(twice).unwrap_err().path(), "limits[1].name");
    }

    #[test]
    fn the_counter_tables_are_bounded_in_all() {
        let mut config = minimal();
        config["slots"] = json!(1_048_576);
        let limit = config["limits"][0].clone();
        for name in ["second", "third"] {
            let mut more = limit.clone();
            more["name"] = json!(name);
            config["limits"].as_array_mut().unwrap().push(more);
        }
        let error = parse(config).unwrap_err();
        assert_eq!(error.path(), "slots", "{error}");
        assert!(error.to_string().contains("slots x limits"), "{error}");
    }

    #[test]
    fn alert_settings_are_checked() {
        let alert = json!({"cluster": "pagerduty", "routing_key": "key"});
        let mut config = minimal();
        config["alert"] = alert.clone();
        let settings = parse(config).unwrap();
        let checked = settings.alert.unwrap();
        assert_eq!(checked.resolve_percent, 2.5);
        assert_eq!(checked.authority, "pagerduty");
        for (field, value) in [
            ("trigger_percent", json!(0)),
            ("resolve_percent", json!(7)),
            ("window_seconds", json!(1)),
            ("min_requests", json!(0)),
            ("severity", json!("loud")),
            ("path", json!("v2")),
            ("routing_key", json!("")),
            ("timeout_ms", json!(5)),
        ] {
            let mut config = minimal();
            config["alert"] = alert.clone();
            config["alert"][field] = value;
            let error = parse(config).unwrap_err();
            assert_eq!(error.path(), format!("alert.{field}"), "{error}");
        }
    }

    #[test]
    fn the_fingerprint_follows_what_the_limit_counts_only() {
        let base = parse(minimal()).unwrap().limits[0].fingerprint;
        let mut shadow = minimal();
        shadow["limits"][0]["mode"] = json!("shadow");
        shadow["response_headers"] = json!("never");
        assert_eq!(parse(shadow).unwrap().limits[0].fingerprint, base);
        let mut changed = minimal();
        changed["limits"][0]["tiers"]["default"]["requests"] = json!(501);
        assert_ne!(parse(changed).unwrap().limits[0].fingerprint, base);
        let mut resized = minimal();
        resized["slots"] = json!(1024);
        assert_ne!(parse(resized).unwrap().limits[0].fingerprint, base);
    }
}
