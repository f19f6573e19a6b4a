//! The audit record: started when a request arrives, finished when it ends.

use super::config::AuditSettings;
use super::flags::response_flag_codes;
use crate::attributes::{self, AuthOutcome, RateLimitOutcome, TrafficOutcome};
use crate::client_address;
use crate::correlation::{CorrelationDecision, RejectedId};
use crate::host::RandomSource;
use crate::redact::{redact_query, REDACTED};
use crate::time::{millis_f64, rfc3339_millis};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Longest header value or user agent kept in a record, in bytes.
pub const MAX_RECORDED_VALUE_BYTES: usize = 1024;

/// Longest path kept in a record, in bytes.
pub const MAX_RECORDED_PATH_BYTES: usize = 4096;

/// One request's audit record. Field names are the JSON keys; optional fields are
/// left out when unknown.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AuditRecord {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub correlation_id: String,
    /// The incoming id that was replaced, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id_rejected: Option<RejectedId>,
    pub method: String,
    pub authority: String,
    /// Path with query; values of sensitive parameters redacted.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A keyed fingerprint of the API key the request carried, or `[redacted]`
    /// when no hash key is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Status sent to the client; 0 when none was (the stream was reset first).
    pub status: u16,
    /// Envoy's response flags (`NR`, `UC`, `DC`, ...) when Envoy made or cut the answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_flags: Vec<String>,
    /// Envoy's response code details when the answer did not come from a backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code_details: Option<String>,
    /// From the request's arrival to its end, in ms.
    pub duration_ms: f64,
    /// From the request leaving this filter to the response headers reaching it, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit_result: Option<String>,
    /// The limit that limited (or would have, in shadow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_target: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_headers: BTreeMap<String, String>,
}

impl AuditRecord {
    /// Copies what a later filter published into the record's flat fields.
    fn note_outcome(&mut self, attribute: &str, value: &[u8]) {
        let clip = |text: String| truncate(text.as_bytes(), MAX_RECORDED_VALUE_BYTES);
        match attribute {
            attributes::AUTH => {
                let Ok(outcome) = serde_json::from_slice::<AuthOutcome>(value) else {
                    return;
                };
                self.auth_result = Some(clip(outcome.result));
                self.auth_reason = outcome.reason.map(clip);
                self.consumer = outcome.consumer.map(clip);
                self.tier = outcome.tier.map(clip);
                self.roles = outcome.roles.into_iter().take(32).map(clip).collect();
            }
            attributes::RATELIMIT => {
                let Ok(outcome) = serde_json::from_slice::<RateLimitOutcome>(value) else {
                    return;
                };
                self.ratelimit_result = Some(clip(outcome.result));
                self.ratelimit_limit = outcome.limit.map(clip);
            }
            attributes::TRAFFIC => {
                let Ok(outcome) = serde_json::from_slice::<TrafficOutcome>(value) else {
                    return;
                };
                self.traffic_target = Some(clip(outcome.target));
            }
            _ => {}
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail; an empty object would
        // still be one valid line.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// A denial or an error: never sampled out.
    pub fn is_notable(&self) -> bool {
        let denied =
            |result: &Option<String>| result.as_deref().is_some_and(|result| result != "allowed");
        self.status == 0
            || self.status >= 400
            || denied(&self.auth_result)
            || denied(&self.ratelimit_result)
    }
}

/// What the filter learns when the request ends.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub protocol: Option<String>,
    pub duration: Option<Duration>,
    /// Envoy's `response.flags` bits.
    pub response_flags: u64,
    pub response_code_details: Option<String>,
    pub route: Option<String>,
    pub cluster: Option<String>,
    /// `(attribute, value)` for each outcome a later filter published (see
    /// `attributes::PUBLISHED_OUTCOMES`); values that are not the expected JSON are
    /// left out of the record.
    pub outcomes: Vec<(&'static str, Vec<u8>)>,
}

/// A record whose request has arrived and not yet ended.
#[derive(Debug, Clone)]
pub struct StartedRecord {
    record: AuditRecord,
    started: SystemTime,
}

impl StartedRecord {
    /// The request's correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.record.correlation_id
    }

    /// Why the incoming correlation id was replaced; `None` when it was kept.
    pub fn rejection(&self) -> Option<crate::correlation::RejectReason> {
        self.record
            .correlation_id_rejected
            .as_ref()
            .map(|rejected| rejected.reason)
    }

    /// Notes the response headers (those the configuration records) and the backend
    /// latency.
    pub fn note_response(
        &mut self,
        settings: &AuditSettings,
        headers: &[(String, Vec<u8>)],
        backend_latency: Option<Duration>,
    ) {
        self.record.backend_latency_ms = backend_latency.map(millis_f64);
        self.record.response_headers =
            recorded_headers(settings, &settings.response_headers, headers);
    }

    /// Finishes the record with what Envoy reports at the end of the request.
    pub fn finish(self, completion: Completion, now: SystemTime) -> AuditRecord {
        let mut record = self.record;
        record.status = completion.status;
        record.request_bytes = completion.request_bytes;
        record.response_bytes = completion.response_bytes;
        record.protocol = completion.protocol;
        let elapsed = now.duration_since(self.started).unwrap_or(Duration::ZERO);
        record.duration_ms = millis_f64(completion.duration.unwrap_or(elapsed));
        record.response_flags = response_flag_codes(completion.response_flags);
        record.response_code_details = completion
            .response_code_details
            .filter(|details| !details.is_empty() && details != "via_upstream");
        record.route = completion.route.filter(|route| !route.is_empty());
        record.cluster = completion.cluster.filter(|cluster| !cluster.is_empty());
        for (attribute, value) in &completion.outcomes {
            record.note_outcome(attribute, value);
        }
        record
    }
}

impl AuditSettings {
    /// Judges the correlation id and starts the record of a request, from its headers
    /// (each occurrence a separate entry, pseudo-headers included) and the peer
    /// address of its connection (`ip:port`).
    pub fn start_record(
        &self,
        headers: &[(String, Vec<u8>)],
        peer: &str,
        now: SystemTime,
        random: &mut dyn RandomSource,
    ) -> StartedRecord {
        let values = |name: &str| -> Vec<&[u8]> {
            headers
                .iter()
                .filter(|(key, _)| key == name)
                .map(|(_, value)| value.as_slice())
                .collect()
        };
        let first = |name: &str| {
            values(name)
                .first()
                .map(|value| truncate(value, MAX_RECORDED_VALUE_BYTES))
        };

        let CorrelationDecision { id, rejected } = self
            .correlation
            .decide(&values(&self.correlation.header), random);

        let forwarded: Vec<String> = values("x-forwarded-for")
            .iter()
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .collect();
        let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
        let client = client_address::resolve(peer, &forwarded, self.trusted_proxy_hops);

        let raw_path =
            String::from_utf8_lossy(values(":path").first().copied().unwrap_or_default())
                .into_owned();
        let path = truncate(
            redact_query(&raw_path, &self.sensitive_query_parameters).as_bytes(),
            MAX_RECORDED_PATH_BYTES,
        );

        let api_key = self
            .api_key_headers
            .iter()
            .find_map(|name| values(name).first().copied())
            .map(|key| match &self.api_key_hasher {
                Some(hasher) => hasher.fingerprint(key),
                None => REDACTED.to_string(),
            });

        let record = AuditRecord {
            timestamp: rfc3339_millis(now),
            correlation_id: id,
            correlation_id_rejected: rejected,
            method: first(":method").unwrap_or_default(),
            authority: first(":authority").unwrap_or_default(),
            path,
            client_address: client.ip.map(|ip| ip.to_string()),
            user_agent: first("user-agent"),
            api_key,
            request_headers: recorded_headers(self, &self.request_headers, headers),
            ..AuditRecord::default()
        };
        StartedRecord {
            record,
            started: now,
        }
    }
}

fn recorded_headers(
    settings: &AuditSettings,
    names: &[String],
    headers: &[(String, Vec<u8>)],
) -> BTreeMap<String, String> {
    let mut recorded = BTreeMap::new();
    for name in names {
        let values: Vec<String> = headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| {
                if settings.is_redacted(name) {
                    REDACTED.to_string()
                } else {
                    truncate(value, MAX_RECORDED_VALUE_BYTES)
                }
            })
            .collect();
        if !values.is_empty() {
            recorded.insert(name.clone(), values.join(", "));
        }
    }
    recorded
}

/// Lossy UTF-8, cut at a character boundary at most `limit` bytes in.
fn truncate(value: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(value);
    if text.len() <= limit {
        return text.into_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::RejectReason;
    use crate::host::SplitMix64;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect()
    }

    fn settings(json: &str) -> AuditSettings {
        AuditSettings::from_json(json.as_bytes()).unwrap()
    }

    fn start(settings: &AuditSettings, pairs: &[(&str, &str)]) -> StartedRecord {
        let now = UNIX_EPOCH + Duration::from_millis(1_796_314_409_123);
        settings.start_record(
            &headers(pairs),
            "10.0.0.1:4000",
            now,
            &mut SplitMix64::new(9),
        )
    }

    const REQUEST: [(&str, &str); 5] = [
        (":method", "GET"),
        (":authority", "gw.example"),
        (":path", "/public/echo?token=s3cret&page=2"),
        ("user-agent", "curl/8"),
        ("x-correlation-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ];

    #[test]
    fn started_record_carries_the_request() {
        let started = start(&settings("{}"), &REQUEST);
        let record = started.finish(Completion::default(), UNIX_EPOCH);
        assert_eq!(record.timestamp, "2026-12-03T16:13:29.123Z");
        assert_eq!(
            record.correlation_id,
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        assert_eq!(record.correlation_id_rejected, None);
        assert_eq!(record.method, "GET");
        assert_eq!(record.authority, "gw.example");
        assert_eq!(record.path, "/public/echo?token=[redacted]&page=2");
        assert_eq!(record.client_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(record.user_agent.as_deref(), Some("curl/8"));
    }

    #[test]
    fn finished_record_carries_the_outcome_and_decisions() {
        let mut started = start(&settings("{}"), &REQUEST);
        started.note_response(&settings("{}"), &[], Some(Duration::from_micros(2500)));
        let completion = Completion {
            status: 404,
            request_bytes: 3,
            response_bytes: 9,
            protocol: Some("HTTP/1.1".into()),
            duration: Some(Duration::from_micros(4200)),
            response_flags: 0x100,
            response_code_details: Some("route_not_found".into()),
            route: Some(String::new()),
            cluster: None,
            outcomes: vec![
                (
                    attributes::AUTH,
                    br#"{"result":"allowed","consumer":"acme","roles":["admin"]}"#.to_vec(),
                ),
                (attributes::TRAFFIC, b"not json".to_vec()),
            ],
        };
        let record = started.finish(completion, UNIX_EPOCH);
        assert_eq!(record.status, 404);
        assert_eq!(record.response_flags, ["NR"]);
        assert_eq!(
            record.response_code_details.as_deref(),
            Some("route_not_found")
        );
        assert_eq!(record.duration_ms, 4.2);
        assert_eq!(record.backend_latency_ms, Some(2.5));
        assert_eq!(record.route, None);
        assert_eq!(record.consumer.as_deref(), Some("acme"));
        assert_eq!(record.auth_result.as_deref(), Some("allowed"));
        assert_eq!(record.roles, ["admin"]);
        assert_eq!(
            record.traffic_target, None,
            "an unreadable outcome is left out"
        );
        assert!(record.is_notable());
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["status"], 404);
        assert_eq!(json["response_flags"][0], "NR");
        assert!(json.get("cluster").is_none());
    }

    #[test]
    fn upstream_details_are_left_out() {
        let completion = Completion {
            status: 200,
            response_code_details: Some("via_upstream".into()),
            ..Completion::default()
        };
        let record = start(&settings("{}"), &REQUEST).finish(completion, UNIX_EPOCH);
        assert_eq!(record.response_code_details, None);
        assert!(!record.is_notable());
    }

    #[test]
    fn secrets_never_appear_in_clear() {
        let settings = settings(
            r#"{"record":{"request_headers":["authorization","cookie","x-api-key","x-tenant"],
                          "response_headers":["set-cookie","content-type"]},
                "redaction":{"hash_key":"0123456789abcdef"}}"#,
        );
        let mut pairs = REQUEST.to_vec();
        pairs.extend([
            ("authorization", "Bearer eyJhbGciOi.secret"),
            ("cookie", "session=abc123"),
            ("x-api-key", "demo-pro-key"),
            ("x-tenant", "acme"),
        ]);
        let mut started = start(&settings, &pairs);
        started.note_response(
            &settings,
            &headers(&[
                ("set-cookie", "session=new"),
                ("content-type", "application/json"),
            ]),
            None,
        );
        let json = started.finish(Completion::default(), UNIX_EPOCH).to_json();
        for secret in [
            "eyJhbGciOi",
            "abc123",
            "demo-pro-key",
            "session=new",
            "s3cret",
        ] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["request_headers"]["authorization"], REDACTED);
        assert_eq!(value["request_headers"]["x-tenant"], "acme");
        assert_eq!(
            value["response_headers"]["content-type"],
            "application/json"
        );
        assert!(value["api_key"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"));
    }

    #[test]
    fn api_key_without_hash_key_is_only_marked() {
        let mut pairs = REQUEST.to_vec();
        pairs.push(("x-api-key", "demo-free-key"));
        let record = start(&settings("{}"), &pairs).finish(Completion::default(), UNIX_EPOCH);
        assert_eq!(record.api_key.as_deref(), Some(REDACTED));
    }

    #[test]
    fn rejected_correlation_id_is_recorded() {
        let mut pairs = REQUEST.to_vec();
        pairs[4] = ("x-correlation-id", "bad id\"with quotes");
        let record = start(&settings("{}"), &pairs).finish(Completion::default(), UNIX_EPOCH);
        let rejected = record.correlation_id_rejected.clone().unwrap();
        assert_eq!(rejected.reason, RejectReason::BadCharacters);
        assert_eq!(rejected.value.as_deref(), Some("bad id\"with quotes"));
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["correlation_id_rejected"]["reason"], "bad_characters");
    }

    #[test]
    fn long_values_are_truncated_on_character_boundaries() {
        let long = "é".repeat(600);
        let mut pairs = REQUEST.to_vec();
        pairs[3] = ("user-agent", &long);
        let record = start(&settings("{}"), &pairs).finish(Completion::default(), UNIX_EPOCH);
        assert_eq!(record.user_agent.unwrap().len(), MAX_RECORDED_VALUE_BYTES);
    }
}
