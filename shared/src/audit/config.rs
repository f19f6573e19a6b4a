//! The audit filter's configuration: the raw JSON shape, and its checked form.

use super::collector::{CollectorFormat, CollectorSettings};
use crate::client_address::MAX_TRUSTED_HOPS;
use crate::config::{check_header_name, parse_json, ConfigError};
use crate::correlation::CorrelationPolicy;
use crate::redact::{KeyedHasher, ALWAYS_REDACTED_HEADERS};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Query parameters redacted when the configuration names none.
pub const DEFAULT_SENSITIVE_QUERY_PARAMETERS: [&str; 9] = [
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "api_key",
    "apikey",
    "key",
    "password",
    "client_secret",
];

/// Shortest `redaction.hash_key`, in bytes.
pub const MIN_HASH_KEY_BYTES: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawAuditConfig {
    correlation: RawCorrelation,
    client_address: RawClientAddress,
    redaction: RawRedaction,
    record: RawRecord,
    access_log: RawAccessLog,
    collector: Option<RawCollector>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawCorrelation {
    header: String,
    pattern: Option<String>,
    max_length: usize,
}

impl Default for RawCorrelation {
    fn default() -> Self {
        Self {
            header: "x-correlation-id".into(),
            pattern: None,
            max_length: 128,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawClientAddress {
    trusted_proxy_hops: u32,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawRedaction {
    headers: Vec<String>,
    query_parameters: Vec<String>,
    api_key_headers: Vec<String>,
    hash_key: Option<String>,
}

impl Default for RawRedaction {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            query_parameters: DEFAULT_SENSITIVE_QUERY_PARAMETERS
                .iter()
                .map(|name| name.to_string())
                .collect(),
            api_key_headers: vec!["x-api-key".into()],
            hash_key: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawRecord {
    request_headers: Vec<String>,
    response_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawAccessLog {
    enabled: bool,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawCollector {
    cluster: String,
    authority: Option<String>,
    path: String,
    format: CollectorFormat,
    index: String,
    headers: BTreeMap<String, String>,
    sample_rate: f64,
    batch_max_records: usize,
    batch_max_bytes: usize,
    flush_interval_ms: u64,
    max_buffered_records: usize,
    max_buffered_bytes: usize,
    timeout_ms: u64,
    max_attempts: u32,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
}

impl Default for RawCollector {
    fn default() -> Self {
        Self {
            cluster: String::new(),
            authority: None,
            path: "/".into(),
            format: CollectorFormat::Ndjson,
            index: "gatehouse-audit".into(),
            headers: BTreeMap::new(),
            sample_rate: 1.0,
            batch_max_records: 100,
            batch_max_bytes: 1 << 20,
            flush_interval_ms: 1000,
            max_buffered_records: 10_000,
            max_buffered_bytes: 8 << 20,
            timeout_ms: 5000,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

/// The checked audit configuration. Built once per configuration; never changed.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// How incoming correlation ids are judged and which header carries them.
    pub correlation: CorrelationPolicy,
    /// Proxies in front of the gateway trusted to append to `x-forwarded-for`.
    pub trusted_proxy_hops: u32,
    /// Lowercase names of headers whose values never appear in a record.
    pub redacted_headers: Vec<String>,
    /// Query parameters whose values are replaced in the recorded path.
    pub sensitive_query_parameters: Vec<String>,
    /// Headers that carry API keys; recorded only as a keyed fingerprint.
    pub api_key_headers: Vec<String>,
    /// Present when `redaction.hash_key` is set; without it API keys are not recorded.
    pub api_key_hasher: Option<KeyedHasher>,
    /// Request headers copied into the record (redacted where listed).
    pub request_headers: Vec<String>,
    /// Response headers copied into the record (redacted where listed).
    pub response_headers: Vec<String>,
    /// Whether the record is published for Envoy's access log.
    pub access_log: bool,
    /// The HTTP collector sink, when configured.
    pub collector: Option<CollectorSettings>,
}

impl AuditSettings {
    /// The JSON Schema of the configuration (what `gatehouse schema audit` prints).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RawAuditConfig)).unwrap_or_default()
    }

    /// Parses and checks a JSON configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawAuditConfig = parse_json(bytes)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawAuditConfig) -> Result<Self, ConfigError> {
        let correlation = correlation_policy(raw.correlation)?;

        if raw.client_address.trusted_proxy_hops > MAX_TRUSTED_HOPS {
            return Err(ConfigError::invalid(
                "client_address.trusted_proxy_hops",
                format!("must be at most {MAX_TRUSTED_HOPS}"),
            ));
        }

        let mut redacted_headers = header_list("redaction.headers", &raw.redaction.headers)?;
        let api_key_headers =
            header_list("redaction.api_key_headers", &raw.redaction.api_key_headers)?;
        for name in ALWAYS_REDACTED_HEADERS.iter().map(|name| name.to_string()) {
            if !redacted_headers.contains(&name) {
                redacted_headers.push(name);
            }
        }
        for name in &api_key_headers {
            if !redacted_headers.contains(name) {
                redacted_headers.push(name.clone());
            }
        }

        let mut sensitive_query_parameters = Vec::new();
        for (index, name) in raw.redaction.query_parameters.iter().enumerate() {
            if name.is_empty() {
                let path = format!("redaction.query_parameters[{index}]");
                return Err(ConfigError::invalid(path, "must not be empty"));
            }
            sensitive_query_parameters.push(name.to_ascii_lowercase());
        }

        let api_key_hasher = match raw.redaction.hash_key {
            None => None,
            Some(key) if key.len() < MIN_HASH_KEY_BYTES => {
                return Err(ConfigError::invalid(
                    "redaction.hash_key",
                    format!("must be at least {MIN_HASH_KEY_BYTES} bytes"),
                ))
            }
            Some(key) => Some(KeyedHasher::new(key.as_bytes())),
        };

        let collector = raw.collector.map(collector_settings).transpose()?;

        Ok(Self {
            correlation,
            trusted_proxy_hops: raw.client_address.trusted_proxy_hops,
            redacted_headers,
            sensitive_query_parameters,
            api_key_headers,
            api_key_hasher,
            request_headers: header_list("record.request_headers", &raw.record.request_headers)?,
            response_headers: header_list("record.response_headers", &raw.record.response_headers)?,
            access_log: raw.access_log.enabled,
            collector,
        })
    }

    /// One line for the start-up log: the effective settings, no secrets.
    pub fn summary(&self) -> String {
        let collector = match &self.collector {
            Some(collector) => format!(
                "{}{} format={} batch={} buffer={} sample_rate={}",
                collector.cluster,
                collector.path,
                collector.format.name(),
                collector.batch_max_records,
                collector.max_buffered_records,
                collector.sample_rate
            ),
            None => "off".into(),
        };
        format!(
            "correlation_header={} trusted_proxy_hops={} access_log={} collector={} api_key_fingerprints={}",
            self.correlation.header,
            self.trusted_proxy_hops,
            self.access_log,
            collector,
            self.api_key_hasher.is_some()
        )
    }

    /// Whether a header's value must be redacted in a record.
    pub fn is_redacted(&self, name: &str) -> bool {
        self.redacted_headers
            .iter()
            .any(|redacted| redacted == name)
    }
}

fn correlation_policy(raw: RawCorrelation) -> Result<CorrelationPolicy, ConfigError> {
    let header = check_header_name("correlation.header", &raw.header)?;
    if header.starts_with(':') {
        return Err(ConfigError::invalid(
            "correlation.header",
            "must not be a pseudo-header",
        ));
    }
    if !(1..=1024).contains(&raw.max_length) {
        return Err(ConfigError::invalid(
            "correlation.max_length",
            "must be between 1 and 1024",
        ));
    }
    let pattern = match raw.pattern {
        None => None,
        Some(pattern) => {
            let anchored = format!("^(?:{pattern})$");
            let compiled = regex_lite::Regex::new(&anchored).map_err(|error| {
                ConfigError::invalid(
                    "correlation.pattern",
                    format!("not a valid pattern: {error}"),
                )
            })?;
            Some(compiled)
        }
    };
    Ok(CorrelationPolicy {
        header,
        max_length: raw.max_length,
        pattern,
    })
}

fn header_list(path: &str, names: &[String]) -> Result<Vec<String>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(index, name)| check_header_name(&format!("{path}[{index}]"), name))
        .collect()
}

fn collector_settings(raw: RawCollector) -> Result<CollectorSettings, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::invalid("collector.cluster", "is required"));
    }
    if !raw.path.starts_with('/') {
        return Err(ConfigError::invalid("collector.path", "must start with /"));
    }
    if !(0.0..=1.0).contains(&raw.sample_rate) {
        return Err(ConfigError::invalid(
            "collector.sample_rate",
            "must be between 0 and 1",
        ));
    }
    in_range(
        "collector.batch_max_records",
        raw.batch_max_records as u64,
        1,
        10_000,
    )?;
    in_range(
        "collector.batch_max_bytes",
        raw.batch_max_bytes as u64,
        1024,
        16 << 20,
    )?;
    in_range(
        "collector.flush_interval_ms",
        raw.flush_interval_ms,
        10,
        600_000,
    )?;
    in_range(
        "collector.max_buffered_records",
        raw.max_buffered_records as u64,
        1,
        1_000_000,
    )?;
    in_range(
        "collector.max_buffered_bytes",
        raw.max_buffered_bytes as u64,
        1024,
        256 << 20,
    )?;
    in_range("collector.timeout_ms", raw.timeout_ms, 10, 600_000)?;
    in_range(
        "collector.max_attempts",
        u64::from(raw.max_attempts),
        1,
        100,
    )?;
    in_range(
        "collector.backoff_initial_ms",
        raw.backoff_initial_ms,
        1,
        600_000,
    )?;
    in_range(
        "collector.backoff_max_ms",
        raw.backoff_max_ms,
        raw.backoff_initial_ms,
        3_600_000,
    )?;
    if raw.max_buffered_records < raw.batch_max_records {
        return Err(ConfigError::invalid(
            "collector.max_buffered_records",
            "must be at least batch_max_records",
        ));
    }
    if raw.format == CollectorFormat::ElasticsearchBulk && raw.index.is_empty() {
        return Err(ConfigError::invalid(
            "collector.index",
            "is required for elasticsearch_bulk",
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let path = format!("collector.headers.{name}");
        let name = check_header_name(&path, &name)?;
        if name.starts_with(':') || matches!(name.as_str(), "content-length" | "host") {
            return Err(ConfigError::invalid(path, "is set by the filter"));
        }
        headers.push((name, value));
    }
    Ok(CollectorSettings {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: raw.path,
        format: raw.format,
        index: raw.index,
        headers,
        sample_rate: raw.sample_rate,
        batch_max_records: raw.batch_max_records,
        batch_max_bytes: raw.batch_max_bytes,
        flush_interval: Duration::from_millis(raw.flush_interval_ms),
        max_buffered_records: raw.max_buffered_records,
        max_buffered_bytes: raw.max_buffered_bytes,
        timeout: Duration::from_millis(raw.timeout_ms),
        max_attempts: raw.max_attempts,
        backoff_initial_ms: raw.backoff_initial_ms,
        backoff_max_ms: raw.backoff_max_ms,
    })
}

fn in_range(path: &str, value: u64, low: u64, high: u64) -> Result<(), ConfigError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            path,
            format!("must be between {low} and {high}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_gives_documented_defaults() {
        let settings = AuditSettings::from_json(b"{}").unwrap();
        assert_eq!(settings.correlation.header, "x-correlation-id");
        assert_eq!(settings.correlation.max_length, 128);
        assert_eq!(settings.trusted_proxy_hops, 0);
        assert!(settings.access_log);
        assert!(settings.collector.is_none());
        assert!(settings.api_key_hasher.is_none());
        for name in ALWAYS_REDACTED_HEADERS {
            assert!(settings.is_redacted(name), "{name}");
        }
    }

    #[test]
    fn collector_defaults_apply() {
        let settings = AuditSettings::from_json(br#"{"collector":{"cluster":"logs"}}"#).unwrap();
        let collector = settings.collector.unwrap();
        assert_eq!(collector.authority, "logs");
        assert_eq!(collector.batch_max_records, 100);
        assert_eq!(collector.format, CollectorFormat::Ndjson);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases: [(&str, &str); 14] = [
            (r#"{"correlaton":{}}"#, "correlaton"),
            (r#"{"correlation":{"header":"X-Id"}}"#, "correlation.header"),
            (
                r#"{"correlation":{"max_length":0}}"#,
                "correlation.max_length",
            ),
            (r#"{"correlation":{"pattern":"(["}}"#, "correlation.pattern"),
            (
                r#"{"client_address":{"trusted_proxy_hops":11}}"#,
                "client_address.trusted_proxy_hops",
            ),
            (
                r#"{"client_address":{"trusted_proxy_hops":-1}}"#,
                "client_address.trusted_proxy_hops",
            ),
            (
                r#"{"redaction":{"headers":["ok","Bad"]}}"#,
                "redaction.headers[1]",
            ),
            (
                r#"{"redaction":{"hash_key":"short"}}"#,
                "redaction.hash_key",
            ),
            (r#"{"collector":{}}"#, "collector.cluster"),
            (
                r#"{"collector":{"cluster":"c","format":"xml"}}"#,
                "collector.format",
            ),
            (
                r#"{"collector":{"cluster":"c","sample_rate":1.5}}"#,
                "collector.sample_rate",
            ),
            (
                r#"{"collector":{"cluster":"c","batch_max_records":0}}"#,
                "collector.batch_max_records",
            ),
            (
                r#"{"collector":{"cluster":"c","max_buffered_records":5}}"#,
                "collector.max_buffered_records",
            ),
            (
                r#"{"collector":{"cluster":"c","headers":{"host":"x"}}}"#,
                "collector.headers.host",
            ),
        ];
        for (json, path) in cases {
            let error = AuditSettings::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(error.path(), path, "{json}: {error}");
        }
    }

    #[test]
    fn api_key_headers_are_always_redacted() {
        let json = br#"{"redaction":{"api_key_headers":["x-client-key"]}}"#;
        let settings = AuditSettings::from_json(json).unwrap();
        assert!(settings.is_redacted("x-client-key"));
    }

    #[test]
    fn summary_names_no_secret() {
        let json = br#"{"redaction":{"hash_key":"super-secret-hash-key"}}"#;
        let summary = AuditSettings::from_json(json).unwrap().summary();
        assert!(!summary.contains("super-secret"), "{summary}");
        assert!(summary.contains("api_key_fingerprints=true"));
    }
}
