//! Carrying a verdict out on the request the host currently points at (the stream's
//! own callback, or a waiting stream the root made current).

use crate::state::{Lookup, VmState};
use gatehouse_shared::attributes::{AUTH, CORRELATION_ID};
use gatehouse_shared::auth::identity::{self, SignedRequest};
use gatehouse_shared::auth::{decide, Denial, Identity, KeyWait, RequestView, Verdict};
use gatehouse_shared::path::NormalizedPath;
use log::debug;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// What became of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Let through (headers already rewritten).
    Continue,
    /// Answered by the filter.
    Responded,
    /// Needs keys first.
    Wait { provider: String, refetch: bool },
}

/// Decides the current request and applies the verdict.
pub fn decide_and_apply(
    state: &mut VmState,
    headers: &[(String, Vec<u8>)],
    now_ms: u64,
    wait: KeyWait,
) -> Applied {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default()
    };
    let method = header(":method");
    let path = header(":path");
    let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let settings = state.settings.clone();
    let request = RequestView {
        method: &method,
        path: &path,
        headers,
    };
    let verdict = decide(
        &settings,
        request,
        &Lookup {
            settings: &settings,
            providers: &state.providers,
            now_ms,
        },
        &mut state.cache,
        now,
        wait,
    );

    // Allowed and shadow-denied requests go on the same way; only what is
    // published and counted differs.
    let (result, reason, identity, normalized) = match verdict {
        Verdict::Allow { identity, path, .. } => {
            state.counts.allowed += 1;
            ("allowed", None, identity, path)
        }
        Verdict::ShadowDeny {
            denial,
            identity,
            rule,
            path,
        } => {
            state.counts.shadow_denied += 1;
            debug!(
                "shadow denial rule={rule:?} status={} reason={}",
                denial.status, denial.reason
            );
            ("shadow_denied", Some(denial.reason), identity, path)
        }
        Verdict::Deny { denial, rule } => {
            state.counts.denied += 1;
            debug!(
                "denied rule={rule:?} status={} reason={}",
                denial.status, denial.reason
            );
            publish("denied", Some(&denial.reason), None);
            respond(&denial, headers);
            return Applied::Responded;
        }
        Verdict::WaitForKeys { provider } => {
            return Applied::Wait {
                provider,
                refetch: false,
            }
        }
        Verdict::RefetchKeys { provider } => {
            return Applied::Wait {
                provider,
                refetch: true,
            }
        }
    };
    forward(
        state,
        headers,
        &method,
        &path,
        normalized.as_ref(),
        identity.as_ref(),
        now,
    );
    publish(result, reason.as_deref(), identity.as_ref());
    Applied::Continue
}

/// Removes spoofable identity headers, sets the trusted ones, and makes Envoy route
/// on the normalized path the rule was matched against.
fn forward(
    state: &VmState,
    headers: &[(String, Vec<u8>)],
    method: &str,
    path: &str,
    normalized: Option<&NormalizedPath>,
    identity: Option<&Identity>,
    now: i64,
) {
    let settings = &state.settings;
    let present: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let mut credential_headers = vec!["authorization"];
    if let Some(name) = &settings.credentials.header {
        credential_headers.push(name);
    }
    if let Some(name) = settings
        .api_keys
        .as_ref()
        .and_then(|keys| keys.header.as_ref())
    {
        credential_headers.push(name);
    }
    let signed = normalized.map(|normalized| SignedRequest {
        method,
        path: &normalized.path,
        timestamp: now,
    });
    let mut plan = identity::plan(
        &settings.identity,
        &present,
        identity,
        &credential_headers,
        signed,
    );
    // With `strip_credential`, a query or cookie credential goes too.
    let strip = settings.identity.strip_credential && identity.is_some();
    let mut query_credentials: Vec<&str> = Vec::new();
    if strip {
        query_credentials.extend(settings.credentials.query_parameter.as_deref());
        query_credentials.extend(
            settings
                .api_keys
                .as_ref()
                .and_then(|keys| keys.query_parameter.as_deref()),
        );
    }
    let mut target = None;
    if let Some(normalized) = normalized {
        let query = match normalized.query.as_deref() {
            Some(query) if !query_credentials.is_empty() => {
                identity::strip_query(query, &query_credentials)
            }
            other => other.map(str::to_string),
        };
        let routed = match query {
            Some(query) => format!("{}?{query}", normalized.path),
            None => normalized.path.clone(),
        };
        if routed != path {
            target = Some(routed);
        }
    }
    let cookie = settings
        .credentials
        .cookie
        .as_deref()
        .filter(|_| strip && present.contains(&"cookie"))
        .map(|name| {
            let cookies = headers
                .iter()
                .filter(|(key, _)| key == "cookie")
                .map(|(_, value)| value.as_slice());
            identity::strip_cookie(cookies, name)
        });
    if let Some(cookie) = cookie {
        plan.remove.push("cookie".into());
        if let Some(value) = cookie {
            plan.set.push(("cookie".into(), value));
        }
    }
    if plan.remove.is_empty() && plan.set.is_empty() && target.is_none() {
        return;
    }
    // One host call per changed header: measured in Envoy's V8, replacing the whole
    // map costs more than the four or five single writes of an allowed request.
    // A replace overwrites a single client-sent value; repeated ones are removed.
    let repeated = |name: &str| headers.iter().filter(|(key, _)| key == name).count() > 1;
    for name in &plan.remove {
        if !plan.set.iter().any(|(set, _)| set == name) || repeated(name) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
        }
    }
    for (name, value) in &plan.set {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }
    if let Some(target) = &target {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(target));
    }
}

fn publish(result: &str, reason: Option<&str>, identity: Option<&Identity>) {
    let outcome = identity::outcome(result, reason, identity);
    if let Ok(json) = serde_json::to_string(&outcome) {
        let _ = hostcalls::set_property(vec![AUTH], Some(json.as_bytes()));
    }
}

/// Answers the request with the denial.
pub fn respond(denial: &Denial, headers: &[(String, Vec<u8>)]) {
    let correlation_id = hostcalls::get_property(vec![CORRELATION_ID])
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .or_else(|| {
            headers
                .iter()
                .find(|(name, _)| name == "x-request-id")
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        })
        .unwrap_or_default();
    let body = denial.body(&correlation_id);
    let challenge = denial.challenge();
    let mut answer: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(challenge) = &challenge {
        answer.push(("www-authenticate", challenge));
    }
    if denial.status == 503 {
        answer.push(("retry-after", "5"));
    }
    let _ = hostcalls::send_http_response(u32::from(denial.status), answer, Some(body.as_bytes()));
}
