//! Shipping records to an HTTP collector: batches, formats, sampling, and a
//! collector that is down or slow.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::collector::{Collector, Mode};
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::{paths, wait_for};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn gateway(config: &str, backend: &EchoBackend, collector: SocketAddr) -> Gateway {
    GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), config))
        .backend("public", backend.address())
        .collector(collector)
        .start()
        .expect("gateway starts")
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn send(gateway: &Gateway, count: usize, path: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..count {
        let started = Instant::now();
        let response = gateway.get(path, &[]).unwrap();
        slowest = slowest.max(started.elapsed());
        assert!(matches!(response.status, 200 | 404), "{response:?}");
    }
    slowest
}

#[test]
fn batches_arrive_as_ndjson_with_configured_path_and_headers() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Accept).unwrap();
    let config = r#"{"collector":{"cluster":"collector","path":"/logs/ingest","batch_max_records":10,
        "flush_interval_ms":100,"headers":{"x-collector-token":"t0k"}}}"#;
    let gateway = gateway(config, &backend, collector.address());

    send(&gateway, 25, "/public/echo");

    let records = wait_for(Duration::from_secs(5), || {
        let records = collector.records();
        (records.len() >= 25).then_some(records)
    })
    .expect("all 25 records shipped");
    assert_eq!(records.len(), 25);
    let batches = collector.batches();
    for batch in &batches {
        assert_eq!(batch.path, "/logs/ingest");
        assert_eq!(batch.content_type.as_deref(), Some("application/x-ndjson"));
        assert!(batch
            .headers
            .contains(&("x-collector-token".into(), "t0k".into())));
        assert!(batch.body.ends_with('\n'));
        assert!(batch.body.lines().count() <= 10, "batch size limit");
    }
    assert!(batches.len() >= 3, "25 records in batches of at most 10");
    assert_eq!(
        gateway.metric("gatehouse_audit_records_total").unwrap(),
        25.0
    );
    assert_eq!(
        gateway
            .metric("gatehouse_audit_collector_records_sent_total")
            .unwrap(),
        25.0
    );
    assert_eq!(
        gateway
            .metric("gatehouse_audit_collector_batches_sent_total")
            .unwrap(),
        batches.len() as f64
    );
}

#[test]
fn elasticsearch_bulk_format_puts_an_action_before_each_record() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Accept).unwrap();
    let config = r#"{"collector":{"cluster":"collector","path":"/_bulk","format":"elasticsearch_bulk",
        "index":"gatehouse-audit","flush_interval_ms":50}}"#;
    let gateway = gateway(config, &backend, collector.address());

    send(&gateway, 3, "/public/echo");

    let batches = wait_for(Duration::from_secs(5), || {
        let batches = collector.batches();
        (batches
            .iter()
            .map(|batch| batch.body.lines().count())
            .sum::<usize>()
            >= 6)
            .then_some(batches)
    })
    .expect("records shipped");
    for batch in batches {
        let lines: Vec<&str> = batch.body.lines().collect();
        for pair in lines.chunks(2) {
            assert_eq!(pair[0], r#"{"create":{"_index":"gatehouse-audit"}}"#);
            let record: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
            assert_eq!(record["status"], 200);
        }
    }
}

#[test]
fn collector_down_never_touches_requests_and_memory_stays_bounded() {
    let backend = EchoBackend::start("public").unwrap();
    let config = r#"{"collector":{"cluster":"collector","batch_max_records":5,"max_buffered_records":20,
        "flush_interval_ms":20,"max_attempts":2,"backoff_initial_ms":20,"backoff_max_ms":40}}"#;
    let gateway = gateway(config, &backend, closed_port());

    let slowest = send(&gateway, 300, "/public/echo");

    // A request that waited on the collector would take its connect timeout (1 s).
    assert!(
        slowest < Duration::from_millis(900),
        "slowest request took {slowest:?}"
    );
    assert_eq!(
        gateway.metric("gatehouse_audit_records_total").unwrap(),
        300.0
    );
    let dropped = wait_for(Duration::from_secs(5), || {
        let dropped = gateway
            .metric("gatehouse_audit_collector_dropped_total")
            .ok()?;
        (dropped >= 250.0).then_some(dropped)
    });
    assert!(dropped.is_some(), "drops are counted");
    assert!(
        gateway
            .metric("gatehouse_audit_collector_batches_failed_total")
            .unwrap()
            > 0.0
    );
    assert_eq!(
        gateway
            .metric("gatehouse_audit_collector_records_sent_total")
            .unwrap(),
        0.0
    );
    // Two workers, each holding at most 20 waiting records and one batch of 5.
    let buffered = gateway
        .metric("gatehouse_audit_collector_buffered_records")
        .unwrap();
    assert!(buffered <= 50.0, "buffered {buffered}");
}

#[test]
fn slow_collector_is_timed_out_retried_and_caught_up_when_it_recovers() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Delay(Duration::from_secs(3))).unwrap();
    let config = r#"{"collector":{"cluster":"collector","batch_max_records":50,"flush_interval_ms":20,
        "timeout_ms":200,"max_attempts":100,"backoff_initial_ms":50,"backoff_max_ms":100}}"#;
    let gateway = gateway(config, &backend, collector.address());

    let slowest = send(&gateway, 20, "/public/echo");
    assert!(
        slowest < Duration::from_millis(900),
        "slowest request took {slowest:?}"
    );
    let failed = wait_for(Duration::from_secs(5), || {
        let failed = gateway
            .metric("gatehouse_audit_collector_batches_failed_total")
            .ok()?;
        (failed >= 2.0).then_some(failed)
    });
    assert!(failed.is_some(), "timeouts are counted as failures");

    collector.set_mode(Mode::Accept);
    let records = wait_for(Duration::from_secs(10), || {
        let records = collector.records();
        (records.len() >= 20).then_some(records)
    });
    assert!(
        records.is_some(),
        "every record arrives once the collector answers in time"
    );
    assert_eq!(
        gateway
            .metric("gatehouse_audit_collector_dropped_total")
            .unwrap(),
        0.0
    );
}

#[test]
fn sampling_thins_allowed_requests_and_never_denials() {
    let backend = EchoBackend::start("public").unwrap();
    let collector = Collector::start(Mode::Accept).unwrap();
    let config =
        r#"{"collector":{"cluster":"collector","sample_rate":0.0,"flush_interval_ms":50}}"#;
    let gateway = gateway(config, &backend, collector.address());

    send(&gateway, 10, "/public/echo");
    send(&gateway, 3, "/missing");

    let shipped = wait_for(Duration::from_secs(5), || {
        (collector.records().len() >= 3).then_some(())
    });
    assert!(shipped.is_some(), "denials shipped");
    std::thread::sleep(Duration::from_millis(300));
    let records = collector.records();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records.iter().all(|record| record["status"] == 404));
    assert_eq!(
        gateway
            .metric("gatehouse_audit_collector_sampled_out_total")
            .unwrap(),
        10.0
    );
    assert_eq!(
        gateway.access_log_lines().len(),
        13,
        "the access log keeps every record"
    );
}
