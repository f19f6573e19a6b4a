//! Finding the credential a request carries: at most one, from the places the
//! configuration opens.

use super::config::AuthSettings;
use super::decision::Denial;

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    Token(String),
    ApiKey(Vec<u8>),
}

/// A header as the host gives it.
pub type HeaderPair = (String, Vec<u8>);

fn values<'a>(headers: &'a [HeaderPair], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(key, _)| key == name)
        .map(|(_, value)| value.as_slice())
}

/// The query parameter `name` of the query string, each occurrence (not decoded:
/// tokens and keys are URL-safe).
fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> Vec<&'a str> {
    query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .collect()
}

fn cookie_values(headers: &[HeaderPair], name: &str) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for header in values(headers, "cookie") {
        let text = String::from_utf8_lossy(header);
        for pair in text.split(';') {
            if let Some((key, value)) = pair.trim().split_once('=') {
                if key == name {
                    found.push(value.as_bytes().to_vec());
                }
            }
        }
    }
    found
}

/// Reads the credential. More than one (two `Authorization` headers, a bearer token
/// and a query token, a token and an API key, ...) is refused: which one counts would
/// otherwise depend on the reader. An `Authorization` header with another scheme,
/// or `Bearer` without exactly one space and a token, is refused too.
pub fn extract(
    settings: &AuthSettings,
    headers: &[HeaderPair],
    query: Option<&str>,
) -> Result<Credential, Denial> {
    let mut found: Vec<Credential> = Vec::new();
    let malformed = || Denial::invalid_request("credential_malformed");

    let authorization: Vec<&[u8]> = values(headers, "authorization").collect();
    if settings.credentials.bearer {
        for value in &authorization {
            let token = value.strip_prefix(b"Bearer ").ok_or_else(malformed)?;
            // Envoy folds repeated `Authorization` lines into one value joined by
            // commas; a token never holds one.
            if token.contains(&b',') {
                return Err(Denial::invalid_request("credential_multiple"));
            }
            if token.is_empty() || token.iter().any(|byte| !byte.is_ascii_graphic()) {
                return Err(malformed());
            }
            found.push(Credential::Token(
                String::from_utf8_lossy(token).into_owned(),
            ));
        }
    }
    if let Some(name) = &settings.credentials.header {
        for value in values(headers, name) {
            found.push(Credential::Token(
                String::from_utf8_lossy(value).trim().to_string(),
            ));
        }
    }
    if let Some(name) = &settings.credentials.query_parameter {
        for value in query_values(query, name) {
            found.push(Credential::Token(value.to_string()));
        }
    }
    if let Some(name) = &settings.credentials.cookie {
        for value in cookie_values(headers, name) {
            found.push(Credential::Token(
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
    }
    if let Some(api_keys) = &settings.api_keys {
        if let Some(name) = &api_keys.header {
            for value in values(headers, name) {
                found.push(Credential::ApiKey(value.to_vec()));
            }
        }
        if let Some(name) = &api_keys.query_parameter {
            for value in query_values(query, name) {
                found.push(Credential::ApiKey(value.as_bytes().to_vec()));
            }
        }
    }

    match found.len() {
        0 => Ok(Credential::None),
        1 => Ok(found.remove(0)),
        _ => Err(Denial::invalid_request("credential_multiple")),
    }
}
