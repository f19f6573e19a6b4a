//! The HTTP collector sink: a bounded queue of encoded records, cut into batches,
//! sent one at a time with retries and exponential backoff.
//!
//! Each VM keeps its own queue. Memory is bounded by `max_buffered_records` and
//! `max_buffered_bytes` for waiting records plus one batch in flight or waiting to be
//! retried; past a bound the oldest waiting records are dropped and counted.

use crate::host::RandomSource;
use serde::Deserialize;
use std::collections::VecDeque;
use std::time::Duration;

/// How batches are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CollectorFormat {
    /// One JSON record per line (Logstash `http` input, Vector, Fluent Bit).
    Ndjson,
    /// Elasticsearch `_bulk`: a `create` action line before each record.
    ElasticsearchBulk,
}

impl CollectorFormat {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::ElasticsearchBulk => "elasticsearch_bulk",
        }
    }
}

/// The checked collector configuration; see the README for each field's default.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    /// Envoy cluster the batches are sent to.
    pub cluster: String,
    /// `:authority` of the batch requests; defaults to the cluster name.
    pub authority: String,
    /// Path batches are POSTed to.
    pub path: String,
    pub format: CollectorFormat,
    /// Elasticsearch index (or data stream) for `elasticsearch_bulk`.
    pub index: String,
    /// Extra request headers (for example a collector token).
    pub headers: Vec<(String, String)>,
    /// Share of allowed requests shipped, 0 to 1. Denials and errors are always shipped.
    pub sample_rate: f64,
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Most bytes in one batch body; a single larger record is dropped.
    pub batch_max_bytes: usize,
    /// A partial batch is sent once its oldest record has waited this long.
    pub flush_interval: Duration,
    /// Most records waiting; past it the oldest are dropped.
    pub max_buffered_records: usize,
    /// Most bytes waiting; past it the oldest are dropped.
    pub max_buffered_bytes: usize,
    /// Time allowed for one batch request.
    pub timeout: Duration,
    /// Attempts per batch, the first included; then the batch is dropped and counted.
    pub max_attempts: u32,
    /// Wait before the first retry, in ms; doubled per attempt.
    pub backoff_initial_ms: u64,
    /// Longest wait between attempts, in ms.
    pub backoff_max_ms: u64,
}

#[derive(Debug)]
struct Waiting {
    line: String,
    enqueued_ms: u64,
}

#[derive(Debug)]
struct Batch {
    body: Vec<u8>,
    records: usize,
    attempts: u32,
}

/// What happened to a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// It will be sent again after `delay_ms`.
    Retrying { attempts: u32, delay_ms: u64 },
    /// It used up its attempts; its records are lost and counted.
    Dropped { records: usize },
}

/// The queue of one VM.
#[derive(Debug)]
pub struct CollectorQueue {
    settings: CollectorSettings,
    waiting: VecDeque<Waiting>,
    waiting_bytes: usize,
    in_flight: Option<Batch>,
    retry: Option<(Batch, u64)>,
}

impl CollectorQueue {
    pub fn new(settings: CollectorSettings) -> Self {
        Self {
            settings,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            in_flight: None,
            retry: None,
        }
    }

    pub fn settings(&self) -> &CollectorSettings {
        &self.settings
    }

    /// Queues one encoded record (a JSON object without newline). Returns how many
    /// records were dropped to stay within bounds (the oldest first, or this one when
    /// it alone exceeds a batch).
    pub fn push(&mut self, line: String, now_ms: u64) -> usize {
        if self.framed_len(&line) > self.settings.batch_max_bytes {
            return 1;
        }
        self.waiting_bytes += line.len();
        self.waiting.push_back(Waiting {
            line,
            enqueued_ms: now_ms,
        });
        let mut dropped = 0;
        while self.waiting.len() > self.settings.max_buffered_records
            || self.waiting_bytes > self.settings.max_buffered_bytes
        {
            match self.waiting.pop_front() {
                Some(oldest) => {
                    self.waiting_bytes -= oldest.line.len();
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }

    /// Records waiting to be batched.
    pub fn waiting_records(&self) -> usize {
        self.waiting.len()
    }

    /// Records held in memory: waiting, in flight, or waiting to be retried.
    pub fn buffered_records(&self) -> usize {
        self.waiting.len()
            + self.in_flight.as_ref().map_or(0, |batch| batch.records)
            + self.retry.as_ref().map_or(0, |(batch, _)| batch.records)
    }

    /// The next batch body to send now, if any: a batch due for retry, or a new one
    /// once enough records wait or the oldest has waited `flush_interval`. Nothing
    /// while a batch is in flight.
    pub fn next_batch(&mut self, now_ms: u64) -> Option<&[u8]> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some((_, not_before)) = &self.retry {
            if now_ms < *not_before {
                return None;
            }
            self.in_flight = self.retry.take().map(|(batch, _)| batch);
        } else {
            let oldest = self.waiting.front()?.enqueued_ms;
            let full = self.waiting.len() >= self.settings.batch_max_records
                || self.waiting_bytes >= self.settings.batch_max_bytes;
            let interval =
                u64::try_from(self.settings.flush_interval.as_millis()).unwrap_or(u64::MAX);
            if !full && now_ms.saturating_sub(oldest) < interval {
                return None;
            }
            self.in_flight = Some(self.cut_batch());
        }
        self.in_flight.as_ref().map(|batch| batch.body.as_slice())
    }

    fn cut_batch(&mut self) -> Batch {
        let mut body = Vec::new();
        let mut records = 0;
        while records < self.settings.batch_max_records {
            let Some(next) = self.waiting.front() else {
                break;
            };
            if records > 0
                && body.len() + self.framed_len(&next.line) > self.settings.batch_max_bytes
            {
                break;
            }
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes -= next.line.len();
            self.frame(&next.line, &mut body);
            records += 1;
        }
        Batch {
            body,
            records,
            attempts: 0,
        }
    }

    fn frame(&self, line: &str, body: &mut Vec<u8>) {
        if self.settings.format == CollectorFormat::ElasticsearchBulk {
            body.extend_from_slice(b"{\"create\":{\"_index\":");
            body.extend_from_slice(
                serde_json::Value::from(self.settings.index.as_str())
                    .to_string()
                    .as_bytes(),
            );
            body.extend_from_slice(b"}}\n");
        }
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }

    fn framed_len(&self, line: &str) -> usize {
        let action = match self.settings.format {
            CollectorFormat::Ndjson => 0,
            CollectorFormat::ElasticsearchBulk => 26 + self.settings.index.len() * 2,
        };
        line.len() + 1 + action
    }

    /// The batch in flight was accepted; returns its record count.
    pub fn on_success(&mut self) -> usize {
        self.in_flight.take().map_or(0, |batch| batch.records)
    }

    /// The batch in flight failed (error status, timeout, reset, or the call could not
    /// be made). It is retried after a backoff, or dropped after `max_attempts`.
    pub fn on_failure(&mut self, now_ms: u64) -> FailureOutcome {
        let Some(mut batch) = self.in_flight.take() else {
            return FailureOutcome::Dropped { records: 0 };
        };
        batch.attempts += 1;
        if batch.attempts >= self.settings.max_attempts {
            return FailureOutcome::Dropped {
                records: batch.records,
            };
        }
        let delay_ms = backoff_ms(&self.settings, batch.attempts);
        let attempts = batch.attempts;
        self.retry = Some((batch, now_ms.saturating_add(delay_ms)));
        FailureOutcome::Retrying { attempts, delay_ms }
    }
}

/// Wait after `failures` failed attempts: `backoff_initial_ms * 2^(failures-1)`,
/// capped at `backoff_max_ms`.
pub fn backoff_ms(settings: &CollectorSettings, failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    settings
        .backoff_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(settings.backoff_max_ms)
}

/// Whether a record goes to the collector: denials and errors always, allowed
/// requests at `sample_rate`.
pub fn sampled(notable: bool, sample_rate: f64, random: &mut dyn RandomSource) -> bool {
    if notable || sample_rate >= 1.0 {
        return true;
    }
    let mut bytes = [0u8; 8];
    random.fill(&mut bytes);
    // 53 random bits give a uniform value in [0, 1).
    let draw = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    draw < sample_rate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SplitMix64;
    use proptest::prelude::*;

    fn settings() -> CollectorSettings {
        CollectorSettings {
            cluster: "logs".into(),
            authority: "logs".into(),
            path: "/".into(),
            format: CollectorFormat::Ndjson,
            index: "audit".into(),
            headers: Vec::new(),
            sample_rate: 1.0,
            batch_max_records: 3,
            batch_max_bytes: 1024,
            flush_interval: Duration::from_millis(1000),
            max_buffered_records: 5,
            max_buffered_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
            max_attempts: 3,
            backoff_initial_ms: 100,
            backoff_max_ms: 150,
        }
    }

    fn body(queue: &mut CollectorQueue, now: u64) -> Option<String> {
        queue
            .next_batch(now)
            .map(|body| String::from_utf8_lossy(body).into_owned())
    }

    #[test]
    fn full_batch_is_sent_at_once_and_partial_after_interval() {
        let mut queue = CollectorQueue::new(settings());
        queue.push("{\"n\":1}".into(), 0);
        queue.push("{\"n\":2}".into(), 0);
        assert_eq!(body(&mut queue, 999), None);
        assert_eq!(
            body(&mut queue, 1000).as_deref(),
            Some("{\"n\":1}\n{\"n\":2}\n")
        );
        assert_eq!(queue.on_success(), 2);

        for n in 0..4 {
            queue.push(format!("{{\"n\":{n}}}"), 2000);
        }
        assert_eq!(body(&mut queue, 2000).map(|b| b.lines().count()), Some(3));
        assert_eq!(
            body(&mut queue, 5000),
            None,
            "one batch in flight at a time"
        );
        queue.on_success();
        assert_eq!(body(&mut queue, 2500), None);
        assert_eq!(body(&mut queue, 3000).map(|b| b.lines().count()), Some(1));
    }

    #[test]
    fn oldest_records_are_dropped_past_the_cap() {
        let mut queue = CollectorQueue::new(settings());
        let dropped: usize = (0..8).map(|n| queue.push(format!("{n}"), 0)).sum();
        assert_eq!(dropped, 3);
        assert_eq!(queue.waiting_records(), 5);
        assert_eq!(body(&mut queue, 0).as_deref(), Some("3\n4\n5\n"));
    }

    #[test]
    fn byte_cap_drops_oldest_too() {
        let mut queue = CollectorQueue::new(CollectorSettings {
            max_buffered_bytes: 10,
            ..settings()
        });
        assert_eq!(queue.push("aaaa".into(), 0), 0);
        assert_eq!(queue.push("bbbb".into(), 0), 0);
        assert_eq!(queue.push("cccc".into(), 0), 1);
        assert_eq!(queue.waiting_records(), 2);
    }

    #[test]
    fn oversized_record_is_dropped_alone() {
        let mut queue = CollectorQueue::new(settings());
        assert_eq!(queue.push("x".repeat(2000), 0), 1);
        assert_eq!(queue.waiting_records(), 0);
    }

    #[test]
    fn failed_batch_is_retried_with_backoff_then_dropped() {
        let mut queue = CollectorQueue::new(settings());
        for n in 0..3 {
            queue.push(format!("{n}"), 0);
        }
        assert!(body(&mut queue, 0).is_some());
        assert_eq!(
            queue.on_failure(0),
            FailureOutcome::Retrying {
                attempts: 1,
                delay_ms: 100
            }
        );
        assert_eq!(body(&mut queue, 99), None);
        assert_eq!(body(&mut queue, 100).as_deref(), Some("0\n1\n2\n"));
        assert_eq!(
            queue.on_failure(100),
            FailureOutcome::Retrying {
                attempts: 2,
                delay_ms: 150
            }
        );
        assert!(body(&mut queue, 250).is_some());
        assert_eq!(
            queue.on_failure(250),
            FailureOutcome::Dropped { records: 3 }
        );
        assert_eq!(body(&mut queue, 10_000), None);
    }

    #[test]
    fn elasticsearch_bulk_puts_an_action_before_each_record() {
        let mut queue = CollectorQueue::new(CollectorSettings {
            format: CollectorFormat::ElasticsearchBulk,
            index: "gate\"house".into(),
            ..settings()
        });
        queue.push("{\"a\":1}".into(), 0);
        let body = body(&mut queue, 1000).unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"gate\\\"house\"}}\n{\"a\":1}\n"
        );
    }

    #[test]
    fn denials_are_never_sampled_out() {
        let mut random = SplitMix64::new(3);
        assert!((0..1000).all(|_| sampled(true, 0.0, &mut random)));
        assert!((0..1000).all(|_| !sampled(false, 0.0, &mut random)));
        let kept = (0..10_000)
            .filter(|_| sampled(false, 0.25, &mut random))
            .count();
        assert!((2200..2800).contains(&kept), "{kept}");
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_and_every_record_is_accounted(
            sizes in proptest::collection::vec(1usize..300, 1..200),
            fail_every in 1usize..5,
        ) {
            let mut queue = CollectorQueue::new(CollectorSettings { max_buffered_bytes: 2000, ..settings() });
            let (mut dropped, mut sent, mut pushed) = (0, 0, 0);
            for (step, size) in sizes.iter().enumerate() {
                let now = step as u64 * 100;
                pushed += 1;
                dropped += queue.push("r".repeat(*size), now);
                prop_assert!(queue.waiting_records() <= 5);
                prop_assert!(queue.waiting_bytes <= 2000);
                if queue.next_batch(now).is_some() {
                    if step % fail_every == 0 {
                        if let FailureOutcome::Dropped { records } = queue.on_failure(now) {
                            dropped += records;
                        }
                    } else {
                        sent += queue.on_success();
                    }
                }
            }
            let pending = queue.waiting_records()
                + queue.retry.as_ref().map_or(0, |(batch, _)| batch.records)
                + queue.in_flight.as_ref().map_or(0, |batch| batch.records);
            prop_assert_eq!(pushed, dropped + sent + pending);
        }
    }
}
