//! Clients for scenarios: well-formed requests through ureq, and raw bytes on a
//! socket for what a well-behaved client would never send.

use crate::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::LazyLock;
use std::time::Duration;

/// An answer as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .context(format!("response body is not JSON: {}", self.body))
    }
}

static AGENT: LazyLock<ureq::Agent> = LazyLock::new(agent);

/// An agent that returns every status as a response and gives up after 20 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// GET with headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    get_with(&AGENT, url, headers)
}

/// GET with headers through a given agent (one per load thread keeps connections apart).
pub fn get_with(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().context(format!("GET {url}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .read_to_string()
        .context(format!("read body of GET {url}"))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends `request` as raw bytes (it should say `Connection: close`) and reads the
/// answer to the end of the connection. Chunked bodies are not decoded.
pub fn raw(address: SocketAddr, request: &[u8]) -> Result<Response> {
    let mut stream = TcpStream::connect(address).context("connect")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .context("set timeout")?;
    stream.write_all(request).context("send raw request")?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).context("read raw answer")?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("answer has no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|status| status.parse().ok())
        .context("answer has no status")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}
