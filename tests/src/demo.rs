//! The demo gateway's pieces, shared by `gatehouse-demo` and `gatehouse-swap`.

use crate::ecds::{self, FilterSpec};
use crate::{paths, Context, HarnessError, Result};
use std::fs;
use std::path::PathBuf;

/// Echo backends of the demo: name and address, as `envoy-config/demo/envoy.yaml`
/// names them.
pub const BACKENDS: [(&str, &str); 4] = [
    ("public", "127.0.0.1:18101"),
    ("analytics", "127.0.0.1:18103"),
    ("monolith", "127.0.0.1:18104"),
    ("orders-v2", "127.0.0.1:18105"),
];

/// Filter instances of the demo, in request order: the ratelimit module runs twice,
/// by client address before auth and by consumer tier after it.
pub const FILTERS: [&str; 5] = [
    "audit",
    "ratelimit-edge",
    "auth",
    "ratelimit-tiers",
    "traffic",
];

/// The module an instance runs (`ratelimit-edge` -> `ratelimit`).
pub fn module_of(instance: &str) -> &str {
    instance.split('-').next().unwrap_or(instance)
}

/// The `accounts` backend speaks only mutual TLS (`tests/helpers/tls_echo.py`).
pub const ACCOUNTS_PORT: u16 = 18102;

/// The demo's certificates, made by `make certs` (never committed).
pub fn certs_dir() -> PathBuf {
    paths::root().join("target/certs")
}

/// The demo identity provider's port (its issuer is `http://127.0.0.1:18300`).
pub const IDP_PORT: u16 = 18300;

/// The gateway listener and admin interface.
pub const GATEWAY: &str = "127.0.0.1:8080";
pub const ADMIN: &str = "127.0.0.1:9901";

/// `target/demo`: everything the demo writes.
pub fn state_dir() -> PathBuf {
    paths::root().join("target/demo")
}

/// The watched directory Envoy discovers the filters from.
pub fn ecds_dir() -> PathBuf {
    state_dir().join("ecds")
}

/// The shipped bootstrap.
pub fn bootstrap() -> PathBuf {
    paths::root().join("envoy-config/demo/envoy.yaml")
}

/// The shipped configuration of a filter.
pub fn config_path(filter: &str) -> PathBuf {
    paths::root().join(format!("envoy-config/demo/{filter}.json"))
}

/// Checks a filter configuration with the same code the filter runs, so that a bad
/// configuration is refused before it ships. The message names the bad field.
pub fn validate(filter: &str, config: &[u8]) -> Result<()> {
    let outcome = match module_of(filter) {
        "audit" => gatehouse_shared::audit::AuditSettings::from_json(config).map(|_| ()),
        "auth" => gatehouse_shared::auth::AuthSettings::from_json(config).map(|_| ()),
        "ratelimit" => {
            gatehouse_shared::ratelimit::RateLimitSettings::from_json(config).map(|_| ())
        }
        "traffic" => gatehouse_shared::traffic::TrafficSettings::from_json(config).map(|_| ()),
        other => return Err(HarnessError(format!("unknown filter {other:?}"))),
    };
    outcome.map_err(|error| HarnessError(format!("{filter} configuration refused: {error}")))
}

/// Validates `config` (default: the shipped one) and writes the filter's resource
/// into the watched directory, replacing the one Envoy uses.
pub fn install(filter: &str, config: Option<PathBuf>, module: Option<PathBuf>) -> Result<PathBuf> {
    let config_path = config.unwrap_or_else(|| config_path(filter));
    let text =
        fs::read_to_string(&config_path).context(format!("read {}", config_path.display()))?;
    validate(filter, text.as_bytes())?;
    let spec = FilterSpec::new(
        filter,
        module.unwrap_or_else(|| paths::module(module_of(filter))),
        &text,
    );
    fs::create_dir_all(ecds_dir()).context("create target/demo/ecds")?;
    ecds::install(&ecds_dir(), &spec)
}

/// Writes every filter's resource from the shipped configurations.
pub fn prepare() -> Result<()> {
    fs::create_dir_all(state_dir()).context("create target/demo")?;
    for filter in FILTERS {
        install(filter, None, None)?;
    }
    Ok(())
}
