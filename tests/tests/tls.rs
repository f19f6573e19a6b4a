//! HTTPS through the whole filter chain: the gateway terminates TLS with its
//! certificate, every gatehouse filter runs, and the backend, which accepts only
//! mutual TLS, sees the gateway's client certificate.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::envoy::GatewayBuilder;
use gatehouse_tests::paths;
use gatehouse_tests::tls::{certificates, https_get, TlsEcho};
use serde_json::{json, Value};

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn https_through_every_filter_to_a_mutual_tls_backend() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path()).unwrap();
    let accounts = TlsEcho::start("accounts", &certs).unwrap();

    let auth = json!({
        "api_keys": {"header": "x-api-key", "keys": [
            {"sha256": sha256_hex("tls-test-key"), "consumer": "acme", "tier": "pro"}]},
        "rules": [{"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"}],
    });
    let edge = json!({"name": "edge", "limits": [{"name": "per-address",
        "key": {"kind": "client_address"}, "tiers": {"default": {"requests": 100, "window_seconds": 60}}}]});
    let tiers = json!({"name": "tiers", "limits": [{"name": "plan", "key": {"kind": "consumer"},
        "tiers": {"default": {"requests": 1, "window_seconds": 60}, "pro": {"requests": 50, "window_seconds": 60}}}]});
    let traffic = json!({"name": "tls", "routes": [{"name": "accounts",
        "match": {"path": {"prefix": "/accounts/"}},
        "targets": [{"name": "accounts", "weight": 100}]}]});
    let gateway = GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
        .filter(FilterSpec::new(
            "ratelimit-edge",
            paths::module("ratelimit"),
            &edge.to_string(),
        ))
        .filter(FilterSpec::new(
            "auth",
            paths::module("auth"),
            &auth.to_string(),
        ))
        .filter(FilterSpec::new(
            "ratelimit-tiers",
            paths::module("ratelimit"),
            &tiers.to_string(),
        ))
        .filter(FilterSpec::new(
            "traffic",
            paths::module("traffic"),
            &traffic.to_string(),
        ))
        .mtls_backend("accounts", accounts.address(), &certs)
        .tls(&certs)
        .start()
        .unwrap();
    let url = format!(
        "https://localhost:{}/accounts/7?x=1",
        gateway.address().port()
    );
    let ca = certs.join("ca.pem");

    let response = https_get(&url, &ca, &[("x-api-key", "tls-test-key")]).unwrap();
    assert_eq!(response["status"], 200, "{response}");
    let headers = &response["headers"];
    assert!(
        headers["x-correlation-id"].is_string(),
        "audit ran: {headers}"
    );
    assert_eq!(
        headers["x-ratelimit-limit"], "50",
        "the tier limit ran: {headers}"
    );
    let seen: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["backend"], "accounts");
    assert_eq!(
        seen["client_certificate"]["subject"]["commonName"], "gatehouse-gateway",
        "the backend saw the gateway's client certificate: {seen}"
    );
    assert_eq!(
        seen["client_certificate"]["issuer"]["commonName"],
        "gatehouse demo CA"
    );
    assert_eq!(seen["headers"]["x-consumer-id"], "acme", "auth ran: {seen}");
    assert_eq!(
        seen["headers"]["x-gatehouse-target"], "accounts",
        "traffic ran"
    );
    assert_eq!(seen["query"], "x=1");
    let record = &gateway.records_for(headers["x-correlation-id"].as_str().unwrap(), 1)[0];
    assert_eq!(record["protocol"], "HTTP/1.1");
    assert_eq!(record["traffic_target"], "accounts");

    // Refusals come back over TLS too, and never reach the backend.
    let refused = https_get(&url, &ca, &[]).unwrap();
    assert_eq!(refused["status"], 401, "{refused}");

    // The backend itself refuses a client without the gateway's certificate.
    let direct = https_get(
        &format!("https://localhost:{}/accounts/7", accounts.address().port()),
        &ca,
        &[],
    );
    assert!(
        direct.is_err(),
        "a client without a certificate got in: {direct:?}"
    );
    // And a client that does not trust the gateway's CA cannot talk to it.
    let untrusting = https_get(&url, &dir.path().join("backend.pem"), &[]);
    assert!(untrusting.is_err(), "{untrusting:?}");
}
