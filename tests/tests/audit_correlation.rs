//! Correlation ids end to end: kept, generated, replaced, echoed on every answer.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_shared::correlation::is_uuid;
use gatehouse_tests::client::raw;
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::paths;
use serde_json::{json, Value};

const VALID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn gateway(config: &str, backend: &EchoBackend) -> Gateway {
    GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), config))
        .backend("public", backend.address())
        // A native filter behind audit that answers by itself when asked to.
        .native_filter(json!({
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"header_abort": {}, "percentage": {"numerator": 100}}
            }
        }))
        .start()
        .expect("gateway starts")
}

fn seen_by_backend(body: &Value) -> Value {
    body["headers"]["x-correlation-id"].clone()
}

#[test]
fn well_formed_id_is_kept_forwarded_echoed_and_recorded() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend);

    let response = gateway
        .get("/public/echo", &[("x-correlation-id", VALID)])
        .unwrap();

    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-correlation-id"), Some(VALID));
    assert_eq!(seen_by_backend(&response.json().unwrap()), VALID);
    let records = gateway.records_for(VALID, 1);
    assert_eq!(records.len(), 1);
    assert!(records[0].get("correlation_id_rejected").is_none());
}

#[test]
fn absent_id_is_generated_and_the_same_everywhere() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend);

    let response = gateway.get("/public/echo", &[]).unwrap();

    let id = response
        .header("x-correlation-id")
        .expect("id echoed")
        .to_string();
    assert!(is_uuid(&id), "{id}");
    assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
    assert_eq!(seen_by_backend(&response.json().unwrap()), id.as_str());
    let records = gateway.records_for(&id, 1);
    assert_eq!(records[0]["correlation_id_rejected"]["reason"], "absent");
}

#[test]
fn configured_pattern_and_header_name_are_honoured() {
    let backend = EchoBackend::start("public").unwrap();
    let config =
        r#"{"correlation":{"header":"x-request-ref","pattern":"ord-[0-9]{4,12}","max_length":16}}"#;
    let gateway = gateway(config, &backend);

    let kept = gateway
        .get("/public/echo", &[("x-request-ref", "ord-123456")])
        .unwrap();
    assert_eq!(kept.header("x-request-ref"), Some("ord-123456"));
    assert_eq!(
        kept.json().unwrap()["headers"]["x-request-ref"],
        "ord-123456"
    );

    let too_long = gateway
        .get("/public/echo", &[("x-request-ref", "ord-1234567890123")])
        .unwrap();
    let id = too_long.header("x-request-ref").unwrap();
    assert!(is_uuid(id), "{id}");
    assert_eq!(
        gateway.records_for(id, 1)[0]["correlation_id_rejected"]["reason"],
        "too_long"
    );
}

/// Every malformed form, sent as raw bytes so that nothing cleans it up on the way.
#[test]
fn malformed_ids_are_replaced_and_the_rejected_value_recorded() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend);
    let long = "a".repeat(300);
    let cases: Vec<(String, &str, Option<String>)> = vec![
        ("x-correlation-id: \r\n".into(), "empty", None),
        (
            format!("x-correlation-id: {long}\r\n"),
            "too_long",
            Some(format!("{}...", &long[..64])),
        ),
        (
            "x-correlation-id: <script>alert(1)</script>\r\n".into(),
            "bad_characters",
            Some("<script>alert(1)</script>".into()),
        ),
        (
            "x-correlation-id: caf\u{e9}-id\r\n".into(),
            "bad_characters",
            Some("caf\\xc3\\xa9-id".into()),
        ),
        (
            "x-correlation-id: not-a-uuid\r\n".into(),
            "malformed",
            Some("not-a-uuid".into()),
        ),
        (
            format!("x-correlation-id: {VALID}\r\nx-correlation-id: {VALID}\r\n"),
            "repeated",
            Some(VALID.into()),
        ),
    ];
    for (header, reason, value) in cases {
        let request =
            format!("GET /public/echo HTTP/1.1\r\nhost: gw\r\n{header}connection: close\r\n\r\n");
        let response = raw(gateway.address(), request.as_bytes()).unwrap();
        assert_eq!(response.status, 200, "{header:?}");
        let id = response
            .header("x-correlation-id")
            .expect("id echoed")
            .to_string();
        assert!(is_uuid(&id), "{header:?} gave {id}");
        assert_ne!(id, VALID, "a repeated id is not kept");
        let echoed: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(
            seen_by_backend(&echoed),
            id.as_str(),
            "backend sees exactly the new id: {header:?}"
        );

        let records = gateway.records_for(&id, 1);
        assert_eq!(records.len(), 1);
        let rejected = &records[0]["correlation_id_rejected"];
        assert_eq!(rejected["reason"], reason, "{header:?}");
        assert_eq!(
            rejected["value"].as_str().map(str::to_string),
            value,
            "{header:?}"
        );
    }
}

/// Envoy's HTTP/1 codec refuses control characters in a header before any filter
/// sees the request. The value never reaches the backend, and the refusal is still
/// audited once, with Envoy's reason.
#[test]
fn control_characters_in_the_id_are_refused_by_envoy_and_audited() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend);
    for value in ["abc\x01def", "abc\x7fdef"] {
        let before = gateway.access_log_lines().len();
        let request = format!(
            "GET /public/echo HTTP/1.1\r\nhost: gw\r\nx-correlation-id: {value}\r\nconnection: close\r\n\r\n"
        );

        let response = raw(gateway.address(), request.as_bytes()).unwrap();

        assert_eq!(response.status, 400, "{response:?}");
        assert_eq!(backend.requests(), 0);
        let lines = gatehouse_tests::wait_for(std::time::Duration::from_secs(5), || {
            let lines = gateway.access_log_lines();
            (lines.len() > before).then_some(lines)
        })
        .expect("the refusal is audited");
        assert_eq!(lines.len(), before + 1, "exactly one record");
        let record: Value = serde_json::from_str(&lines[before]).unwrap();
        assert_eq!(record["status"], 400);
        assert_eq!(record["response_flags"], json!(["DPE"]));
        assert_eq!(record["response_code_details"], "http1.invalid_characters");
        assert!(
            !lines[before].contains("abc"),
            "the refused value is not logged"
        );
    }
}

#[test]
fn id_is_echoed_on_envoy_404_and_on_a_later_filters_local_reply() {
    let backend = EchoBackend::start("public").unwrap();
    let gateway = gateway("{}", &backend);

    let not_found = gateway
        .get("/nowhere", &[("x-correlation-id", VALID)])
        .unwrap();
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.header("x-correlation-id"), Some(VALID));

    let aborted = gateway
        .get("/public/echo", &[("x-envoy-fault-abort-request", "429")])
        .unwrap();
    assert_eq!(aborted.status, 429);
    let id = aborted
        .header("x-correlation-id")
        .expect("id on the local reply");
    assert!(is_uuid(id));
    assert_eq!(
        backend.requests(),
        0,
        "the fault filter answered, not the backend"
    );

    let record = &gateway.records_for(id, 1)[0];
    assert_eq!(record["status"], 429);
    assert_eq!(record["response_flags"], json!(["FI"]));
}
