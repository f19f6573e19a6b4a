//! The gatehouse traffic filter: picks each matching request's backend target
//! (weighted, sticky, scheduled, overridable), marks mirrored requests, rewrites
//! paths, sends a failing new target's traffic back to its stable one, and refuses
//! requests to a target whose circuit is open.
//!
//! `root.rs` configures and runs the tick (shared counts, breakers, the health
//! gate, metrics); `stream.rs` handles each request; `store.rs` is shared data as
//! the policy crate's store.

mod root;
mod store;
mod stream;

// The SDK's entry point is an exported, unmangled function.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::root::TrafficRoot::default())
        });
    }}
}
