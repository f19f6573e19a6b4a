//! The gatehouse integration harness.
//!
//! A scenario starts the helpers it needs (echo backends, a log collector) inside the
//! test process, then a real Envoy with the built filters, all on ports the operating
//! system picks, so scenarios run in parallel. Everything a scenario starts stops
//! when its handle is dropped, pass or fail.

pub mod client;
pub mod collector;
pub mod demo;
pub mod ecds;
pub mod echo;
pub mod envoy;
pub mod http1;
pub mod idp;
pub mod jose;
pub mod keyset;
pub mod load;
pub mod paths;
mod runtime;
pub mod server;
pub mod tls;

/// What the harness returns on failure: a message saying what did not work.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// A harness failure, with the step that failed.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Wraps any error with the step that failed.
pub trait Context<T> {
    fn context(self, step: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, step: impl std::fmt::Display) -> Result<T> {
        self.map_err(|error| HarnessError(format!("{step}: {error}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, step: impl std::fmt::Display) -> Result<T> {
        self.ok_or_else(|| HarnessError(format!("{step}: nothing there")))
    }
}

/// Polls `check` every 20 ms until it gives a value or `timeout` passes.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
