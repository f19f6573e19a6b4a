//! Errors of the configuration phase, shared by every filter.

use serde::de::DeserializeOwned;

/// A configuration that cannot be used. The message names the path of the bad field
/// (`collector.batch_max_records: must be between 1 and 10000`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON of the expected shape (unknown field, wrong type).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// The shape is right but a value is not allowed.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    /// A value at `path` that is not allowed.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The path of the bad field, `.` for the document itself.
    pub fn path(&self) -> &str {
        match self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}

/// Parses `bytes` as JSON into `T`, refusing unknown fields (the types say
/// `deny_unknown_fields`) and naming the path of the first bad field. An empty
/// configuration is read as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = strip_position(&error.inner().to_string());
        ConfigError::Parse { path, message }
    })?;
    deserializer.end().map_err(|error| ConfigError::Parse {
        path: ".".into(),
        message: strip_position(&error.to_string()),
    })?;
    Ok(value)
}

/// serde_json ends its messages with ` at line L column C`; the path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}

/// Checks that `name` is a lowercase HTTP header name (RFC 9110 token characters).
pub fn check_header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&byte)
        });
    if valid {
        Ok(name.to_string())
    } else {
        Err(ConfigError::invalid(
            path,
            format!("{name:?} is not a lowercase header name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)] // only its parsing is under test
        #[serde(default)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)] // only its parsing is under test
        count: u32,
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let error = parse_json::<Outer>(br#"{"inner":[{"count":1},{"cout":2}]}"#).unwrap_err();
        assert_eq!(error.path(), "inner[1].cout");
        assert!(
            error.to_string().contains("unknown field `cout`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_is_refused_with_its_path() {
        let error = parse_json::<Outer>(br#"{"inner":[{"count":"x"}]}"#).unwrap_err();
        assert_eq!(error.path(), "inner[0].count");
    }

    #[test]
    fn empty_configuration_reads_as_empty_object() {
        assert!(parse_json::<Outer>(b"  ").is_ok());
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_json::<Outer>(b"{} x").is_err());
    }

    #[test]
    fn header_names_must_be_lowercase_tokens() {
        assert!(check_header_name("h", "x-api-key").is_ok());
        for bad in ["", "X-Api-Key", "x api", "x:y", "é"] {
            assert!(check_header_name("h", bad).is_err(), "{bad:?}");
        }
    }
}
