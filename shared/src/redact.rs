//! Redaction: what must never reach a record in clear.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Headers redacted whatever the configuration says.
pub const ALWAYS_REDACTED_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Replaces the values of `sensitive` query parameters (names compared without case,
/// before and after percent-decoding) with `[redacted]`. The path and the other
/// parameters are kept byte for byte.
pub fn redact_query<'a>(path: &'a str, sensitive: &[String]) -> Cow<'a, str> {
    let Some((before, query)) = path.split_once('?') else {
        return Cow::Borrowed(path);
    };
    let mut changed = false;
    let pairs: Vec<Cow<str>> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if pair.contains('=') && is_sensitive(name, sensitive) {
                changed = true;
                Cow::Owned(format!("{name}={REDACTED}"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    if changed {
        Cow::Owned(format!("{before}?{}", pairs.join("&")))
    } else {
        Cow::Borrowed(path)
    }
}

fn is_sensitive(name: &str, sensitive: &[String]) -> bool {
    let decoded = percent_decode(name);
    sensitive.iter().any(|candidate| {
        candidate.eq_ignore_ascii_case(name) || candidate.eq_ignore_ascii_case(&decoded)
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let decoded = match byte {
            b'%' => bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match decoded {
            Some(value) => {
                out.push(value);
                index += 3;
            }
            None => {
                out.push(if byte == b'+' { b' ' } else { byte });
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A keyed hash that identifies a secret (an API key) without revealing it:
/// the first 16 hex digits of HMAC-SHA256(key, secret).
#[derive(Clone)]
pub struct KeyedHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("KeyedHasher([redacted])")
    }
}

impl KeyedHasher {
    /// A hasher with `key`; callers check its length at configure time.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// `hmac-sha256:` followed by 16 hex digits.
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        // HMAC accepts keys of any length, so this never fails; an empty result
        // would only hide the key, never reveal it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return REDACTED.to_string();
        };
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("hmac-sha256:{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn sensitive_query_values_are_redacted_and_the_rest_kept() {
        let sensitive = names(&["token", "api_key"]);
        let cases = [
            ("/a/b", "/a/b"),
            ("/a?x=1", "/a?x=1"),
            ("/a?token=s3cret&x=1", "/a?token=[redacted]&x=1"),
            ("/a?x=1&TOKEN=s3cret", "/a?x=1&TOKEN=[redacted]"),
            (
                "/a?api%5Fkey=k&api_key=k2",
                "/a?api%5Fkey=[redacted]&api_key=[redacted]",
            ),
            ("/a?token", "/a?token"),
            ("/a?tokens=keep", "/a?tokens=keep"),
        ];
        for (path, expected) in cases {
            assert_eq!(redact_query(path, &sensitive), expected, "{path}");
        }
    }

    #[test]
    fn fingerprint_is_keyed_short_and_stable() {
        let hasher = KeyedHasher::new(b"0123456789abcdef");
        let first = hasher.fingerprint(b"demo-pro-key");
        assert_eq!(first, hasher.fingerprint(b"demo-pro-key"));
        assert_eq!(first.len(), "hmac-sha256:".len() + 16);
        assert!(!first.contains("demo-pro-key"));
        assert_ne!(
            first,
            KeyedHasher::new(b"another key 1234").fingerprint(b"demo-pro-key")
        );
    }

    #[test]
    fn fingerprint_matches_known_answer() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog") from RFC 4231-style
        // published vectors: f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8
        let hasher = KeyedHasher::new(b"key");
        assert_eq!(
            hasher.fingerprint(b"The quick brown fox jumps over the lazy dog"),
            "hmac-sha256:f7bc83f430538424"
        );
    }
}
