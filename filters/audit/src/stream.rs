//! One request's context: correlation id in, record out.
//!
//! Every call into the host costs about 1.5 µs, so each step asks the host only for
//! what it cannot know otherwise: the request headers once, the peer address once,
//! one clock read per phase, and at the end only the stream facts the record needs.

use crate::metrics::AuditMetrics;
use crate::root::{SharedGenerator, SharedQueue};
use gatehouse_host::{delta, property_string, property_u64, HostClock};
use gatehouse_shared::attributes::{AUDIT_RECORD, CORRELATION_ID, PUBLISHED_OUTCOMES};
use gatehouse_shared::audit::collector::sampled;
use gatehouse_shared::audit::{AuditSettings, Completion, StartedRecord};
use gatehouse_shared::correlation::RejectReason;
use gatehouse_shared::host::{millis_since_epoch, Clock};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

pub struct AuditStream {
    settings: Rc<AuditSettings>,
    queue: SharedQueue,
    generator: SharedGenerator,
    metrics: AuditMetrics,
    started: Option<StartedRecord>,
    /// When the request left this filter, for the backend latency.
    forwarded_at: Option<SystemTime>,
    /// Whether the request has a body (otherwise its size is known to be 0).
    request_has_body: bool,
}

impl AuditStream {
    pub fn new(
        settings: Rc<AuditSettings>,
        queue: SharedQueue,
        generator: SharedGenerator,
        metrics: AuditMetrics,
    ) -> Self {
        Self {
            settings,
            queue,
            generator,
            metrics,
            started: None,
            forwarded_at: None,
            request_has_body: true,
        }
    }

    fn start(&mut self, headers: &[(String, Vec<u8>)], now: SystemTime) -> StartedRecord {
        let peer = property_string(&["source", "address"]).unwrap_or_default();
        let mut generator = self.generator.borrow_mut();
        self.settings
            .start_record(headers, &peer, now, &mut *generator)
    }

    fn completion(&self) -> Completion {
        let status = property_u64(&["response", "code"]).unwrap_or(0);
        let response_flags = property_u64(&["response", "flags"]).unwrap_or(0);
        let cluster = property_string(&["xds", "cluster_name"]);
        // A backend's own answer has the details `via_upstream`, which the record
        // leaves out anyway: skip the crossing.
        let from_backend = response_flags == 0 && status != 0 && cluster.is_some();
        Completion {
            status: u16::try_from(status).unwrap_or(0),
            request_bytes: if self.request_has_body {
                property_u64(&["request", "size"]).unwrap_or(0)
            } else {
                0
            },
            response_bytes: property_u64(&["response", "size"]).unwrap_or(0),
            protocol: property_string(&["request", "protocol"]),
            duration: property_u64(&["request", "duration"]).map(Duration::from_nanos),
            response_flags,
            response_code_details: if from_backend {
                None
            } else {
                property_string(&["response", "code_details"])
            },
            route: property_string(&["xds", "route_name"]),
            cluster,
            outcomes: PUBLISHED_OUTCOMES
                .iter()
                .filter_map(|name| {
                    let value = hostcalls::get_property(vec![name]).ok().flatten()?;
                    Some((*name, value))
                })
                .collect(),
        }
    }
}

impl Context for AuditStream {}

impl HttpContext for AuditStream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let now = HostClock.now();
        self.request_has_body = !end_of_stream;
        let headers = self.get_http_request_headers_bytes();
        let started = self.start(&headers, now);
        let id = started.correlation_id().to_string();

        match started.rejection() {
            // The incoming id is kept: the backend already has it.
            None => {}
            Some(reason) => {
                self.metrics.ids_generated.add(1);
                if reason != RejectReason::Absent {
                    self.metrics.ids_replaced.add(1);
                }
                let header = &self.settings.correlation.header;
                self.set_http_request_header(header, Some(&id));
            }
        }
        let _ = hostcalls::set_property(vec![CORRELATION_ID], Some(id.as_bytes()));
        self.started = Some(started);
        self.forwarded_at = Some(now);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let latency = self
            .forwarded_at
            .and_then(|forwarded| HostClock.now().duration_since(forwarded).ok());
        let headers = if self.settings.response_headers.is_empty() {
            Vec::new()
        } else {
            self.get_http_response_headers_bytes()
        };
        if let Some(started) = &mut self.started {
            started.note_response(&self.settings, &headers, latency);
            let id = started.correlation_id().to_string();
            self.set_http_response_header(&self.settings.correlation.header, Some(&id));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let now = HostClock.now();
        let started = match self.started.take() {
            Some(started) => started,
            // The request ended before its headers reached this filter (Envoy refused
            // it): the record still gets written, with a fresh id.
            None => self.start(&[], now),
        };
        let record = started.finish(self.completion(), now);
        let line = record.to_json();
        self.metrics.records.add(1);
        if self.settings.access_log {
            let _ = hostcalls::set_property(vec![AUDIT_RECORD], Some(line.as_bytes()));
        }

        let mut guard = self.queue.borrow_mut();
        let Some(queue) = guard.as_mut() else { return };
        let sample_rate = queue.settings().sample_rate;
        let keep = sampled(
            record.is_notable(),
            sample_rate,
            &mut *self.generator.borrow_mut(),
        );
        if !keep {
            self.metrics.sampled_out.add(1);
            return;
        }
        let dropped = queue.push(line, millis_since_epoch(now));
        self.metrics.dropped.add(delta(dropped));
    }
}
