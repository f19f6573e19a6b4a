//! The audit filter's policy: configuration, the record, and the collector queue.

pub mod collector;
pub mod config;
pub mod flags;
pub mod record;

pub use collector::{CollectorFormat, CollectorQueue, CollectorSettings};
pub use config::AuditSettings;
pub use record::{AuditRecord, Completion, StartedRecord};
