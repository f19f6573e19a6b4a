//! The headers a backend can trust: what to remove from every request, what to set
//! on an allowed one, and the optional signature that proves the gateway set them.

use super::config::IdentityHeaders;
use super::decision::Identity;
use crate::attributes::AuthOutcome;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What to do to the request's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPlan {
    /// Headers to remove (only those the request carries).
    pub remove: Vec<String>,
    /// Headers to set, in order.
    pub set: Vec<(String, String)>,
}

/// Plans the identity headers: every configured identity header the client sent is
/// removed, whatever the outcome; with an identity, the trusted ones are set (and
/// signed when a secret is configured). `present` holds the names of the request's
/// headers; `credential_headers` the headers that carried the credential, removed
/// when `strip_credential` is on.
pub fn plan(
    config: &IdentityHeaders,
    present: &[&str],
    identity: Option<&Identity>,
    credential_headers: &[&str],
    signed: Option<SignedRequest<'_>>,
) -> HeaderPlan {
    let mut plan = HeaderPlan::default();
    for name in &config.removed {
        if present.contains(&name.as_str()) {
            plan.remove.push(name.clone());
        }
    }
    let Some(identity) = identity else {
        return plan;
    };
    if config.strip_credential {
        for name in credential_headers {
            if present.contains(name) && !plan.remove.iter().any(|removed| removed == name) {
                plan.remove.push((*name).to_string());
            }
        }
    }
    let roles = identity.roles.join(",");
    let tier = identity.tier.clone().unwrap_or_default();
    plan.set
        .push((config.user_id.clone(), identity.consumer.clone()));
    plan.set.push((config.roles.clone(), roles.clone()));
    plan.set
        .push((config.consumer.clone(), identity.consumer.clone()));
    if !tier.is_empty() {
        plan.set.push((config.tier.clone(), tier.clone()));
    }
    if let (Some((header, secret)), Some(request)) = (&config.signature, signed) {
        let value = signature(secret, &identity.consumer, &roles, &tier, request);
        plan.set.push((header.clone(), value));
    }
    plan
}

/// What the identity signature covers besides the identity.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    /// Seconds since the epoch.
    pub timestamp: i64,
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256>` over
/// `v1\n<user>\n<roles>\n<tier>\n<METHOD>\n<path>\n<timestamp>`. A backend
/// recomputes it with the shared secret and refuses a mismatch or an old timestamp.
pub fn signature(
    secret: &[u8],
    user: &str,
    roles: &str,
    tier: &str,
    request: SignedRequest<'_>,
) -> String {
    let message = format!(
        "v1\n{user}\n{roles}\n{tier}\n{}\n{}\n{}",
        request.method.to_ascii_uppercase(),
        request.path,
        request.timestamp
    );
    let digest = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        }
        // HMAC takes keys of any length; an empty value fails every check.
        Err(_) => String::new(),
    };
    format!("t={},v1={digest}", request.timestamp)
}

/// The query string without the parameters named in `names` (the credential, when
/// `strip_credential` is on); `None` when nothing is left.
pub fn strip_query(query: &str, names: &[&str]) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !pair.is_empty() && !names.contains(&key)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The request's cookies, from every `cookie` header, without the one named
/// `name`, joined into one header value; `None` when nothing is left.
pub fn strip_cookie<'a>(cookies: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<String> {
    let mut kept: Vec<String> = Vec::new();
    for header in cookies {
        for pair in String::from_utf8_lossy(header).split(';') {
            let pair = pair.trim();
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            if !pair.is_empty() && key != name {
                kept.push(pair.to_string());
            }
        }
    }
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The attribute the auth filter publishes for later filters and the audit record.
pub fn outcome(result: &str, reason: Option<&str>, identity: Option<&Identity>) -> AuthOutcome {
    AuthOutcome {
        result: result.to_string(),
        reason: reason.map(str::to_string),
        consumer: identity.map(|identity| identity.consumer.clone()),
        tier: identity.and_then(|identity| identity.tier.clone()),
        roles: identity
            .map(|identity| identity.roles.clone())
            .unwrap_or_default(),
        claims: identity
            .map(|identity| identity.claims.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_leaves_the_query_and_the_cookies_alone_otherwise() {
        assert_eq!(
            strip_query("page=2&access_token=abc&sort=asc", &["access_token"]),
            Some("page=2&sort=asc".into())
        );
        assert_eq!(
            strip_query("access_token=abc&api_key=k", &["access_token", "api_key"]),
            None
        );
        assert_eq!(strip_query("access_token", &["access_token"]), None);
        assert_eq!(
            strip_query("access_tokens=1&&x", &["access_token"]),
            Some("access_tokens=1&x".into())
        );
        let headers: Vec<&[u8]> = vec![b"theme=dark; session=tok", b"lang=en"];
        assert_eq!(
            strip_cookie(headers.into_iter(), "session"),
            Some("theme=dark; lang=en".into())
        );
        let only: Vec<&[u8]> = vec![b"session=tok"];
        assert_eq!(strip_cookie(only.into_iter(), "session"), None);
    }
    use crate::auth::config::CredentialKind;

    fn config(signature: bool) -> IdentityHeaders {
        IdentityHeaders {
            user_id: "x-user-id".into(),
            roles: "x-user-role".into(),
            consumer: "x-consumer-id".into(),
            tier: "x-consumer-tier".into(),
            removed: vec![
                "x-user-id".into(),
                "x-user-role".into(),
                "x-consumer-id".into(),
                "x-consumer-tier".into(),
                "x-gatehouse-identity".into(),
            ],
            signature: signature.then(|| {
                (
                    "x-gatehouse-identity".into(),
                    b"0123456789abcdef0123456789abcdef".to_vec(),
                )
            }),
            strip_credential: true,
        }
    }

    fn alice() -> Identity {
        Identity {
            consumer: "alice".into(),
            roles: vec!["user".into(), "billing".into()],
            tier: Some("pro".into()),
            via: CredentialKind::ApiKey,
            claims: Default::default(),
        }
    }

    #[test]
    fn spoofed_identity_headers_are_removed_whatever_the_outcome() {
        let present = ["x-user-id", "x-user-role", "accept"];
        let plan = plan(&config(false), &present, None, &["authorization"], None);
        assert_eq!(plan.remove, ["x-user-id", "x-user-role"]);
        assert!(plan.set.is_empty());
    }

    #[test]
    fn trusted_headers_are_set_and_the_credential_stripped() {
        let present = ["x-user-id", "authorization"];
        let plan = plan(
            &config(false),
            &present,
            Some(&alice()),
            &["authorization"],
            None,
        );
        assert_eq!(plan.remove, ["x-user-id", "authorization"]);
        let set: Vec<(&str, &str)> = plan
            .set
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            set,
            [
                ("x-user-id", "alice"),
                ("x-user-role", "user,billing"),
                ("x-consumer-id", "alice"),
                ("x-consumer-tier", "pro")
            ]
        );
    }

    #[test]
    fn signature_covers_identity_method_path_and_time() {
        let request = SignedRequest {
            method: "post",
            path: "/accounts/close",
            timestamp: 1_796_314_409,
        };
        let plan = plan(&config(true), &[], Some(&alice()), &[], Some(request));
        let (_, value) = plan.set.last().unwrap();
        // Recomputed independently: the message format is the contract with backends.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"v1\nalice\nuser,billing\npro\nPOST\n/accounts/close\n1796314409");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(value, &format!("t=1796314409,v1={hex}"));
        let other = signature(
            b"0123456789abcdef0123456789abcdef",
            "alice",
            "user,billing",
            "pro",
            SignedRequest {
                path: "/accounts/open",
                ..request
            },
        );
        assert_ne!(value, &other);
    }
}
