//! Keeping providers' key sets: when to fetch, what to accept, and where a
//! discovery document points.

use super::config::{KeySource, Provider, Remote};

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

/// How long before a request's wait runs out a refetch must be able to start for
/// the wait to be worth it: a tick (100 ms) and a quick answer.
pub const REFETCH_LEAD_MS: u64 = 300;

/// What a VM knows of a provider's fetches, for [`refetch_may_help`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchTimes {
    /// The last attempt by any worker, ms since the epoch.
    pub attempt_ms: Option<u64>,
    /// When the last fetch by any worker ended (keys stored, or failed).
    pub settled_ms: Option<u64>,
    /// A fetch is in flight from this VM.
    pub in_flight_here: bool,
}

/// Whether a token naming a key the loaded set lacks should wait for a refetch
/// (otherwise it is refused at once as `key_unknown`). A refetch can help only a
/// fetched set, and only while one is on its way (from this VM, or from another
/// worker that has not settled it within the time a fetch can take) or when the
/// cooldown since the last attempt ends at least [`REFETCH_LEAD_MS`] before
/// `wait_ms`, the longest a request waits for keys, runs out. Without this,
/// every such token would hold its request for the whole wait and gain nothing:
/// an easy way to tie up streams.
pub fn refetch_may_help(provider: &Provider, times: FetchTimes, now_ms: u64, wait_ms: u64) -> bool {
    let (remote, stages) = match &provider.source {
        KeySource::Inline => return false,
        KeySource::JwksUri(remote) => (remote, 1),
        KeySource::Discovery(remote) => (remote, 2),
    };
    if times.in_flight_here {
        return true;
    }
    let Some(attempt) = times.attempt_ms else {
        return true;
    };
    let since = now_ms.saturating_sub(attempt);
    // The refetch starts on the first tick after the cooldown and must leave time
    // to answer before the wait runs out.
    let cooldown = provider.refetch_cooldown_seconds.saturating_mul(1000);
    if since.saturating_add(wait_ms) >= cooldown.saturating_add(REFETCH_LEAD_MS) {
        return true;
    }
    let unsettled = times.settled_ms.is_none_or(|settled| settled < attempt);
    unsettled && since < remote.timeout_ms.saturating_mul(stages)
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

    fn provider(source: KeySource) -> Provider {
        let mut provider = crate::auth::AuthSettings::from_json(
            br#"{"providers":[{"name":"idp","issuer":"i","audiences":["a"],"algorithms":["RS256"],
                "jwks_uri":{"cluster":"idp","path":"/jwks"}}],
                "rules":[{"name":"all","path":{"prefix":"/"},"access":"public"}]}"#,
        )
        .unwrap()
        .providers
        .remove(0);
        provider.source = source;
        provider.refetch_cooldown_seconds = 30;
        provider
    }

    #[test]
    fn a_refetch_helps_only_a_fetched_set_in_flight_or_near_its_cooldown() {
        let start = 1_000_000;
        let wait = 2000;
        let attempted = FetchTimes {
            attempt_ms: Some(start),
            ..FetchTimes::default()
        };
        let settled = FetchTimes {
            settled_ms: Some(start + 40),
            ..attempted
        };
        let here = FetchTimes {
            in_flight_here: true,
            ..settled
        };
        let helps = |provider: &Provider, times: FetchTimes, at: u64| {
            refetch_may_help(provider, times, at, wait)
        };
        let inline = provider(KeySource::Inline);
        assert!(!helps(&inline, here, start));
        let jwks = provider(KeySource::JwksUri(remote()));
        assert!(helps(&jwks, FetchTimes::default(), start), "never fetched");
        assert!(helps(&jwks, attempted, start + 999), "in flight elsewhere");
        assert!(!helps(&jwks, attempted, start + 1000), "timed out");
        assert!(!helps(&jwks, settled, start + 50), "settled, in cooldown");
        assert!(helps(&jwks, here, start + 50), "in flight here");
        assert!(!helps(&jwks, settled, start + 28_299));
        assert!(
            helps(&jwks, settled, start + 28_300),
            "cooldown ends within the wait"
        );
        assert!(helps(&jwks, settled, start + 30_000), "cooldown over");
        let discovery = provider(KeySource::Discovery(remote()));
        assert!(helps(&discovery, attempted, start + 1999), "two stages");
        assert!(!helps(&discovery, attempted, start + 2000));
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
