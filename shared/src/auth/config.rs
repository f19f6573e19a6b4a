//! The auth filter's configuration: raw JSON shape, then the checked form.

use super::rules::{Methods, PathMatch, RawPathMatch};
use crate::config::{check_header_name, parse_json, ConfigError};
use crate::jwt::{parse_jwks, Algorithm, ClaimPolicy, Jwk, KeyMaterial, KeySet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;

/// Whether a denial is answered or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Shadow,
}

/// What a rule asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone; a valid credential still sets the identity, an invalid one is refused.
    Public,
    /// Any verified caller.
    Authenticated,
    /// A verified caller with the rule's roles.
    Roles,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawAuthConfig {
    #[serde(default = "enforce")]
    mode: Mode,
    #[serde(default)]
    unmatched: Unmatched,
    #[serde(default)]
    credentials: RawCredentials,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    api_keys: Option<RawApiKeys>,
    rules: Vec<RawRule>,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    #[serde(default = "default_cache_entries")]
    token_cache_entries: usize,
    #[serde(default = "default_key_wait")]
    key_wait_ms: u64,
    #[serde(default = "default_max_waiting")]
    max_waiting_requests: usize,
    #[serde(default)]
    publish_claims: Vec<String>,
}

fn enforce() -> Mode {
    Mode::Enforce
}

fn default_cache_entries() -> usize {
    1024
}

fn default_key_wait() -> u64 {
    2000
}

fn default_max_waiting() -> usize {
    1024
}

/// What happens to a request no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawCredentials {
    bearer: bool,
    header: Option<String>,
    query_parameter: Option<String>,
    cookie: Option<String>,
}

impl Default for RawCredentials {
    fn default() -> Self {
        Self {
            bearer: true,
            header: None,
            query_parameter: None,
            cookie: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    algorithms: Vec<String>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    jwks_uri: Option<RawRemote>,
    #[serde(default)]
    discovery: Option<RawRemote>,
    #[serde(default)]
    shared_secret: Option<String>,
    #[serde(default = "default_skew")]
    clock_skew_seconds: u64,
    #[serde(default)]
    max_lifetime_seconds: Option<u64>,
    #[serde(default = "yes")]
    require_exp: bool,
    #[serde(default)]
    required_claims: Vec<String>,
    #[serde(default = "default_consumer_claim")]
    consumer_claim: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default)]
    tier_claim: Option<String>,
    #[serde(default)]
    default_tier: Option<String>,
    #[serde(default = "default_refresh")]
    refresh_interval_seconds: u64,
    #[serde(default = "default_cooldown")]
    refetch_cooldown_seconds: u64,
}

fn default_skew() -> u64 {
    60
}

fn yes() -> bool {
    true
}

fn default_consumer_claim() -> String {
    "sub".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_refresh() -> u64 {
    300
}

fn default_cooldown() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRemote {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "default_fetch_timeout")]
    timeout_ms: u64,
}

fn default_fetch_timeout() -> u64 {
    5000
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    query_parameter: Option<String>,
    keys: Vec<RawApiKey>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    sha256: String,
    consumer: String,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    methods: Vec<String>,
    path: RawPathMatch,
    access: Access,
    #[serde(default)]
    roles_any: Vec<String>,
    #[serde(default)]
    roles_all: Vec<String>,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct RawIdentityHeaders {
    user_id: String,
    roles: String,
    consumer: String,
    tier: String,
    remove: Vec<String>,
    signature: Option<RawSignature>,
    strip_credential: bool,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: "x-user-id".into(),
            roles: "x-user-role".into(),
            consumer: "x-consumer-id".into(),
            tier: "x-consumer-tier".into(),
            remove: Vec::new(),
            signature: None,
            strip_credential: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawSignature {
    #[serde(default = "default_signature_header")]
    header: String,
    secret: String,
}

fn default_signature_header() -> String {
    "x-gatehouse-identity".into()
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// In the configuration (inline JWKS or shared secret): ready at once.
    Inline,
    /// A JWKS document at `path` on `cluster`.
    JwksUri(Remote),
    /// The issuer's `/.well-known/openid-configuration` on `cluster`, then its `jwks_uri`.
    Discovery(Remote),
}

/// An HTTP location on an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

/// A checked token provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub algorithms: Vec<Algorithm>,
    pub claims: ClaimPolicy,
    pub source: KeySource,
    /// Keys known at configure time (inline JWKS or shared secret).
    pub inline_keys: Option<KeySet>,
    pub consumer_claim: String,
    pub roles_claim: String,
    pub tier_claim: Option<String>,
    pub default_tier: Option<String>,
    pub refresh_interval_seconds: u64,
    pub refetch_cooldown_seconds: u64,
}

/// One API key, kept only as the SHA-256 of the key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub sha256: [u8; 32],
    pub consumer: String,
    pub tier: Option<String>,
    pub roles: Vec<String>,
}

/// Where API keys are read and which are valid.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    pub header: Option<String>,
    pub query_parameter: Option<String>,
    pub keys: Vec<ApiKey>,
}

/// Which credentials a rule accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    Provider(String),
    ApiKey,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub methods: Methods,
    pub path: PathMatch,
    pub access: Access,
    pub roles_any: Vec<String>,
    pub roles_all: Vec<String>,
    /// Empty accepts every configured credential.
    pub credentials: Vec<CredentialKind>,
    pub mode: Mode,
}

/// Where a token may be carried.
#[derive(Debug, Clone)]
pub struct CredentialSources {
    pub bearer: bool,
    pub header: Option<String>,
    pub query_parameter: Option<String>,
    pub cookie: Option<String>,
}

/// The headers the backend can trust.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user_id: String,
    pub roles: String,
    pub consumer: String,
    pub tier: String,
    /// Every header removed from every request: the four above, the signature header,
    /// and the configured extras.
    pub removed: Vec<String>,
    pub signature: Option<(String, Vec<u8>)>,
    pub strip_credential: bool,
}

/// The checked auth configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: Mode,
    pub unmatched: Unmatched,
    pub credentials: CredentialSources,
    pub providers: Vec<Provider>,
    pub api_keys: Option<ApiKeys>,
    pub rules: Vec<Rule>,
    pub identity: IdentityHeaders,
    pub token_cache_entries: usize,
    pub key_wait_ms: u64,
    /// The most requests one VM holds while keys are fetched; beyond it a request
    /// is answered at once (503 without keys, 401 `key_unknown` with them).
    pub max_waiting_requests: usize,
    /// Claims of a verified token (dotted paths) published with the decision, for
    /// the rate limiter's claim keys.
    pub publish_claims: Vec<String>,
}

/// At most 16 claim paths, each names joined by dots.
fn check_claim_paths(paths: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if paths.len() > 16 {
        return Err(ConfigError::invalid(
            "publish_claims",
            "name at most 16 claims",
        ));
    }
    for (index, path) in paths.iter().enumerate() {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(ConfigError::invalid(
                format!("publish_claims[{index}]"),
                format!("{path:?} is not a claim path (names joined by dots)"),
            ));
        }
    }
    Ok(paths)
}

impl AuthSettings {
    /// The JSON Schema of the configuration (what `gatehouse schema auth` prints).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RawAuthConfig)).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawAuthConfig = parse_json(bytes)?;
        let credentials = CredentialSources {
            bearer: raw.credentials.bearer,
            header: optional_header("credentials.header", raw.credentials.header)?,
            query_parameter: raw.credentials.query_parameter,
            cookie: raw.credentials.cookie,
        };

        let mut providers = Vec::new();
        for (index, provider) in raw.providers.into_iter().enumerate() {
            providers.push(provider_settings(&format!("providers[{index}]"), provider)?);
        }
        let mut names = BTreeSet::new();
        for (index, provider) in providers.iter().enumerate() {
            if !names.insert(provider.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("providers[{index}].name"),
                    "names must differ",
                ));
            }
        }

        let api_keys = raw.api_keys.map(api_key_settings).transpose()?;
        if raw.rules.is_empty() {
            return Err(ConfigError::invalid("rules", "at least one rule is needed"));
        }
        let mut rules = Vec::new();
        for (index, rule) in raw.rules.into_iter().enumerate() {
            rules.push(rule_settings(
                &format!("rules[{index}]"),
                rule,
                &providers,
                api_keys.is_some(),
                raw.mode,
            )?);
        }

        let identity = identity_settings(raw.identity_headers)?;
        if !(1..=100_000).contains(&raw.token_cache_entries) {
            return Err(ConfigError::invalid(
                "token_cache_entries",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=30_000).contains(&raw.key_wait_ms) {
            return Err(ConfigError::invalid(
                "key_wait_ms",
                "must be between 1 and 30000",
            ));
        }
        if !(1..=100_000).contains(&raw.max_waiting_requests) {
            return Err(ConfigError::invalid(
                "max_waiting_requests",
                "must be between 1 and 100000",
            ));
        }
        Ok(Self {
            mode: raw.mode,
            unmatched: raw.unmatched,
            credentials,
            providers,
            api_keys,
            rules,
            identity,
            token_cache_entries: raw.token_cache_entries,
            key_wait_ms: raw.key_wait_ms,
            max_waiting_requests: raw.max_waiting_requests,
            publish_claims: check_claim_paths(raw.publish_claims)?,
        })
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|provider| provider.name == name)
    }

    /// One line for the start-up log: no secrets.
    pub fn summary(&self) -> String {
        let providers: Vec<&str> = self
            .providers
            .iter()
            .map(|provider| provider.name.as_str())
            .collect();
        format!(
            "mode={:?} providers={providers:?} api_keys={} rules={} unmatched={:?}",
            self.mode,
            self.api_keys.as_ref().map_or(0, |keys| keys.keys.len()),
            self.rules.len(),
            self.unmatched
        )
    }
}

fn optional_header(path: &str, name: Option<String>) -> Result<Option<String>, ConfigError> {
    name.map(|name| check_header_name(path, &name)).transpose()
}

fn provider_settings(path: &str, raw: RawProvider) -> Result<Provider, ConfigError> {
    if raw.name.is_empty()
        || !raw
            .name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
    {
        return Err(ConfigError::invalid(
            format!("{path}.name"),
            "use letters, digits, - _ .",
        ));
    }
    if raw.issuer.is_empty() {
        return Err(ConfigError::invalid(
            format!("{path}.issuer"),
            "is required",
        ));
    }
    let mut algorithms = Vec::new();
    for (index, name) in raw.algorithms.iter().enumerate() {
        let algorithm = Algorithm::from_name(name).ok_or_else(|| {
            ConfigError::invalid(
                format!("{path}.algorithms[{index}]"),
                format!("unsupported algorithm {name:?}"),
            )
        })?;
        algorithms.push(algorithm);
    }
    if algorithms.is_empty() {
        return Err(ConfigError::invalid(
            format!("{path}.algorithms"),
            "name at least one algorithm",
        ));
    }
    let symmetric = algorithms
        .iter()
        .filter(|algorithm| algorithm.is_symmetric())
        .count();
    if symmetric != 0 && symmetric != algorithms.len() {
        return Err(ConfigError::invalid(
            format!("{path}.algorithms"),
            "HS* algorithms cannot be mixed with public-key algorithms",
        ));
    }

    let sources = [
        raw.jwks.is_some(),
        raw.jwks_uri.is_some(),
        raw.discovery.is_some(),
        raw.shared_secret.is_some(),
    ];
    if sources.iter().filter(|present| **present).count() != 1 {
        return Err(ConfigError::invalid(
            path,
            "give exactly one of jwks, jwks_uri, discovery, shared_secret",
        ));
    }
    if symmetric != 0 && raw.shared_secret.is_none() {
        return Err(ConfigError::invalid(
            format!("{path}.shared_secret"),
            "HS* algorithms need a shared secret",
        ));
    }
    if symmetric == 0 && raw.shared_secret.is_some() {
        return Err(ConfigError::invalid(
            format!("{path}.shared_secret"),
            "only for HS* algorithms",
        ));
    }

    let (source, inline_keys) = if let Some(jwks) = raw.jwks {
        let (keys, skipped) = parse_jwks(jwks.to_string().as_bytes())
            .map_err(|error| ConfigError::invalid(format!("{path}.jwks"), error))?;
        if let Some(first) = skipped.first() {
            return Err(ConfigError::invalid(
                format!("{path}.jwks.keys[{}]", first.index),
                first.reason.clone(),
            ));
        }
        (KeySource::Inline, Some(keys))
    } else if let Some(secret) = raw.shared_secret {
        let bytes = URL_SAFE_NO_PAD
            .decode(secret.trim_end_matches('='))
            .map_err(|_| {
                ConfigError::invalid(format!("{path}.shared_secret"), "must be base64url")
            })?;
        if bytes.len() < 32 {
            return Err(ConfigError::invalid(
                format!("{path}.shared_secret"),
                "must be at least 32 bytes",
            ));
        }
        let key = Jwk {
            kid: None,
            alg: None,
            material: KeyMaterial::Hmac(bytes),
        };
        (KeySource::Inline, Some(KeySet { keys: vec![key] }))
    } else if let Some(remote) = raw.jwks_uri {
        (
            KeySource::JwksUri(remote_settings(&format!("{path}.jwks_uri"), remote, None)?),
            None,
        )
    } else if let Some(remote) = raw.discovery {
        let default = "/.well-known/openid-configuration";
        (
            KeySource::Discovery(remote_settings(
                &format!("{path}.discovery"),
                remote,
                Some(default),
            )?),
            None,
        )
    } else {
        return Err(ConfigError::invalid(path, "no key source"));
    };

    if raw.clock_skew_seconds > 600 {
        return Err(ConfigError::invalid(
            format!("{path}.clock_skew_seconds"),
            "must be at most 600",
        ));
    }
    if !(10..=86_400).contains(&raw.refresh_interval_seconds) {
        return Err(ConfigError::invalid(
            format!("{path}.refresh_interval_seconds"),
            "must be between 10 and 86400",
        ));
    }
    if !(1..=3600).contains(&raw.refetch_cooldown_seconds) {
        return Err(ConfigError::invalid(
            format!("{path}.refetch_cooldown_seconds"),
            "must be between 1 and 3600",
        ));
    }
    Ok(Provider {
        name: raw.name,
        algorithms,
        claims: ClaimPolicy {
            issuer: raw.issuer,
            audiences: raw.audiences,
            require_exp: raw.require_exp,
            clock_skew_seconds: raw.clock_skew_seconds,
            max_lifetime_seconds: raw.max_lifetime_seconds,
            required_claims: raw.required_claims,
        },
        source,
        inline_keys,
        consumer_claim: raw.consumer_claim,
        roles_claim: raw.roles_claim,
        tier_claim: raw.tier_claim,
        default_tier: raw.default_tier,
        refresh_interval_seconds: raw.refresh_interval_seconds,
        refetch_cooldown_seconds: raw.refetch_cooldown_seconds,
    })
}

fn remote_settings(
    path: &str,
    raw: RawRemote,
    default_path: Option<&str>,
) -> Result<Remote, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::invalid(
            format!("{path}.cluster"),
            "is required",
        ));
    }
    let location = match (raw.path, default_path) {
        (Some(location), _) => location,
        (None, Some(default)) => default.to_string(),
        (None, None) => return Err(ConfigError::invalid(format!("{path}.path"), "is required")),
    };
    if !location.starts_with('/') {
        return Err(ConfigError::invalid(
            format!("{path}.path"),
            "must start with /",
        ));
    }
    if !(10..=60_000).contains(&raw.timeout_ms) {
        return Err(ConfigError::invalid(
            format!("{path}.timeout_ms"),
            "must be between 10 and 60000",
        ));
    }
    Ok(Remote {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: location,
        timeout_ms: raw.timeout_ms,
    })
}

fn api_key_settings(raw: RawApiKeys) -> Result<ApiKeys, ConfigError> {
    let header = optional_header("api_keys.header", raw.header)?;
    if header.is_none() && raw.query_parameter.is_none() {
        return Err(ConfigError::invalid(
            "api_keys",
            "give a header or a query_parameter",
        ));
    }
    let mut keys = Vec::new();
    for (index, key) in raw.keys.into_iter().enumerate() {
        let path = format!("api_keys.keys[{index}]");
        let bytes = hex_32(&key.sha256).ok_or_else(|| {
            ConfigError::invalid(format!("{path}.sha256"), "must be 64 hex digits")
        })?;
        if key.consumer.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.consumer"),
                "is required",
            ));
        }
        if keys
            .iter()
            .any(|existing: &ApiKey| existing.sha256 == bytes)
        {
            return Err(ConfigError::invalid(
                format!("{path}.sha256"),
                "the same key is listed twice",
            ));
        }
        keys.push(ApiKey {
            sha256: bytes,
            consumer: key.consumer,
            tier: key.tier,
            roles: key.roles,
        });
    }
    Ok(ApiKeys {
        header,
        query_parameter: raw.query_parameter,
        keys,
    })
}

fn hex_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

fn rule_settings(
    path: &str,
    raw: RawRule,
    providers: &[Provider],
    api_keys: bool,
    mode: Mode,
) -> Result<Rule, ConfigError> {
    if raw.name.is_empty() {
        return Err(ConfigError::invalid(format!("{path}.name"), "is required"));
    }
    let methods = Methods::try_new(&format!("{path}.methods"), &raw.methods)?;
    let matcher = PathMatch::try_new(&format!("{path}.path"), raw.path)?;
    let has_roles = !raw.roles_any.is_empty() || !raw.roles_all.is_empty();
    match (raw.access, has_roles) {
        (Access::Roles, false) => {
            return Err(ConfigError::invalid(
                format!("{path}.roles_any"),
                "access `roles` needs roles_any or roles_all",
            ))
        }
        (Access::Public | Access::Authenticated, true) => {
            return Err(ConfigError::invalid(
                format!("{path}.access"),
                "roles are only for access `roles`",
            ))
        }
        _ => {}
    }
    let mut credentials = Vec::new();
    for (index, name) in raw.credentials.iter().enumerate() {
        let kind = if name == "api_key" {
            if !api_keys {
                return Err(ConfigError::invalid(
                    format!("{path}.credentials[{index}]"),
                    "no api_keys are configured",
                ));
            }
            CredentialKind::ApiKey
        } else if providers.iter().any(|provider| provider.name == *name) {
            CredentialKind::Provider(name.clone())
        } else {
            return Err(ConfigError::invalid(
                format!("{path}.credentials[{index}]"),
                format!("no provider {name:?}"),
            ));
        };
        credentials.push(kind);
    }
    Ok(Rule {
        name: raw.name,
        methods,
        path: matcher,
        access: raw.access,
        roles_any: raw.roles_any,
        roles_all: raw.roles_all,
        credentials,
        mode: raw.mode.unwrap_or(mode),
    })
}

fn identity_settings(raw: RawIdentityHeaders) -> Result<IdentityHeaders, ConfigError> {
    let user_id = check_header_name("identity_headers.user_id", &raw.user_id)?;
    let roles = check_header_name("identity_headers.roles", &raw.roles)?;
    let consumer = check_header_name("identity_headers.consumer", &raw.consumer)?;
    let tier = check_header_name("identity_headers.tier", &raw.tier)?;
    let mut removed = vec![
        user_id.clone(),
        roles.clone(),
        consumer.clone(),
        tier.clone(),
    ];
    let signature = match raw.signature {
        None => {
            // Removed even when the gateway does not sign: a backend must never see
            // a signature the gateway did not make.
            removed.push(default_signature_header());
            None
        }
        Some(signature) => {
            let header = check_header_name("identity_headers.signature.header", &signature.header)?;
            if signature.secret.len() < 32 {
                return Err(ConfigError::invalid(
                    "identity_headers.signature.secret",
                    "must be at least 32 bytes",
                ));
            }
            removed.push(header.clone());
            Some((header, signature.secret.into_bytes()))
        }
    };
    for (index, name) in raw.remove.iter().enumerate() {
        let name = check_header_name(&format!("identity_headers.remove[{index}]"), name)?;
        if name.starts_with(':') || name == "host" || name == "authorization" {
            return Err(ConfigError::invalid(
                format!("identity_headers.remove[{index}]"),
                "cannot be removed",
            ));
        }
        if !removed.contains(&name) {
            removed.push(name);
        }
    }
    Ok(IdentityHeaders {
        user_id,
        roles,
        consumer,
        tier,
        removed,
        signature,
        strip_credential: raw.strip_credential,
    })
}
