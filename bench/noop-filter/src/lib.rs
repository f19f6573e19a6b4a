//! A filter that does nothing, so that benchmarks can tell what having any wasm
//! filter costs from what a gatehouse filter adds.
//!
//! With the configuration `floor` it does only the host calls a cached-token auth
//! check cannot avoid (read the request headers, set one identity header, publish
//! one attribute), so the benchmark shows the floor any such filter pays.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

// The SDK's entry point is an exported, unmangled function.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::NoopRoot { floor: false })
        });
    }}
}

struct NoopRoot {
    floor: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.floor = self.get_plugin_configuration().as_deref() == Some(b"floor".as_slice());
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop { floor: self.floor }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    floor: bool,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.floor {
            let headers = self.get_http_request_headers_bytes();
            let seen = headers.iter().any(|(name, _)| name == "authorization");
            self.set_http_request_header("x-user-id", Some(if seen { "alice" } else { "" }));
            self.set_property(vec!["gatehouse.auth"], Some(br#"{"result":"allowed"}"#));
        }
        Action::Continue
    }
}
