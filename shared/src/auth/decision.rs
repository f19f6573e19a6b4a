//! The auth decision: path, rule, credential, identity, access, mode.

use super::cache::TokenCache;
use super::config::{Access, AuthSettings, CredentialKind, Mode, Provider, Rule, Unmatched};
use super::credentials::{extract, Credential, HeaderPair};
use crate::jwt::{verify_and_check, Claims, KeySet, TokenError};
use crate::path::{normalize, NormalizedPath};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::rc::Rc;
use subtle::ConstantTimeEq;

/// Who the caller is, once a credential is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub consumer: String,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    pub via: CredentialKind,
    /// The token's claims named by `publish_claims` (string values), verified.
    pub claims: std::collections::BTreeMap<String, String>,
}

/// A refusal: what the client is told, and the private reason for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 400, 401, 403 or 503.
    pub status: u16,
    /// The RFC 6750 error code (`invalid_request`, `invalid_token`,
    /// `insufficient_scope`) or `unavailable`.
    pub error: &'static str,
    /// A fixed public message: never a token, key or secret.
    pub message: &'static str,
    /// The machine-readable reason for the audit record.
    pub reason: String,
}

impl Denial {
    pub fn invalid_request(reason: &str) -> Self {
        Self {
            status: 401,
            error: "invalid_request",
            message: "the request's credentials are malformed",
            reason: reason.into(),
        }
    }

    pub fn invalid_token(reason: &str) -> Self {
        Self {
            status: 401,
            error: "invalid_token",
            message: "the access token is not valid",
            reason: reason.into(),
        }
    }

    pub fn missing_credential() -> Self {
        Self {
            status: 401,
            error: "invalid_request",
            message: "authentication is required",
            reason: "credential_missing".into(),
        }
    }

    pub fn insufficient_scope(reason: &str) -> Self {
        Self {
            status: 403,
            error: "insufficient_scope",
            message: "the caller is not allowed to do this",
            reason: reason.into(),
        }
    }

    pub fn bad_path(reason: &str) -> Self {
        Self {
            status: 400,
            error: "invalid_request",
            message: "the request path is not accepted",
            reason: reason.into(),
        }
    }

    pub fn keys_unavailable(provider: &str) -> Self {
        Self {
            status: 503,
            error: "unavailable",
            message: "authentication is temporarily unavailable",
            reason: format!("keys_unavailable:{provider}"),
        }
    }

    /// The `WWW-Authenticate` value for a 401 or 403 (RFC 6750 section 3).
    pub fn challenge(&self) -> Option<String> {
        match self.status {
            401 if self.reason == "credential_missing" => Some("Bearer".into()),
            401 | 403 => Some(format!(
                "Bearer error=\"{}\", error_description=\"{}\"",
                self.error, self.message
            )),
            _ => None,
        }
    }

    /// The JSON answer body.
    pub fn body(&self, correlation_id: &str) -> String {
        serde_json::json!({
            "error": self.error,
            "message": self.message,
            "correlation_id": correlation_id,
        })
        .to_string()
    }
}

/// A provider's current key set, as the filter has it.
#[derive(Debug, Clone)]
pub struct ProviderKeys {
    pub keys: Rc<KeySet>,
    /// Changes whenever the set changes; cached tokens from another generation are
    /// verified again.
    pub generation: u64,
}

/// Where the decision finds each provider's keys.
pub trait KeyLookup {
    /// `None` while no key set has been loaded for the provider.
    fn keys(&self, provider: &str) -> Option<ProviderKeys>;
    /// Whether fetching the provider's keys again could bring a key the loaded set
    /// lacks (see [`super::keys::refetch_may_help`]); when not, such a token is
    /// refused at once instead of waiting.
    fn may_refetch(&self, provider: &str) -> bool;
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through, with the identity to assert (if any).
    Allow {
        rule: String,
        identity: Option<Identity>,
        /// The path the rule was matched against, for Envoy to route on.
        path: Option<NormalizedPath>,
    },
    /// Answer with the denial.
    Deny {
        rule: Option<String>,
        denial: Denial,
    },
    /// Would be denied, but the rule is in shadow mode: let it through, record it.
    /// The identity is set only when the credential itself was valid.
    ShadowDeny {
        rule: Option<String>,
        denial: Denial,
        identity: Option<Identity>,
        /// The normalized path, when the path itself was acceptable.
        path: Option<NormalizedPath>,
    },
    /// The provider's keys are not loaded yet: wait (bounded), then decide again.
    WaitForKeys { provider: String },
    /// The token names a key the provider's set lacks: refetch once, then decide
    /// again with [`KeyWait::Keys`].
    RefetchKeys { provider: String },
}

/// What a request may still wait for, when its provider's keys fall short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWait {
    /// For a first key set, and for a refetch when the token names a key the set
    /// lacks (if [`KeyLookup::may_refetch`] says one can help).
    Refetch,
    /// For a first key set only: a refetch already happened for it.
    Keys,
    /// Nothing more: the wait ran out (or is full), so a missing key set is a 503
    /// denial, carried out or only recorded as the rule's mode says.
    Never,
}

/// What the request shows the decision.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `:path` as received.
    pub path: &'a str,
    pub headers: &'a [HeaderPair],
}

/// Decides a request. `now` is seconds since the epoch.
pub fn decide(
    settings: &AuthSettings,
    request: RequestView<'_>,
    keys: &dyn KeyLookup,
    cache: &mut TokenCache,
    now: i64,
    wait: KeyWait,
) -> Verdict {
    let normalized = match normalize(request.path, false) {
        Ok(normalized) => normalized,
        Err(error) => {
            let denial = Err(Denial::bad_path(error.reason()));
            return finish(settings.mode, None, denial, None, None);
        }
    };
    let rule = settings
        .rules
        .iter()
        .find(|rule| rule.methods.matches(request.method) && rule.path.matches(&normalized.path));

    let credential = match extract(settings, request.headers, normalized.query.as_deref()) {
        Ok(credential) => credential,
        Err(denial) => {
            return finish(
                mode_of(settings, rule),
                rule,
                Err(denial),
                None,
                Some(normalized),
            )
        }
    };
    let identity = match authenticate(settings, rule, &credential, keys, cache, now, wait) {
        Authenticated::Identity(identity) => identity,
        Authenticated::Denied(denial) => {
            return finish(
                mode_of(settings, rule),
                rule,
                Err(denial),
                None,
                Some(normalized),
            )
        }
        Authenticated::Wait(verdict) => return verdict,
    };

    let Some(rule) = rule else {
        let outcome = match settings.unmatched {
            Unmatched::Allow => Ok(()),
            Unmatched::Deny => Err(Denial::insufficient_scope("no_rule_matches")),
        };
        return finish(settings.mode, None, outcome, identity, Some(normalized));
    };
    let outcome = authorize(rule, identity.as_ref());
    finish(rule.mode, Some(rule), outcome, identity, Some(normalized))
}

fn mode_of(settings: &AuthSettings, rule: Option<&Rule>) -> Mode {
    rule.map_or(settings.mode, |rule| rule.mode)
}

fn finish(
    mode: Mode,
    rule: Option<&Rule>,
    outcome: Result<(), Denial>,
    identity: Option<Identity>,
    path: Option<NormalizedPath>,
) -> Verdict {
    let rule_name = rule.map(|rule| rule.name.clone());
    match (outcome, mode) {
        (Ok(()), _) => Verdict::Allow {
            rule: rule_name.unwrap_or_else(|| "unmatched".into()),
            identity,
            path,
        },
        (Err(denial), Mode::Enforce) => Verdict::Deny {
            rule: rule_name,
            denial,
        },
        (Err(denial), Mode::Shadow) => Verdict::ShadowDeny {
            rule: rule_name,
            denial,
            identity,
            path,
        },
    }
}

enum Authenticated {
    Identity(Option<Identity>),
    Denied(Denial),
    Wait(Verdict),
}

fn authenticate(
    settings: &AuthSettings,
    rule: Option<&Rule>,
    credential: &Credential,
    keys: &dyn KeyLookup,
    cache: &mut TokenCache,
    now: i64,
    wait: KeyWait,
) -> Authenticated {
    let accepted = |kind: &CredentialKind| {
        rule.is_none_or(|rule| rule.credentials.is_empty() || rule.credentials.contains(kind))
    };
    match credential {
        Credential::None => Authenticated::Identity(None),
        Credential::ApiKey(key) => match api_key_identity(settings, key) {
            Some(identity) if accepted(&identity.via) => Authenticated::Identity(Some(identity)),
            Some(_) => Authenticated::Denied(Denial::invalid_token("credential_not_accepted_here")),
            None => Authenticated::Denied(Denial::invalid_token("api_key_unknown")),
        },
        Credential::Token(token) => {
            // A token verified before costs a lookup: no decoding, no signature.
            let generation = |identity: &Identity| match &identity.via {
                CredentialKind::Provider(name) => keys.keys(name).map(|current| current.generation),
                CredentialKind::ApiKey => None,
            };
            if let Some(identity) = cache.get(token, now, generation) {
                if !accepted(&identity.via) {
                    return Authenticated::Denied(Denial::invalid_token(
                        "credential_not_accepted_here",
                    ));
                }
                return Authenticated::Identity(Some(identity.clone()));
            }
            let Some(provider) = provider_for(settings, token) else {
                return Authenticated::Denied(Denial::invalid_token("issuer_unknown"));
            };
            if !accepted(&CredentialKind::Provider(provider.name.clone())) {
                return Authenticated::Denied(Denial::invalid_token(
                    "credential_not_accepted_here",
                ));
            }
            let Some(current) = keys.keys(&provider.name) else {
                if wait == KeyWait::Never {
                    return Authenticated::Denied(Denial::keys_unavailable(&provider.name));
                }
                return Authenticated::Wait(Verdict::WaitForKeys {
                    provider: provider.name.clone(),
                });
            };
            match verify_and_check(
                token,
                &current.keys,
                &provider.algorithms,
                &provider.claims,
                now,
            ) {
                Ok(claims) => {
                    let Some(identity) = token_identity(settings, provider, &claims) else {
                        return Authenticated::Denied(Denial::invalid_token(
                            "consumer_claim_missing",
                        ));
                    };
                    let skew = i64::try_from(provider.claims.clock_skew_seconds).unwrap_or(0);
                    let valid_until =
                        claims_exp(&claims).map_or(i64::MAX, |exp| exp.saturating_add(skew));
                    cache.insert(token, identity.clone(), valid_until, current.generation);
                    Authenticated::Identity(Some(identity))
                }
                Err(TokenError::UnknownKey)
                    if wait == KeyWait::Refetch && keys.may_refetch(&provider.name) =>
                {
                    Authenticated::Wait(Verdict::RefetchKeys {
                        provider: provider.name.clone(),
                    })
                }
                Err(error) => Authenticated::Denied(Denial::invalid_token(&error.reason())),
            }
        }
    }
}

fn claims_exp(claims: &Claims) -> Option<i64> {
    claims.0.get("exp").and_then(serde_json::Value::as_i64)
}

/// The provider whose issuer the (unverified) payload names.
fn provider_for<'s>(settings: &'s AuthSettings, token: &str) -> Option<&'s Provider> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    let issuer: Issuer = serde_json::from_slice(&bytes).ok()?;
    settings
        .providers
        .iter()
        .find(|provider| provider.claims.issuer == issuer.iss)
}

fn token_identity(
    settings: &AuthSettings,
    provider: &Provider,
    claims: &Claims,
) -> Option<Identity> {
    let consumer = claims.string_at(&provider.consumer_claim)?;
    if consumer.is_empty() {
        return None;
    }
    let tier = provider
        .tier_claim
        .as_ref()
        .and_then(|path| claims.string_at(path))
        .or_else(|| provider.default_tier.clone());
    Some(Identity {
        consumer,
        roles: claims.roles_at(&provider.roles_claim),
        tier,
        via: CredentialKind::Provider(provider.name.clone()),
        claims: settings
            .publish_claims
            .iter()
            .filter_map(|path| Some((path.clone(), claims.string_at(path)?)))
            .collect(),
    })
}

/// Compares the key's SHA-256 with every configured one in constant time.
fn api_key_identity(settings: &AuthSettings, key: &[u8]) -> Option<Identity> {
    let api_keys = settings.api_keys.as_ref()?;
    let digest: [u8; 32] = Sha256::digest(key).into();
    let mut found = None;
    for candidate in &api_keys.keys {
        if bool::from(candidate.sha256.ct_eq(&digest)) {
            found = Some(candidate);
        }
    }
    found.map(|key| Identity {
        consumer: key.consumer.clone(),
        roles: key.roles.clone(),
        tier: key.tier.clone(),
        via: CredentialKind::ApiKey,
        claims: std::collections::BTreeMap::new(),
    })
}

fn authorize(rule: &Rule, identity: Option<&Identity>) -> Result<(), Denial> {
    match (rule.access, identity) {
        (Access::Public, _) => Ok(()),
        (Access::Authenticated | Access::Roles, None) => Err(Denial::missing_credential()),
        (Access::Authenticated, Some(_)) => Ok(()),
        (Access::Roles, Some(identity)) => {
            let has = |role: &String| identity.roles.contains(role);
            let any = rule.roles_any.is_empty() || rule.roles_any.iter().any(has);
            let all = rule.roles_all.iter().all(has);
            if any && all {
                Ok(())
            } else {
                Err(Denial::insufficient_scope("role_missing"))
            }
        }
    }
}
