//! The log collector: receives audit batches by HTTP POST and keeps them.
//!
//! A test sets how it answers: accept (200), fail with a status, or hang past the
//! sender's timeout.

use crate::server::Server;
use crate::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Fail(u16),
    Delay(Duration),
}

/// One batch as received.
#[derive(Debug, Clone)]
pub struct Batch {
    pub path: String,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Whether the collector accepted it (answered 200).
    pub accepted: bool,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    batches: Vec<Batch>,
}

/// A running collector; stops when dropped.
pub struct Collector {
    state: Arc<Mutex<State>>,
    server: Server,
}

impl Collector {
    pub fn start(mode: Mode) -> Result<Self> {
        let state = Arc::new(Mutex::new(State {
            mode,
            batches: Vec::new(),
        }));
        let shared = state.clone();
        let server = Server::start("127.0.0.1:0", "collector", move |request| {
            receive(shared.clone(), request)
        })?;
        Ok(Self { state, server })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode = mode;
    }

    /// Every batch received, accepted or not.
    pub fn batches(&self) -> Vec<Batch> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .batches
            .clone()
    }

    /// The records of accepted batches, one JSON value each (Elasticsearch action
    /// lines left out).
    pub fn records(&self) -> Vec<Value> {
        self.batches()
            .iter()
            .filter(|batch| batch.accepted)
            .flat_map(|batch| {
                batch
                    .body
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .filter(|value| value.get("create").is_none())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

async fn receive(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let content_type = headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.clone());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| String::from_utf8_lossy(&collected.to_bytes()).into_owned())
        .unwrap_or_default();

    let mode = state.lock().unwrap_or_else(PoisonError::into_inner).mode;
    let status = match mode {
        Mode::Accept => StatusCode::OK,
        Mode::Fail(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Mode::Delay(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
    };
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .batches
        .push(Batch {
            path,
            content_type,
            headers,
            body,
            accepted: mode == Mode::Accept,
        });
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"errors\":false}")));
    *response.status_mut() = status;
    Ok(response)
}
