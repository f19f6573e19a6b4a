//! The echo backend: answers JSON with its own name, the method, path, query and
//! every header it received.
//!
//! A request steers the answer with headers: `x-echo-status: 503` answers that
//! status, `x-echo-delay-ms: 2000` waits first, `x-echo-reset: 1` closes the
//! connection without answering.
//!
//! A test can also make the backend itself fail: after `fail(500)` it answers every
//! request with that status (still counting it), until `recover()`.

use crate::server::Server;
use crate::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running echo backend; stops when dropped.
pub struct EchoBackend {
    name: String,
    requests: Arc<AtomicU64>,
    failing: Arc<AtomicU16>,
    server: Server,
}

impl EchoBackend {
    /// Starts a backend named `name` on a port the system picks.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_on(name, "127.0.0.1:0")
    }

    /// Starts a backend named `name` on `address`.
    pub fn start_on(name: &str, address: &str) -> Result<Self> {
        let requests = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicU16::new(0));
        let (counter, switch, owner) = (requests.clone(), failing.clone(), name.to_string());
        let server = Server::start(address, &format!("echo backend {name}"), move |request| {
            counter.fetch_add(1, Ordering::SeqCst);
            let failure = match switch.load(Ordering::SeqCst) {
                0 => None,
                status => Some(status),
            };
            answer(owner.clone(), failure, request)
        })?;
        Ok(Self {
            name: name.to_string(),
            requests,
            failing,
            server,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// Answers every request from now on with `status` (a 5xx to fail), whatever
    /// the request asks for.
    pub fn fail(&self, status: u16) {
        self.failing.store(status, Ordering::SeqCst);
    }

    /// Answers normally again.
    pub fn recover(&self) {
        self.failing.store(0, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The error that makes hyper close the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("reset asked for by the request")
    }
}

impl std::error::Error for Reset {}

async fn answer(
    name: String,
    failure: Option<u16>,
    request: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Reset> {
    let header = |key: &str| {
        request
            .headers()
            .get(key)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let status =
        failure.or_else(|| header("x-echo-status").and_then(|status| status.parse::<u16>().ok()));
    let delay = header("x-echo-delay-ms").and_then(|delay| delay.parse::<u64>().ok());
    let reset = header("x-echo-reset").is_some();

    let mut headers = Map::new();
    for (key, value) in request.headers() {
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(key.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                headers.insert(key.as_str().to_string(), value);
            }
        }
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes().len())
        .unwrap_or(0);

    if let Some(delay) = delay {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if reset {
        return Err(Reset);
    }
    let echo = json!({
        "backend": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body,
    });
    let status = status
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Full::new(Bytes::from(echo.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
