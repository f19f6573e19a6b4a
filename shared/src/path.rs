//! Request path normalization, so that what a rule decides is what Envoy routes.
//!
//! The normal form: percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`)
//! decoded, hex digits of the other escapes in upper case, `.` and `..` segments
//! resolved, runs of `/` merged. Anything that different layers could read
//! differently is refused instead of guessed at: an encoded `/` or `\`, a raw `\`, a
//! NUL (raw or encoded), an invalid escape, a `..` above the root, a path that does
//! not start with `/`, and (unless allowed) a `;` that some backends read as the start
//! of path parameters.

use std::fmt;

/// Why a path is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not starting with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    InvalidEscape,
    /// `%2F`: a slash inside a segment.
    EncodedSlash,
    /// A raw `\` or `%5C`.
    Backslash,
    /// A raw or encoded NUL.
    Nul,
    /// A control character or a byte outside ASCII, raw.
    InvalidCharacter,
    /// `..` that would climb above the root.
    AboveRoot,
    /// A `;` (path parameters).
    Semicolon,
}

impl PathError {
    /// A short machine-readable reason for the audit record.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "path_not_absolute",
            Self::InvalidEscape => "path_invalid_escape",
            Self::EncodedSlash => "path_encoded_slash",
            Self::Backslash => "path_backslash",
            Self::Nul => "path_nul",
            Self::InvalidCharacter => "path_invalid_character",
            Self::AboveRoot => "path_above_root",
            Self::Semicolon => "path_semicolon",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.reason())
    }
}

/// A request target split into its normalized path and its query (kept as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    pub query: Option<String>,
}

/// Normalizes the `:path` of a request. `allow_semicolon` lets `;` through as an
/// ordinary character.
pub fn normalize(target: &str, allow_semicolon: bool) -> Result<NormalizedPath, PathError> {
    let (raw, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    let raw = raw.split_once('#').map_or(raw, |(path, _)| path);
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }

    let mut segments: Vec<String> = Vec::new();
    for segment in raw.split('/').skip(1) {
        let segment = decode_segment(segment, allow_semicolon)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(segment),
        }
    }

    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    // A trailing slash is kept: `/a/` and `/a` may be different resources.
    let trailing = raw.ends_with('/') || raw.ends_with("/.") || raw.ends_with("/..");
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(NormalizedPath { path, query })
}

fn decode_segment(segment: &str, allow_semicolon: bool) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'%' => {
                let value = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .filter(|hex| hex.bytes().all(|digit| digit.is_ascii_hexdigit()))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or(PathError::InvalidEscape)?;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    b';' if !allow_semicolon => return Err(PathError::Semicolon),
                    value if is_unreserved(value) => out.push(char::from(value)),
                    value => out.push_str(&format!("%{value:02X}")),
                }
                index += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b';' if !allow_semicolon => return Err(PathError::Semicolon),
            0x01..=0x20 | 0x7f..=0xff => return Err(PathError::InvalidCharacter),
            _ => {
                out.push(char::from(byte));
                index += 1;
            }
        }
    }
    Ok(out)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        let cases = [
            ("/", "/"),
            ("/accounts/close", "/accounts/close"),
            ("//accounts/close", "/accounts/close"),
            ("/accounts//close", "/accounts/close"),
            ("/accounts/./close", "/accounts/close"),
            ("/accounts/x/../close", "/accounts/close"),
            ("/accounts/%63lose", "/accounts/close"),
            ("/accounts/%7euser", "/accounts/~user"),
            ("/accounts/a%2bb", "/accounts/a%2Bb"),
            ("/accounts/close/", "/accounts/close/"),
            ("/accounts/close/.", "/accounts/close/"),
            ("/a/b/..", "/a/"),
            ("/.", "/"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                normalize(raw, false).map(|p| p.path),
                Ok(expected.to_string()),
                "{raw}"
            );
        }
    }

    #[test]
    fn query_is_kept_as_sent() {
        let normalized = normalize("/a/../b?x=%2F&y=..", false).unwrap();
        assert_eq!(normalized.path, "/b");
        assert_eq!(normalized.query.as_deref(), Some("x=%2F&y=.."));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("accounts", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/accounts%2Fclose", PathError::EncodedSlash),
            ("/accounts%2fclose", PathError::EncodedSlash),
            ("/accounts%5Cclose", PathError::Backslash),
            ("/accounts\\close", PathError::Backslash),
            ("/accounts%00", PathError::Nul),
            ("/accounts/%zz", PathError::InvalidEscape),
            ("/accounts/%4", PathError::InvalidEscape),
            ("/accounts/%", PathError::InvalidEscape),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/accounts/close;x", PathError::Semicolon),
            ("/accounts/close%3Bx", PathError::Semicolon),
            ("/a b", PathError::InvalidCharacter),
            ("/caf\u{e9}", PathError::InvalidCharacter),
        ];
        for (raw, error) in cases {
            assert_eq!(normalize(raw, false), Err(error), "{raw:?}");
        }
    }

    #[test]
    fn semicolons_can_be_allowed() {
        assert_eq!(normalize("/a;v=1/b", true).unwrap().path, "/a;v=1/b");
    }
}
