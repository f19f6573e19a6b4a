//! The gatehouse auth filter: one place where every request's credential is checked
//! against the route's rule, and the backend gets identity headers it can trust.
//!
//! `state.rs` holds what one VM knows (settings, key sets, cache, waiting requests);
//! `root.rs` fetches key sets and wakes waiting requests; `stream.rs` decides each
//! request; `apply.rs` carries a verdict out on the request.

mod apply;
mod metrics;
mod root;
mod state;
mod stream;

// The SDK's entry point is an exported, unmangled function.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::root::AuthRoot::default())
        });
    }}
}
