//! A bounded background load: a few threads sending requests until told to stop,
//! counting every answer that is not the expected status.

use crate::client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a load may run, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(120);

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub failures: Vec<String>,
}

/// A running load; `finish` stops it and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` clients sending GET `url` with `headers`, each on its own
    /// connection pool, expecting `expected` every time.
    pub fn start(url: &str, headers: &[(&str, &str)], threads: usize, expected: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let threads = (0..threads)
            .map(|_| {
                let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
                let (url, headers) = (url.to_string(), headers.clone());
                std::thread::spawn(move || {
                    let agent = client::agent();
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
                        let outcome = client::get_with(&agent, &url, &headers);
                        sent.fetch_add(1, Ordering::SeqCst);
                        let failure = match outcome {
                            Ok(response) if response.status == expected => None,
                            Ok(response) => {
                                Some(format!("status {}: {}", response.status, response.body))
                            }
                            Err(error) => Some(error.to_string()),
                        };
                        if let Some(failure) = failure {
                            failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(failure);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failures,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops every client and reports.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        LoadReport {
            sent: self.sent.load(Ordering::SeqCst),
            failures,
        }
    }
}
