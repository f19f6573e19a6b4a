//! One request's context: correlation id in, record out.

use crate::metrics::AuditMetrics;
use crate::root::SharedQueue;
use gatehouse_host::{delta, property_string, property_u64, publish, HostClock, HostRandom};
use gatehouse_shared::attributes::{AUDIT_RECORD, CORRELATION_ID, PUBLISHED_DECISIONS};
use gatehouse_shared::audit::collector::sampled;
use gatehouse_shared::audit::{AuditSettings, Completion, StartedRecord};
use gatehouse_shared::correlation::RejectReason;
use gatehouse_shared::host::Clock;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

pub struct AuditStream {
    settings: Rc<AuditSettings>,
    queue: SharedQueue,
    metrics: AuditMetrics,
    started: Option<StartedRecord>,
    /// When the request left this filter, for the backend latency.
    forwarded_at: Option<SystemTime>,
}

impl AuditStream {
    pub fn new(settings: Rc<AuditSettings>, queue: SharedQueue, metrics: AuditMetrics) -> Self {
        Self {
            settings,
            queue,
            metrics,
            started: None,
            forwarded_at: None,
        }
    }

    fn start(&mut self, headers: &[(String, Vec<u8>)]) -> &StartedRecord {
        let peer = property_string(&["source", "address"]).unwrap_or_default();
        let now = HostClock.now();
        let started = self
            .settings
            .start_record(headers, &peer, now, &mut HostRandom::default());
        self.started.insert(started)
    }

    fn completion() -> Completion {
        let status = property_u64(&["response", "code"]).unwrap_or(0);
        Completion {
            status: u16::try_from(status).unwrap_or(0),
            request_bytes: property_u64(&["request", "size"]).unwrap_or(0),
            response_bytes: property_u64(&["response", "size"]).unwrap_or(0),
            protocol: property_string(&["request", "protocol"]),
            duration: property_u64(&["request", "duration"]).map(Duration::from_nanos),
            response_flags: property_u64(&["response", "flags"]).unwrap_or(0),
            response_code_details: property_string(&["response", "code_details"]),
            route: property_string(&["xds", "route_name"]),
            cluster: property_string(&["xds", "cluster_name"]),
            decisions: PUBLISHED_DECISIONS
                .iter()
                .filter_map(|(field, attribute)| Some((*field, property_string(&[attribute])?)))
                .collect(),
        }
    }
}

impl Context for AuditStream {}

impl HttpContext for AuditStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        let header = self.settings.correlation.header.clone();
        let started = self.start(&headers);
        let id = started.correlation_id().to_string();
        let rejected = started.rejection();

        match rejected {
            None => {}
            Some(RejectReason::Absent) => self.metrics.ids_generated.add(1),
            Some(_) => {
                self.metrics.ids_generated.add(1);
                self.metrics.ids_replaced.add(1);
            }
        }
        self.set_http_request_header(&header, Some(&id));
        publish(CORRELATION_ID, &id);
        self.forwarded_at = Some(HostClock.now());
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
        let started = match self.started.take() {
            Some(started) => started,
            // The request ended before its headers reached this filter.
            None => self.start(&[]).clone(),
        };
        let record = started.finish(Self::completion(), HostClock.now());
        let line = record.to_json();
        self.metrics.records.add(1);
        if self.settings.access_log {
            publish(AUDIT_RECORD, &line);
        }

        let mut guard = self.queue.borrow_mut();
        let Some(queue) = guard.as_mut() else { return };
        let sample_rate = queue.settings().sample_rate;
        if !sampled(record.is_notable(), sample_rate, &mut HostRandom::default()) {
            self.metrics.sampled_out.add(1);
            return;
        }
        let dropped = queue.push(line, HostClock.now_millis());
        self.metrics.dropped.add(delta(dropped));
    }
}
