//! Keeping providers' key sets: when to fetch, what to accept, and where a
//! discovery document points.

use super::config::{Provider, Remote};

/// How long a provider without any key set waits between fetch attempts, in ms.
pub const BOOTSTRAP_RETRY_MS: u64 = 1000;

/// Whether a VM should try to fetch `provider`'s keys now. `last_attempt_ms` is the
/// last attempt by any worker (from shared data); `have_keys` whether any set is
/// loaded; `refetch_wanted` whether a token named an unknown key.
pub fn fetch_due(
    provider: &Provider,
    last_attempt_ms: Option<u64>,
    now_ms: u64,
    have_keys: bool,
    refetch_wanted: bool,
) -> bool {
    let Some(last) = last_attempt_ms else {
        return true;
    };
    let since = now_ms.saturating_sub(last);
    if !have_keys {
        return since >= BOOTSTRAP_RETRY_MS;
    }
    if refetch_wanted && since >= provider.refetch_cooldown_seconds.saturating_mul(1000) {
        return true;
    }
    since >= provider.refresh_interval_seconds.saturating_mul(1000)
}

/// Where a discovery document says the key set is: fetched from the same cluster,
/// with the URL's host as `:authority` and its path (and query).
pub fn jwks_location(discovery: &Remote, document: &[u8], issuer: &str) -> Result<Remote, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        issuer: String,
        jwks_uri: String,
    }
    let document: Document = serde_json::from_slice(document)
        .map_err(|error| format!("not a discovery document: {error}"))?;
    if document.issuer != issuer {
        return Err("discovery document names another issuer".into());
    }
    let rest = document
        .jwks_uri
        .strip_prefix("https://")
        .or_else(|| document.jwks_uri.strip_prefix("http://"))
        .ok_or("jwks_uri is not an http(s) URL")?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("jwks_uri has no host".into());
    }
    Ok(Remote {
        cluster: discovery.cluster.clone(),
        authority: authority.to_string(),
        path: path.to_string(),
        timeout_ms: discovery.timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote {
        Remote {
            cluster: "idp".into(),
            authority: "idp".into(),
            path: "/.well-known/openid-configuration".into(),
            timeout_ms: 1000,
        }
    }

    #[test]
    fn discovery_points_at_the_key_set_on_the_same_cluster() {
        let document =
            br#"{"issuer":"http://127.0.0.1:18300","jwks_uri":"http://127.0.0.1:18300/jwks?v=2"}"#;
        let location = jwks_location(&remote(), document, "http://127.0.0.1:18300").unwrap();
        assert_eq!(
            (
                location.cluster.as_str(),
                location.authority.as_str(),
                location.path.as_str()
            ),
            ("idp", "127.0.0.1:18300", "/jwks?v=2")
        );
        assert!(jwks_location(&remote(), document, "http://other").is_err());
        assert!(
            jwks_location(&remote(), br#"{"issuer":"i","jwks_uri":"ftp://x/k"}"#, "i").is_err()
        );
        assert!(jwks_location(&remote(), b"garbage", "i").is_err());
    }
}
