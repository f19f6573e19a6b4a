//! The gatehouse audit filter: a correlation id on every request and one structured
//! audit record per request, shipped to Envoy's access log and an HTTP collector.
//!
//! The root context reads the configuration and ships batches; each request's
//! context (`stream.rs`) builds its record with the policy crate.

mod metrics;
mod root;
mod stream;

// The SDK's entry point is an exported, unmangled function.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::root::AuditRoot::default())
        });
    }}
}
