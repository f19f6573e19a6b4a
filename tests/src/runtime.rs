//! One tokio runtime for every helper server of the process.

use std::sync::LazyLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: LazyLock<Option<Runtime>> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gatehouse-helper")
        .enable_all()
        .build()
        .ok()
});

/// The helpers' runtime; `None` only when the process cannot start threads.
pub fn handle() -> crate::Result<&'static Runtime> {
    RUNTIME
        .as_ref()
        .ok_or_else(|| crate::HarnessError("cannot start the helper runtime".into()))
}
