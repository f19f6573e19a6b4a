//! The root context: configuration, and shipping batches to the collector.

use crate::metrics::AuditMetrics;
use crate::stream::AuditStream;
use gatehouse_host::{delta, seeded_generator, HostClock};
use gatehouse_shared::audit::collector::FailureOutcome;
use gatehouse_shared::audit::{AuditSettings, CollectorFormat, CollectorQueue};
use gatehouse_shared::host::{Clock, SplitMix64};
use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The queue shared by the root context and the request contexts of one VM.
pub type SharedQueue = Rc<RefCell<Option<CollectorQueue>>>;

/// The VM's generator for correlation ids and sampling draws.
pub type SharedGenerator = Rc<RefCell<SplitMix64>>;

#[derive(Default)]
pub struct AuditRoot {
    settings: Option<Rc<AuditSettings>>,
    queue: SharedQueue,
    generator: Option<SharedGenerator>,
    metrics: Option<AuditMetrics>,
    /// What this VM last added to the shared buffered-records gauge.
    reported_buffered: i64,
}

impl Context for AuditRoot {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|status| status.parse::<u16>().ok());
        let now = HostClock.now_millis();
        let answer = {
            let mut guard = self.queue.borrow_mut();
            let Some(queue) = guard.as_mut() else { return };
            match status {
                Some(200..=299) => Ok(queue.on_success()),
                _ => Err(queue.on_failure(now)),
            }
        };
        match answer {
            Ok(records) => {
                if let Some(metrics) = &self.metrics {
                    metrics.batches_sent.add(1);
                    metrics.shipped.add(delta(records));
                }
            }
            Err(outcome) => self.note_failure(outcome, status),
        }
        self.flush();
    }
}

impl RootContext for AuditRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let settings = match AuditSettings::from_json(&bytes) {
            Ok(settings) => settings,
            Err(problem) => {
                error!("audit configuration refused: {problem}");
                return false;
            }
        };
        info!(
            "audit filter configured version={} {}",
            env!("CARGO_PKG_VERSION"),
            settings.summary()
        );
        if self.metrics.is_none() {
            self.metrics = Some(AuditMetrics::define());
        }
        if self.generator.is_none() {
            self.generator = Some(Rc::new(RefCell::new(seeded_generator())));
        }
        if let Some(collector) = &settings.collector {
            // Ticks both cut partial batches and time retries, so they come often
            // enough for the shorter of the two waits.
            let tick = collector
                .flush_interval
                .min(Duration::from_millis(collector.backoff_initial_ms))
                .clamp(Duration::from_millis(10), Duration::from_millis(500));
            self.set_tick_period(tick);
            *self.queue.borrow_mut() = Some(CollectorQueue::new(collector.clone()));
        }
        self.settings = Some(Rc::new(settings));
        true
    }

    fn on_tick(&mut self) {
        self.flush();
        self.report_buffered();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = self.settings.clone()?;
        let metrics = self.metrics?;
        let generator = self.generator.clone()?;
        let queue = self.queue.clone();
        Some(Box::new(AuditStream::new(
            settings, queue, generator, metrics,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl AuditRoot {
    /// Sends the next batch when one is due and none is in flight.
    fn flush(&mut self) {
        let now = HostClock.now_millis();
        let mut guard = self.queue.borrow_mut();
        let Some(queue) = guard.as_mut() else { return };
        let settings = queue.settings().clone();
        let Some(body) = queue.next_batch(now) else {
            return;
        };

        let content_type = match settings.format {
            CollectorFormat::Ndjson | CollectorFormat::ElasticsearchBulk => "application/x-ndjson",
        };
        let mut headers = vec![
            (":method", "POST"),
            (":path", settings.path.as_str()),
            (":authority", settings.authority.as_str()),
            ("content-type", content_type),
        ];
        headers.extend(
            settings
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let sent = self.dispatch_http_call(
            &settings.cluster,
            headers,
            Some(body),
            vec![],
            settings.timeout,
        );
        if let Err(status) = sent {
            warn!(
                "audit batch not sent cluster={} status={status:?}",
                settings.cluster
            );
            let outcome = queue.on_failure(now);
            drop(guard);
            self.note_failure(outcome, None);
        }
    }

    /// Moves the shared gauge by this VM's change since the last tick.
    fn report_buffered(&mut self) {
        let buffered = self
            .queue
            .borrow()
            .as_ref()
            .map_or(0, |queue| delta(queue.buffered_records()));
        if let Some(metrics) = &self.metrics {
            metrics.buffered.add(buffered - self.reported_buffered);
        }
        self.reported_buffered = buffered;
    }

    fn note_failure(&self, outcome: FailureOutcome, status: Option<u16>) {
        let Some(metrics) = &self.metrics else { return };
        metrics.batches_failed.add(1);
        match outcome {
            FailureOutcome::Retrying { attempts, delay_ms } => {
                warn!("audit batch failed status={status:?} attempts={attempts} retry_in_ms={delay_ms}");
            }
            FailureOutcome::Dropped { records } => {
                metrics.dropped.add(delta(records));
                error!("audit batch dropped after its last attempt status={status:?} records={records}");
            }
        }
    }
}
