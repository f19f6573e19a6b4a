//! Where the project's files are.

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A built filter: `dist/<name>.wasm`, or `$GATEHOUSE_DIST/<name>.wasm`.
pub fn module(name: &str) -> PathBuf {
    let dist = std::env::var_os("GATEHOUSE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("dist"));
    dist.join(format!("{name}.wasm"))
}

/// The pinned Envoy the Makefile installs, or `$GATEHOUSE_ENVOY`.
pub fn envoy() -> PathBuf {
    std::env::var_os("GATEHOUSE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/bin/envoy"))
}

/// A module built only for tests or benchmarks (`noop`, `publisher`), from
/// `$GATEHOUSE_TEST_MODULES` or the release output of the wasm target.
pub fn test_module(name: &str) -> PathBuf {
    let directory = std::env::var_os("GATEHOUSE_TEST_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/release"));
    directory.join(format!("gatehouse_{name}.wasm"))
}

/// The Python of the tools folder (with joserfc), or `$GATEHOUSE_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("GATEHOUSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/venv/bin/python"))
}

/// Node, for the identity provider: `$GATEHOUSE_NODE` or `node` on the PATH.
pub fn node() -> PathBuf {
    std::env::var_os("GATEHOUSE_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}
