//! The key-set server: publishes a JWKS (and an OpenID discovery document pointing
//! at it), and can be told to fail in the ways identity providers fail.

use crate::server::Server;
use crate::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the key set is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Serve {
    /// The current key set, 200.
    Keys,
    /// An error status.
    Status(u16),
    /// 200 with a body that is not a key set.
    Garbage,
    /// 200 with a body of this many bytes.
    Huge(usize),
    /// The key set, after a delay.
    Slow(Duration),
}

struct State {
    jwks: Value,
    serve: Serve,
}

/// A running key-set server; stops when dropped.
pub struct KeySetServer {
    state: Arc<Mutex<State>>,
    fetches: Arc<AtomicU64>,
    server: Server,
}

impl KeySetServer {
    pub fn start(jwks: Value) -> Result<Self> {
        let state = Arc::new(Mutex::new(State {
            jwks,
            serve: Serve::Keys,
        }));
        let fetches = Arc::new(AtomicU64::new(0));
        // The discovery document names the server's own address, known once bound.
        let address = Arc::new(Mutex::new(None));
        let (shared, counter, own) = (state.clone(), fetches.clone(), address.clone());
        let server = Server::start("127.0.0.1:0", "key-set server", move |request| {
            let own = *own.lock().unwrap_or_else(PoisonError::into_inner);
            answer(own, shared.clone(), counter.clone(), request)
        })?;
        *address.lock().unwrap_or_else(PoisonError::into_inner) = Some(server.address());
        Ok(Self {
            state,
            fetches,
            server,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// The issuer of the discovery document: `http://<address>`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.address())
    }

    pub fn set_jwks(&self, jwks: Value) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .jwks = jwks;
    }

    pub fn set_serve(&self, serve: Serve) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .serve = serve;
    }

    /// Requests for the key set so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn answer(
    address: Option<SocketAddr>,
    state: Arc<Mutex<State>>,
    fetches: Arc<AtomicU64>,
    request: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = if request.uri().path() == "/.well-known/openid-configuration" {
        let issuer = address.map_or_else(String::new, |address| format!("http://{address}"));
        let document = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        (StatusCode::OK, document.to_string())
    } else if request.uri().path() == "/jwks" {
        fetches.fetch_add(1, Ordering::SeqCst);
        let (jwks, serve) = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            (state.jwks.to_string(), state.serve.clone())
        };
        match serve {
            Serve::Keys => (StatusCode::OK, jwks),
            Serve::Status(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                String::new(),
            ),
            Serve::Garbage => (StatusCode::OK, "<html>not a key set</html>".into()),
            Serve::Huge(size) => (StatusCode::OK, " ".repeat(size)),
            Serve::Slow(delay) => {
                tokio::time::sleep(delay).await;
                (StatusCode::OK, jwks)
            }
        }
    } else {
        (StatusCode::NOT_FOUND, String::new())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/jwk-set+json"),
    );
    Ok(response)
}
