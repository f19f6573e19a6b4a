//! Correlation ids: keep a well-formed incoming id, replace anything else.

use crate::host::RandomSource;
use serde::Serialize;

/// Longest rejected value kept in a record, in characters after escaping.
pub const REJECTED_EXCERPT_CHARS: usize = 64;

/// How incoming ids are judged. Built once at configure time.
#[derive(Debug, Clone)]
pub struct CorrelationPolicy {
    /// Lowercase header name the id travels in.
    pub header: String,
    /// Longest id accepted, in bytes.
    pub max_length: usize,
    /// Ids matching this (anchored) pattern are kept besides UUIDs.
    pub pattern: Option<regex_lite::Regex>,
}

/// Why an incoming id was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The header was absent.
    Absent,
    /// The header was present with an empty value.
    Empty,
    /// Longer than `max_length`.
    TooLong,
    /// Contains a control character (below 0x20, or DEL).
    ControlCharacters,
    /// Contains a byte outside `A-Z a-z 0-9 - _ . :` (non-ASCII included).
    BadCharacters,
    /// Only safe characters, but neither a UUID nor a match of the configured pattern.
    Malformed,
    /// The header appeared more than once.
    Repeated,
}

/// An incoming value that was replaced, kept for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedId {
    /// Why it was replaced.
    pub reason: RejectReason,
    /// The value, escaped to printable ASCII and truncated; absent when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The id the request carries from here on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationDecision {
    /// The id to forward, echo and publish.
    pub id: String,
    /// What was wrong with the incoming value, when it was not kept. `None` means the
    /// incoming id was kept; an absent header is `Some` with `RejectReason::Absent`.
    pub rejected: Option<RejectedId>,
}

impl CorrelationPolicy {
    /// Judges the values the request carried in the correlation header (one entry per
    /// occurrence) and returns the id to use, generating one when needed.
    pub fn decide(&self, values: &[&[u8]], random: &mut dyn RandomSource) -> CorrelationDecision {
        match self.judge(values) {
            Ok(id) => CorrelationDecision { id, rejected: None },
            Err(rejected) => CorrelationDecision {
                id: new_uuid_v4(random),
                rejected: Some(rejected),
            },
        }
    }

    fn judge(&self, values: &[&[u8]]) -> Result<String, RejectedId> {
        let value = match values {
            [] => return Err(rejected(RejectReason::Absent, None)),
            [value] => *value,
            [first, ..] => return Err(rejected(RejectReason::Repeated, Some(first))),
        };
        if value.is_empty() {
            return Err(rejected(RejectReason::Empty, None));
        }
        if value.iter().any(|byte| *byte < 0x20 || *byte == 0x7f) {
            return Err(rejected(RejectReason::ControlCharacters, Some(value)));
        }
        if value.len() > self.max_length {
            return Err(rejected(RejectReason::TooLong, Some(value)));
        }
        let safe = |byte: &u8| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte);
        if !value.iter().all(safe) {
            return Err(rejected(RejectReason::BadCharacters, Some(value)));
        }
        // Checked above: safe ASCII only.
        let text = String::from_utf8_lossy(value);
        let accepted = is_uuid(&text)
            || self
                .pattern
                .as_ref()
                .is_some_and(|pattern| pattern.is_match(&text));
        if accepted {
            Ok(text.into_owned())
        } else {
            Err(rejected(RejectReason::Malformed, Some(value)))
        }
    }
}

fn rejected(reason: RejectReason, value: Option<&[u8]>) -> RejectedId {
    RejectedId {
        reason,
        value: value.map(escape_excerpt),
    }
}

/// A canonical hyphenated UUID (8-4-4-4-12 hex digits, either case).
pub fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// A fresh random (version 4) UUID, lowercase.
pub fn new_uuid_v4(random: &mut dyn RandomSource) -> String {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Escapes bytes to printable ASCII (`\xNN` for anything else, `\\` for a
/// backslash) and cuts the result at `REJECTED_EXCERPT_CHARS`, marking a cut with `...`.
pub fn escape_excerpt(value: &[u8]) -> String {
    let mut escaped = String::new();
    for byte in value {
        let piece = match byte {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => char::from(*byte).to_string(),
            _ => format!("\\x{byte:02x}"),
        };
        if escaped.len() + piece.len() > REJECTED_EXCERPT_CHARS {
            escaped.push_str("...");
            return escaped;
        }
        escaped.push_str(&piece);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SplitMix64;

    fn policy(pattern: Option<&str>) -> CorrelationPolicy {
        CorrelationPolicy {
            header: "x-correlation-id".into(),
            max_length: 40,
            pattern: pattern.map(|p| regex_lite::Regex::new(&format!("^(?:{p})$")).unwrap()),
        }
    }

    fn decide(policy: &CorrelationPolicy, values: &[&[u8]]) -> CorrelationDecision {
        policy.decide(values, &mut SplitMix64::new(7))
    }

    #[test]
    fn well_formed_uuid_is_kept_as_sent() {
        let id = "0F8FAD5B-D9CB-469F-A165-70867728950E";
        let decision = decide(&policy(None), &[id.as_bytes()]);
        assert_eq!(decision.id, id);
        assert_eq!(decision.rejected, None);
    }

    #[test]
    fn id_matching_configured_pattern_is_kept() {
        let decision = decide(&policy(Some("[a-z0-9-]{6,32}")), &[b"order-1234"]);
        assert_eq!(decision.id, "order-1234");
        assert_eq!(decision.rejected, None);
    }

    #[test]
    fn pattern_is_anchored() {
        let decision = decide(&policy(Some("[a-z]+")), &[b"abc-rm"]);
        assert_eq!(decision.rejected.unwrap().reason, RejectReason::Malformed);
    }

    #[test]
    fn malformed_ids_are_replaced_with_the_reason() {
        let too_long = "a".repeat(41);
        type Case<'a> = (Vec<&'a [u8]>, RejectReason, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (vec![], RejectReason::Absent, None),
            (vec![b""], RejectReason::Empty, None),
            (
                vec![too_long.as_bytes()],
                RejectReason::TooLong,
                Some(&too_long),
            ),
            (
                vec![b"abc\x01def"],
                RejectReason::ControlCharacters,
                Some("abc\\x01def"),
            ),
            (
                vec![b"abc\xc3\xa9"],
                RejectReason::BadCharacters,
                Some("abc\\xc3\\xa9"),
            ),
            (
                vec![b"a b\x7f"],
                RejectReason::ControlCharacters,
                Some("a b\\x7f"),
            ),
            (
                vec![b"<script>"],
                RejectReason::BadCharacters,
                Some("<script>"),
            ),
            (
                vec![b"not-a-uuid"],
                RejectReason::Malformed,
                Some("not-a-uuid"),
            ),
            (vec![b"one", b"two"], RejectReason::Repeated, Some("one")),
        ];
        for (values, reason, value) in cases {
            let decision = decide(&policy(None), &values);
            let rejected = decision.rejected.expect("rejected");
            assert_eq!(rejected.reason, reason, "{values:?}");
            assert_eq!(rejected.value.as_deref(), value, "{values:?}");
            assert!(is_uuid(&decision.id), "{}", decision.id);
        }
    }

    #[test]
    fn generated_ids_are_version_4_and_differ() {
        let mut random = SplitMix64::new(1);
        let first = new_uuid_v4(&mut random);
        let second = new_uuid_v4(&mut random);
        assert_ne!(first, second);
        assert_eq!(&first[14..15], "4");
        assert!(matches!(&first[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn excerpt_is_escaped_and_truncated() {
        let long = vec![b'x'; 200];
        let excerpt = escape_excerpt(&long);
        assert_eq!(excerpt.len(), REJECTED_EXCERPT_CHARS + 3);
        assert!(excerpt.ends_with("..."));
        assert_eq!(escape_excerpt(b"a\\b\n"), "a\\\\b\\x0a");
    }
}
