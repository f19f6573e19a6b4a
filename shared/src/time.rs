//! Time formats used in records and answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 in UTC with millisecond precision: `2026-12-03T16:13:29.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    // humantime prints the epoch for times before it; clamp so it never fails.
    let time = if time < UNIX_EPOCH { UNIX_EPOCH } else { time };
    humantime::format_rfc3339_millis(time).to_string()
}

/// Reads an RFC 3339 time in UTC (`2026-12-01T00:00:00Z`, fractions allowed) as ms
/// since the epoch. Other offsets are refused: the parser underneath would read some
/// of them as UTC.
pub fn parse_rfc3339_millis(text: &str) -> Option<u64> {
    if !text.ends_with('Z') {
        return None;
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .map(crate::host::millis_since_epoch)
}

/// A duration in milliseconds with microsecond precision, for records.
pub fn millis_f64(duration: Duration) -> f64 {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    // An exact division for any duration a request can take.
    (micros as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_796_314_409_123);
        assert_eq!(rfc3339_millis(time), "2026-12-03T16:13:29.123Z");
    }

    #[test]
    fn time_before_epoch_is_clamped() {
        let time = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339_millis(time), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_reads_back() {
        assert_eq!(
            parse_rfc3339_millis("2026-12-03T16:13:29Z"),
            Some(1_796_314_409_000)
        );
        assert_eq!(parse_rfc3339_millis("tomorrow"), None);
        assert_eq!(parse_rfc3339_millis("2026-12-03T16:13:29.5+02:00"), None);
        assert_eq!(
            parse_rfc3339_millis("2026-12-03T16:13:29.5Z"),
            Some(1_796_314_409_500)
        );
    }

    #[test]
    fn durations_keep_microseconds() {
        assert_eq!(millis_f64(Duration::from_micros(1_234_567)), 1234.567);
    }
}
