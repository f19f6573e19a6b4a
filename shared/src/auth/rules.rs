//! Route rules: which requests a rule covers, matched against the normalized path.

use crate::config::ConfigError;
use serde::Deserialize;

/// How a rule's path is written in configuration.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawPathMatch {
    /// The whole path (a trailing slash is ignored on both sides).
    Exact(String),
    /// Paths starting with this, at a segment boundary when it ends without `/`.
    Prefix(String),
    /// Segments: `*` is exactly one segment, a final `**` any number (also none).
    Pattern(String),
}

/// A checked path matcher. Matching ignores ASCII case: a rule that protects
/// `/accounts/close` also covers `/ACCOUNTS/Close`, whatever the backend does with case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Pattern(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Rest,
}

impl PathMatch {
    /// Checks a configured path: absolute, already in normal form, no `;`.
    pub fn try_new(path: &str, raw: RawPathMatch) -> Result<Self, ConfigError> {
        let text = match &raw {
            RawPathMatch::Exact(text)
            | RawPathMatch::Prefix(text)
            | RawPathMatch::Pattern(text) => text,
        };
        let normal = crate::path::normalize(text, false).map_err(|error| {
            ConfigError::invalid(path, format!("{text:?} is not a usable path ({error})"))
        })?;
        if normal.query.is_some() || normal.path != *text {
            return Err(ConfigError::invalid(
                path,
                format!("{text:?} is not in normal form (write {:?})", normal.path),
            ));
        }
        let lower = text.to_ascii_lowercase();
        Ok(match raw {
            RawPathMatch::Exact(_) => Self::Exact(trim_slash(&lower).to_string()),
            RawPathMatch::Prefix(_) => Self::Prefix(lower),
            RawPathMatch::Pattern(_) => {
                let parts: Vec<&str> = lower.trim_start_matches('/').split('/').collect();
                let mut segments = Vec::new();
                for (index, part) in parts.iter().enumerate() {
                    segments.push(match *part {
                        "*" => Segment::One,
                        "**" if index + 1 == parts.len() => Segment::Rest,
                        "**" => {
                            return Err(ConfigError::invalid(path, "`**` may only end a pattern"))
                        }
                        literal if literal.contains('*') => {
                            return Err(ConfigError::invalid(path, "`*` must be a whole segment"))
                        }
                        literal => Segment::Literal(literal.to_string()),
                    });
                }
                Self::Pattern(segments)
            }
        })
    }

    /// Whether the normalized `path` is covered.
    pub fn matches(&self, path: &str) -> bool {
        let lower = path.to_ascii_lowercase();
        match self {
            Self::Exact(exact) => trim_slash(&lower) == exact,
            Self::Prefix(prefix) if prefix.ends_with('/') => {
                lower.starts_with(prefix.as_str()) || lower == prefix[..prefix.len() - 1]
            }
            Self::Prefix(prefix) => {
                lower == *prefix
                    || lower
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            Self::Pattern(segments) => {
                let parts: Vec<&str> = trim_slash(&lower)
                    .trim_start_matches('/')
                    .split('/')
                    .collect();
                matches_segments(segments, &parts)
            }
        }
    }
}

fn matches_segments(segments: &[Segment], parts: &[&str]) -> bool {
    match (segments.first(), parts.first()) {
        (None, None) => true,
        (Some(Segment::Rest), _) => true,
        (Some(Segment::One), Some(part)) if !part.is_empty() => {
            matches_segments(&segments[1..], &parts[1..])
        }
        (Some(Segment::Literal(literal)), Some(part)) if literal == part => {
            matches_segments(&segments[1..], &parts[1..])
        }
        _ => false,
    }
}

fn trim_slash(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

/// Request methods a rule covers. Empty covers every method; `GET` also covers
/// `HEAD`. Compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Methods(Vec<String>);

/// Methods a rule may name.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl Methods {
    pub fn try_new(path: &str, methods: &[String]) -> Result<Self, ConfigError> {
        let mut checked = Vec::new();
        for (index, method) in methods.iter().enumerate() {
            let upper = method.to_ascii_uppercase();
            if !KNOWN_METHODS.contains(&upper.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}[{index}]"),
                    format!("unknown method {method:?}"),
                ));
            }
            checked.push(upper);
        }
        Ok(Self(checked))
    }

    pub fn matches(&self, method: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let upper = method.to_ascii_uppercase();
        self.0
            .iter()
            .any(|listed| *listed == upper || (listed == "GET" && upper == "HEAD"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(raw: RawPathMatch) -> PathMatch {
        PathMatch::try_new("rules[0].path", raw).unwrap()
    }

    #[test]
    fn exact_prefix_and_pattern_match_as_documented() {
        let exact = matcher(RawPathMatch::Exact("/accounts/close".into()));
        let prefix = matcher(RawPathMatch::Prefix("/accounts/".into()));
        let bare_prefix = matcher(RawPathMatch::Prefix("/accounts".into()));
        let pattern = matcher(RawPathMatch::Pattern("/accounts/*/close".into()));
        let rest = matcher(RawPathMatch::Pattern("/api/v1/orders/**".into()));
        let cases: [(&PathMatch, &str, bool); 18] = [
            (&exact, "/accounts/close", true),
            (&exact, "/accounts/close/", true),
            (&exact, "/ACCOUNTS/Close", true),
            (&exact, "/accounts/closed", false),
            (&prefix, "/accounts/close", true),
            (&prefix, "/accounts", true),
            (&prefix, "/accountsx", false),
            (&bare_prefix, "/accounts/x", true),
            (&bare_prefix, "/accounts", true),
            (&bare_prefix, "/accountsx", false),
            (&pattern, "/accounts/42/close", true),
            (&pattern, "/accounts/42/close/", true),
            (&pattern, "/accounts/close", false),
            (&pattern, "/accounts/4/2/close", false),
            (&rest, "/api/v1/orders", true),
            (&rest, "/api/v1/orders/7/items", true),
            (&rest, "/api/v1/order", false),
            (&rest, "/api/v2/orders", false),
        ];
        for (matcher, path, expected) in cases {
            assert_eq!(matcher.matches(path), expected, "{matcher:?} {path}");
        }
    }

    #[test]
    fn configured_paths_must_be_normal() {
        for bad in [
            "accounts", "/a//b", "/a/./b", "/a/%63", "/a;b", "/a?x=1", "/a/b*",
        ] {
            let raw = if bad.contains('*') {
                RawPathMatch::Pattern(bad.into())
            } else {
                RawPathMatch::Exact(bad.into())
            };
            assert!(PathMatch::try_new("p", raw).is_err(), "{bad}");
        }
        assert!(PathMatch::try_new("p", RawPathMatch::Pattern("/a/**/b".into())).is_err());
    }

    #[test]
    fn methods_match_without_case_and_get_covers_head() {
        let methods = Methods::try_new("m", &["get".into(), "POST".into()]).unwrap();
        for (method, expected) in [
            ("GET", true),
            ("head", true),
            ("post", true),
            ("DELETE", false),
            ("OPTIONS", false),
        ] {
            assert_eq!(methods.matches(method), expected, "{method}");
        }
        assert!(Methods::default().matches("PATCH"));
        assert!(Methods::try_new("m", &["GIT".into()]).is_err());
    }
}
