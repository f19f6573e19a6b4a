//! The gatehouse ratelimit filter: every configured limit counted for every request
//! in the proxy's shared data, exact across workers; 429 with the standard headers;
//! a limited-share alert sent once for all workers.
//!
//! `root.rs` configures, creates the counter tables and runs the tick (metrics and
//! the alert); `stream.rs` decides each request; `store.rs` is shared data as the
//! policy crate's store.

mod root;
mod store;
mod stream;

// The SDK's entry point is an exported, unmangled function.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::root::RateLimitRoot::default())
        });
    }}
}
