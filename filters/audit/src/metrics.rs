//! The audit filter's metrics, defined once per VM.

use gatehouse_host::Metric;

/// Every metric the audit filter keeps; names as they appear at `/stats/prometheus`.
#[derive(Debug, Clone, Copy)]
pub struct AuditMetrics {
    pub records: Metric,
    pub ids_generated: Metric,
    pub ids_replaced: Metric,
    pub sampled_out: Metric,
    pub dropped: Metric,
    pub shipped: Metric,
    pub batches_sent: Metric,
    pub batches_failed: Metric,
    pub buffered: Metric,
}

impl AuditMetrics {
    pub fn define() -> Self {
        Self {
            records: Metric::counter("gatehouse_audit_records_total"),
            ids_generated: Metric::counter("gatehouse_audit_correlation_ids_generated_total"),
            ids_replaced: Metric::counter("gatehouse_audit_correlation_ids_replaced_total"),
            sampled_out: Metric::counter("gatehouse_audit_collector_sampled_out_total"),
            dropped: Metric::counter("gatehouse_audit_collector_dropped_total"),
            shipped: Metric::counter("gatehouse_audit_collector_records_sent_total"),
            batches_sent: Metric::counter("gatehouse_audit_collector_batches_sent_total"),
            batches_failed: Metric::counter("gatehouse_audit_collector_batches_failed_total"),
            buffered: Metric::gauge("gatehouse_audit_collector_buffered_records"),
        }
    }
}
