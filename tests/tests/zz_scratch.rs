#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::envoy::GatewayBuilder;
use gatehouse_tests::paths;

#[test]
fn scratch() {
    let gateway = GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
        .start()
        .unwrap();
    for xff in ["198.51.100.1", "6.6.6.6, 198.51.100.2", "not-an-address"] {
        let r = gateway
            .get("/direct/x", &[("x-forwarded-for", xff)])
            .unwrap();
        let id = r.header("x-correlation-id").unwrap().to_string();
        println!(
            "{xff:?} -> {}",
            gateway.records_for(&id, 1)[0]["client_address"]
        );
    }
}
