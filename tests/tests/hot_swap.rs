//! Replacing the audit filter's module and then its configuration in a running Envoy
//! under load: no failed request, the new behaviour afterwards, and a refused swap
//! that leaves the running filter in place.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::ecds::{self, FilterSpec};
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::load::Load;
use gatehouse_tests::{paths, wait_for};
use std::time::Duration;

const RELOADS: &str = "extension_config_discovery.http_filter.gatehouse.audit.config_reload";
const FAILURES: &str = "extension_config_discovery.http_filter.gatehouse.audit.update_rejected";

/// Waits until Envoy has applied `count` updates of the audit resource in all.
fn wait_reloads(gateway: &Gateway, count: u64) {
    let applied = wait_for(Duration::from_secs(20), || {
        (gateway.stat(RELOADS).ok()? >= count).then_some(())
    });
    assert!(
        applied.is_some(),
        "update {count} not applied:\n{}",
        gateway.log_tail()
    );
}

/// The same module with a custom section appended: valid, and a different file.
fn rebuilt_module(directory: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(paths::module("audit")).unwrap();
    let name = b"gatehouse.rebuild";
    let payload = b"second build";
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(size).unwrap()); // one-byte LEB128 length
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = directory.join("audit-rebuilt.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn module_then_configuration_swap_under_load_fails_no_request() {
    let backend = EchoBackend::start("public").unwrap();
    let original = FilterSpec::new("audit", paths::module("audit"), "{}");
    let gateway = GatewayBuilder::new()
        .filter(original.clone())
        .backend("public", backend.address())
        .start()
        .unwrap();
    let reloads = gateway.stat(RELOADS).unwrap();
    let load = Load::start(&gateway.url("/public/echo"), &[], 4, 200);
    let sent_before = wait_for(Duration::from_secs(10), || {
        (load.sent() > 200).then(|| load.sent())
    });
    assert!(sent_before.is_some(), "the load is running");

    // 1. A new module, same configuration.
    let module = rebuilt_module(gateway.directory());
    let swapped = FilterSpec::new("audit", module, "{}");
    let installed = ecds::install(gateway.ecds_dir(), &swapped).unwrap();
    wait_reloads(&gateway, reloads + 1);
    let dump = gatehouse_tests::client::get(
        &gateway.admin_url("/config_dump?resource=ecds_filters"),
        &[],
    )
    .unwrap()
    .body;
    assert!(
        dump.contains(&installed.display().to_string()),
        "the new module is in use"
    );
    let mark = load.sent();
    assert!(
        wait_for(Duration::from_secs(10), || (load.sent() > mark + 200)
            .then_some(()))
        .is_some()
    );

    // 2. A new configuration: another correlation header.
    let reconfigured = FilterSpec {
        config: r#"{"correlation":{"header":"x-request-ref"}}"#.into(),
        ..swapped.clone()
    };
    ecds::install(gateway.ecds_dir(), &reconfigured).unwrap();
    wait_reloads(&gateway, reloads + 2);
    let mark = load.sent();
    assert!(
        wait_for(Duration::from_secs(10), || (load.sent() > mark + 200)
            .then_some(()))
        .is_some()
    );

    let report = load.finish();
    assert!(
        report.failures.is_empty(),
        "{} of {} failed: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.sent > 600, "only {} requests", report.sent);

    let response = gateway.get("/public/echo", &[]).unwrap();
    assert!(
        response.header("x-request-ref").is_some(),
        "new configuration in force: {response:?}"
    );
    assert!(response.header("x-correlation-id").is_none());
}

#[test]
fn invalid_configuration_is_refused_and_the_running_filter_keeps_serving() {
    let backend = EchoBackend::start("public").unwrap();
    let spec = FilterSpec::new(
        "audit",
        paths::module("audit"),
        r#"{"correlation":{"header":"x-request-ref"}}"#,
    );
    let gateway = GatewayBuilder::new()
        .filter(spec.clone())
        .backend("public", backend.address())
        .start()
        .unwrap();
    let failures = gateway.stat(FAILURES).unwrap();
    let load = Load::start(&gateway.url("/public/echo"), &[], 2, 200);

    let broken = FilterSpec {
        config: r#"{"correlation":{"header":"x-request-ref","max_length":0}}"#.into(),
        ..spec
    };
    ecds::install(gateway.ecds_dir(), &broken).unwrap();
    let refused = wait_for(Duration::from_secs(20), || {
        (gateway.stat(FAILURES).ok()? > failures).then_some(())
    });
    assert!(
        refused.is_some(),
        "the update is refused:\n{}",
        gateway.log_tail()
    );
    assert!(gateway.log().contains(
        "audit configuration refused: correlation.max_length: must be between 1 and 1024"
    ));

    let report = load.finish();
    assert!(
        report.failures.is_empty(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    let response = gateway.get("/public/echo", &[]).unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.header("x-request-ref").is_some(),
        "the previous filter still serves"
    );
}
