//! The audit record end to end: exactly one per request, whatever its end; what it
//! holds; what it must never hold.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::collector::{Collector, Mode};
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::{paths, wait_for};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn new_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn gateway(config: &str, backend: &EchoBackend, collector: Option<&Collector>) -> Gateway {
    let mut builder = GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), config))
        .filter(FilterSpec::new(
            "publisher",
            paths::test_module("publisher"),
            "",
        ))
        .backend("public", backend.address());
    if let Some(collector) = collector {
        builder = builder.collector(collector.address());
    }
    builder.start().expect("gateway starts")
}

const COLLECTOR: &str =
    r#"{"collector":{"cluster":"collector","path":"/ingest","flush_interval_ms":50}}"#;

fn collected(collector: &Collector, id: &str) -> Vec<Value> {
    collector
        .records()
        .into_iter()
        .filter(|record| record["correlation_id"] == id)
        .collect()
}

#[test]
fn exactly_one_record_for_ok_not_found_backend_error_backend_reset_and_client_reset() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Accept).unwrap();
    let gateway = gateway(COLLECTOR, &backend, Some(&collector));

    let ok = new_id(1);
    assert_eq!(
        gateway
            .get("/public/echo", &[("x-correlation-id", &ok)])
            .unwrap()
            .status,
        200
    );
    let missing = new_id(2);
    assert_eq!(
        gateway
            .get("/none", &[("x-correlation-id", &missing)])
            .unwrap()
            .status,
        404
    );
    let failing = new_id(3);
    let headers = [
        ("x-correlation-id", failing.as_str()),
        ("x-echo-status", "500"),
    ];
    assert_eq!(gateway.get("/public/echo", &headers).unwrap().status, 500);

    // The client gives up while the backend is still thinking.
    let reset = new_id(4);
    let mut stream = TcpStream::connect(gateway.address()).unwrap();
    let request = format!(
        "GET /public/slow HTTP/1.1\r\nhost: gw\r\nx-correlation-id: {reset}\r\nx-echo-delay-ms: 1500\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    // Past the backend's answer, so that a second record would have shown up.
    std::thread::sleep(Duration::from_millis(1700));

    let expectations = [
        (&ok, 200, json!(null)),
        (&missing, 404, json!(["NR"])),
        (&failing, 500, json!(null)),
        (&reset, 0, json!(["DC"])),
    ];
    for (id, status, flags) in expectations {
        let logged = gateway.records_for(id, 1);
        assert_eq!(
            logged.len(),
            1,
            "one access-log record for {id}: {logged:?}"
        );
        assert_eq!(logged[0]["status"], status, "{id}");
        assert_eq!(
            logged[0]
                .get("response_flags")
                .cloned()
                .unwrap_or(json!(null)),
            flags,
            "{id}"
        );
        let shipped = wait_for(Duration::from_secs(5), || {
            let records = collected(&collector, id);
            (!records.is_empty()).then_some(records)
        })
        .unwrap_or_default();
        assert_eq!(shipped.len(), 1, "one collected record for {id}");
        assert_eq!(shipped[0], logged[0], "both sinks get the same record");
    }
}

#[test]
fn record_holds_the_request_and_its_outcome() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend, None);
    let id = new_id(10);

    gateway
        .get(
            "/public/items?page=2",
            &[("x-correlation-id", &id), ("user-agent", "probe/1.0")],
        )
        .unwrap();

    let record = &gateway.records_for(&id, 1)[0];
    let timestamp = record["timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        "2026-12-03T16:13:29.123Z".len(),
        "{timestamp}"
    );
    assert!(timestamp.ends_with('Z'));
    assert_eq!(record["method"], "GET");
    assert_eq!(record["path"], "/public/items?page=2");
    assert_eq!(record["authority"], gateway.address().to_string());
    assert_eq!(record["protocol"], "HTTP/1.1");
    assert_eq!(record["client_address"], "127.0.0.1");
    assert_eq!(record["user_agent"], "probe/1.0");
    assert_eq!(record["status"], 200);
    assert_eq!(record["route"], "route-public");
    assert_eq!(record["cluster"], "public");
    assert!(record["response_bytes"].as_u64().unwrap() > 100);
    let duration = record["duration_ms"].as_f64().unwrap();
    let latency = record["backend_latency_ms"].as_f64().unwrap();
    assert!(
        duration > 0.0 && latency > 0.0 && latency <= duration,
        "{duration} {latency}"
    );
    assert!(
        record.get("response_code_details").is_none(),
        "an upstream answer has no details"
    );
}

#[test]
fn decisions_published_by_later_filters_are_recorded() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend, None);
    let id = new_id(20);
    let headers = [
        ("x-correlation-id", id.as_str()),
        (
            "x-publish-auth",
            r#"{"result":"allowed","reason":"jwt","consumer":"acme-billing","tier":"pro","roles":["user","billing"]}"#,
        ),
        (
            "x-publish-ratelimit",
            r#"{"result":"shadow_limited","limit":"per-key"}"#,
        ),
        ("x-publish-traffic", r#"{"target":"orders-v2"}"#),
    ];

    gateway.get("/public/echo", &headers).unwrap();

    let record = &gateway.records_for(&id, 1)[0];
    assert_eq!(record["consumer"], "acme-billing");
    assert_eq!(record["tier"], "pro");
    assert_eq!(record["auth_result"], "allowed");
    assert_eq!(record["auth_reason"], "jwt");
    assert_eq!(record["roles"], json!(["user", "billing"]));
    assert_eq!(record["ratelimit_result"], "shadow_limited");
    assert_eq!(record["traffic_target"], "orders-v2");
}

#[test]
fn secrets_never_appear_in_clear() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Accept).unwrap();
    let config = r#"{
        "redaction": {"hash_key": "audit-fingerprint-key-0001", "headers": ["x-session"],
                      "query_parameters": ["token", "signature"]},
        "record": {"request_headers": ["authorization", "cookie", "x-api-key", "x-session", "x-tenant"],
                   "response_headers": ["content-type"]},
        "collector": {"cluster": "collector", "flush_interval_ms": 50}
    }"#;
    let gateway = gateway(config, &backend, Some(&collector));
    let id = new_id(30);
    let secrets = [
        "Bearer eyJhbGciOiJSUzI1NiJ9.secret",
        "sid=abc123",
        "demo-pro-key",
        "sess-777",
        "tok-999",
        "sig-555",
    ];

    gateway
        .get(
            "/public/echo?token=tok-999&signature=sig-555&page=1",
            &[
                ("x-correlation-id", &id),
                ("authorization", secrets[0]),
                ("cookie", secrets[1]),
                ("x-api-key", secrets[2]),
                ("x-session", secrets[3]),
                ("x-tenant", "acme"),
            ],
        )
        .unwrap();

    let logged = gateway.access_log_lines().join("\n");
    let shipped: String = wait_for(Duration::from_secs(5), || {
        let batches = collector.batches();
        (!batches.is_empty()).then(|| batches.iter().map(|batch| batch.body.clone()).collect())
    })
    .unwrap();
    for secret in [
        "eyJhbGciOiJSUzI1NiJ9",
        "abc123",
        "demo-pro-key",
        "sess-777",
        "tok-999",
        "sig-555",
    ] {
        assert!(!logged.contains(secret), "{secret} in the access log");
        assert!(
            !shipped.contains(secret),
            "{secret} shipped to the collector"
        );
    }
    let record = &gateway.records_for(&id, 1)[0];
    assert_eq!(
        record["path"],
        "/public/echo?token=[redacted]&signature=[redacted]&page=1"
    );
    for header in ["authorization", "cookie", "x-api-key", "x-session"] {
        assert_eq!(record["request_headers"][header], "[redacted]", "{header}");
    }
    assert_eq!(record["request_headers"]["x-tenant"], "acme");
    assert_eq!(
        record["response_headers"]["content-type"],
        "application/json"
    );

    // The same key always gives the same fingerprint, so a consumer can be traced.
    let fingerprint = record["api_key"].as_str().unwrap().to_string();
    assert!(
        fingerprint.starts_with("hmac-sha256:") && fingerprint.len() == 28,
        "{fingerprint}"
    );
    let again = new_id(31);
    gateway
        .get(
            "/public/echo",
            &[("x-correlation-id", &again), ("x-api-key", "demo-pro-key")],
        )
        .unwrap();
    assert_eq!(
        gateway.records_for(&again, 1)[0]["api_key"],
        fingerprint.as_str()
    );
    let other = new_id(32);
    gateway
        .get(
            "/public/echo",
            &[("x-correlation-id", &other), ("x-api-key", "demo-free-key")],
        )
        .unwrap();
    assert_ne!(
        gateway.records_for(&other, 1)[0]["api_key"],
        fingerprint.as_str()
    );
}

#[test]
fn trusted_hops_decide_the_client_address_and_spoofing_does_not_move_it() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway(
        r#"{"client_address":{"trusted_proxy_hops":1}}"#,
        &backend,
        None,
    );
    let cases = [
        (new_id(40), Some("203.0.113.9"), "203.0.113.9"),
        (
            new_id(41),
            Some("6.6.6.6, 1.2.3.4, 203.0.113.9"),
            "203.0.113.9",
        ),
        (new_id(42), Some("2001:db8::7"), "2001:db8::7"),
        (new_id(43), None, "127.0.0.1"),
        (new_id(44), Some("not-an-address"), "127.0.0.1"),
    ];
    for (id, forwarded, expected) in &cases {
        let mut headers = vec![("x-correlation-id", id.as_str())];
        if let Some(forwarded) = forwarded {
            headers.push(("x-forwarded-for", forwarded));
        }
        gateway.get("/public/echo", &headers).unwrap();
        assert_eq!(
            gateway.records_for(id, 1)[0]["client_address"],
            *expected,
            "{forwarded:?}"
        );
    }
}
