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
            Box::new(super::NoopRoot {
                floor: false,
                probe: None,
            })
        });
    }}
}

struct NoopRoot {
    floor: bool,
    probe: Option<(String, usize)>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&configuration);
        self.floor = text == "floor";
        // `probe <operation> <count>`: one host call repeated, to measure its cost.
        let mut words = text.split_whitespace();
        if words.next() == Some("probe") {
            let operation = words.next().unwrap_or_default().to_string();
            let count = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            self.probe = Some((operation, count));
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            floor: self.floor,
            probe: self.probe.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    floor: bool,
    probe: Option<(String, usize)>,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some((operation, count)) = &self.probe {
            probe::request(operation, *count);
        }
        if self.floor {
            let headers = self.get_http_request_headers_bytes();
            let seen = headers.iter().any(|(name, _)| name == "authorization");
            self.set_http_request_header("x-user-id", Some(if seen { "alice" } else { "" }));
            self.set_property(vec!["gatehouse.auth"], Some(br#"{"result":"allowed"}"#));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some((operation, count)) = &self.probe {
            probe::log(operation, *count);
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some((operation, count)) = &self.probe {
            probe::response(operation, *count);
        }
        Action::Continue
    }
}

/// What each host call costs: `count` calls of one kind per request.
mod probe {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MapType;

    const NAMES: [&str; 16] = [
        "x-p0", "x-p1", "x-p2", "x-p3", "x-p4", "x-p5", "x-p6", "x-p7", "x-p8", "x-p9", "x-p10",
        "x-p11", "x-p12", "x-p13", "x-p14", "x-p15",
    ];

    pub fn request(operation: &str, count: usize) {
        for index in 0..count {
            let name = NAMES[index % NAMES.len()];
            match operation {
                "headers_map" => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                }
                "header_get" => {
                    let _ =
                        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "user-agent");
                }
                "header_get_absent" => {
                    let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
                }
                "header_set" => {
                    let _ = hostcalls::set_map_value_bytes(
                        MapType::HttpRequestHeaders,
                        name,
                        Some(b"v"),
                    );
                }
                "header_remove_absent" => {
                    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
                }
                "property_set" => {
                    let _ = hostcalls::set_property(vec![name], Some(b"{\"a\":1}"));
                }
                "property_get_source" => {
                    let _ = hostcalls::get_property(vec!["source", "address"]);
                }
                "property_get_path" => {
                    let _ = hostcalls::get_property(vec!["request", "path"]);
                }
                "property_get_own" => {
                    let _ = hostcalls::set_property(vec!["x-own"], Some(b"v"));
                    let _ = hostcalls::get_property(vec!["x-own"]);
                }
                "shared_get" => {
                    let _ = hostcalls::get_shared_data(name);
                }
                "shared_set" => {
                    let _ = hostcalls::set_shared_data(name, Some(b"0123456789abcdef"), None);
                }
                "clock" => {
                    let _ = hostcalls::get_current_time();
                }
                "log_filtered" => {
                    let _ = hostcalls::log(proxy_wasm::types::LogLevel::Trace, "probe");
                }
                _ => {}
            }
        }
    }

    const FACTS: &str = "string(response.code) + '|' + string(response.flags) + '|' + \
        string(request.size) + '|' + string(response.size) + '|' + request.protocol + '|' + \
        string(request.duration) + '|' + xds.route_name + '|' + source.address";

    /// The expression's token, created on first use (per VM).
    fn expression() -> Vec<u8> {
        thread_local! {
            static TOKEN: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
        }
        TOKEN.with(|token| {
            token
                .borrow_mut()
                .get_or_insert_with(|| {
                    let created =
                        hostcalls::call_foreign_function("expr_create", Some(FACTS.as_bytes()));
                    if created.is_err() {
                        let _ = hostcalls::log(
                            proxy_wasm::types::LogLevel::Error,
                            "expr_create failed",
                        );
                    }
                    created.ok().flatten().unwrap_or_default()
                })
                .clone()
        })
    }

    /// At the end of the stream: one CEL expression evaluated by Envoy (many facts,
    /// one crossing) against the property reads it replaces.
    pub fn log(operation: &str, count: usize) {
        for _ in 0..count {
            match operation {
                "cel_facts" => {
                    let token = expression();
                    let _ = hostcalls::call_foreign_function("expr_evaluate", Some(&token));
                }
                "cel_show" => {
                    let token = expression();
                    let value = hostcalls::call_foreign_function("expr_evaluate", Some(&token))
                        .map(|value| {
                            String::from_utf8_lossy(&value.unwrap_or_default()).into_owned()
                        });
                    let _ = hostcalls::log(
                        proxy_wasm::types::LogLevel::Warn,
                        &format!("cel {value:?}"),
                    );
                }
                "property_facts" => {
                    for path in [
                        ["response", "code"],
                        ["response", "flags"],
                        ["request", "size"],
                        ["response", "size"],
                        ["request", "protocol"],
                        ["request", "duration"],
                        ["xds", "route_name"],
                        ["source", "address"],
                    ] {
                        let _ = hostcalls::get_property(path.to_vec());
                    }
                }
                _ => {}
            }
        }
    }

    pub fn response(operation: &str, count: usize) {
        for index in 0..count {
            let name = NAMES[index % NAMES.len()];
            match operation {
                "response_header_add" => {
                    let _ =
                        hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, b"v");
                }
                "response_map" => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
                }
                _ => {}
            }
        }
    }
}
