//! A fast HTTP/1.1 client for load: raw requests on keep-alive connections, one
//! connection per thread, answers read by `content-length` (or chunked), so a
//! scenario can send tens of thousands of requests a second and count every status.

use crate::client::Response;
use crate::{Context, HarnessError, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest wait for one answer.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One request: method, path and headers (`host` is added when missing).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RawRequest {
    /// A GET of `path` with `headers`.
    pub fn get(path: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes on the wire (keep-alive).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            text.push_str("host: gateway\r\n");
        }
        for (name, value) in &self.headers {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(value);
            text.push_str("\r\n");
        }
        if self.method != "GET" && self.method != "HEAD" {
            text.push_str("content-length: 0\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// One keep-alive connection; reopened when the server closes it.
pub struct Connection {
    address: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Connection {
    /// Connects now (so a caller can hold many connections open at once).
    pub fn open(address: SocketAddr) -> Result<Self> {
        let mut connection = Self {
            address,
            reader: None,
        };
        connection.connect()?;
        Ok(connection)
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.reader.is_none() {
            let stream =
                TcpStream::connect(self.address).context(format!("connect to {}", self.address))?;
            stream.set_nodelay(true).context("set nodelay")?;
            stream
                .set_read_timeout(Some(READ_TIMEOUT))
                .context("set read timeout")?;
            self.reader = Some(BufReader::with_capacity(16 * 1024, stream));
        }
        self.reader
            .as_mut()
            .context("connection just opened is there")
    }

    /// Sends one request and reads its answer.
    pub fn send(&mut self, request: &RawRequest) -> Result<Response> {
        self.send_bytes(&request.to_bytes())
    }

    /// GET `path` with `headers`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.send(&RawRequest::get(path, headers))
    }

    /// Sends raw request bytes (one keep-alive request) and reads the answer. A
    /// connection the server had already closed is reopened once.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<Response> {
        let reused = self.reader.is_some();
        match self.exchange(bytes) {
            Ok(response) => Ok(response),
            Err(error) if reused && error.0.contains(STALE) => {
                self.reader = None;
                self.exchange(bytes)
            }
            Err(error) => {
                self.reader = None;
                Err(error)
            }
        }
    }

    fn exchange(&mut self, bytes: &[u8]) -> Result<Response> {
        let reader = self.connect()?;
        reader
            .get_mut()
            .write_all(bytes)
            .context(format!("{STALE}: write"))?;
        let response = read_response(reader)?;
        let closes = response
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        if closes {
            self.reader = None;
        }
        Ok(response)
    }
}

/// Marks errors that mean "the kept-alive connection was closed before this request".
const STALE: &str = "connection closed";

fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> Result<()> {
    line.clear();
    let read = reader.read_line(line).context("read answer")?;
    if read == 0 {
        return Err(HarnessError(format!("{STALE}: no answer")));
    }
    Ok(())
}

fn read_response(reader: &mut BufReader<TcpStream>) -> Result<Response> {
    let mut line = String::new();
    read_line(reader, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse::<u16>().ok())
        .context(format!("status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        read_line(reader, &mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = find("content-length") {
        let length: usize = length.parse().context("content-length")?;
        body.resize(length, 0);
        reader.read_exact(&mut body).context("read body")?;
    } else if find("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        loop {
            read_line(reader, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .context(format!("chunk size {line:?}"))?;
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .context("read chunk")?;
            read_line(reader, &mut line)?;
            if size == 0 {
                break;
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What a run of requests got.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer, with why.
    pub errors: Vec<String>,
    /// The slowest answer.
    pub max_latency: Duration,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl Tally {
    /// Answers with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Every answer, whatever its status.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Sends `total` requests to `address` over `connections` keep-alive connections,
/// each on its own thread. All connections are open before the first request
/// leaves; each thread then takes the next request number from a shared counter and
/// sends `request(number)`, so requests race across connections (and Envoy's
/// workers) and exactly `total` are sent.
pub fn send_all<F>(address: SocketAddr, connections: usize, total: u64, request: F) -> Tally
where
    F: Fn(u64) -> RawRequest + Sync,
{
    let next = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let ready = Barrier::new(connections);
    let started = Mutex::new(None::<Instant>);
    std::thread::scope(|scope| {
        for _ in 0..connections {
            scope.spawn(|| {
                let mut local = Tally::default();
                let mut connection = Connection::open(address);
                ready.wait();
                started
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(Instant::now);
                loop {
                    let number = next.fetch_add(1, Ordering::SeqCst);
                    if number >= total {
                        break;
                    }
                    let bytes = request(number).to_bytes();
                    let sent = Instant::now();
                    let outcome = match &mut connection {
                        Ok(connection) => connection.send_bytes(&bytes),
                        Err(error) => Err(HarnessError(error.0.clone())),
                    };
                    match outcome {
                        Ok(response) => {
                            local.max_latency = local.max_latency.max(sent.elapsed());
                            *local.statuses.entry(response.status).or_insert(0) += 1;
                        }
                        Err(error) => local.errors.push(error.0),
                    }
                }
                let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                for (status, count) in local.statuses {
                    *tally.statuses.entry(status).or_insert(0) += count;
                }
                tally.errors.extend(local.errors);
                tally.max_latency = tally.max_latency.max(local.max_latency);
            });
        }
    });
    let mut tally = tally.into_inner().unwrap_or_else(PoisonError::into_inner);
    tally.elapsed = started
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .map(|started| started.elapsed())
        .unwrap_or_default();
    tally
}
