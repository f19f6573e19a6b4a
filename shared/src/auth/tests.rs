//! The auth decision as a table: each case a request, the expected verdict.

use super::cache::TokenCache;
use super::config::{AuthSettings, CredentialKind};
use super::decision::{decide, KeyLookup, KeyWait, ProviderKeys, RequestView, Verdict};
use crate::jwt::{parse_jwks, KeySet};
use serde_json::{json, Value};
use std::rc::Rc;

const VECTORS: &str = include_str!("../../tests/data/jwt_vectors.json");

struct Fixture {
    settings: AuthSettings,
    data: Value,
    now: i64,
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn fixture(extra_rules: Value) -> Fixture {
    let data: Value = serde_json::from_str(VECTORS).unwrap();
    let mut rules = vec![
        json!({"name": "public", "path": {"prefix": "/public/"}, "access": "public"}),
        json!({"name": "close-account", "methods": ["POST"], "path": {"exact": "/accounts/close"},
               "access": "roles", "roles_any": ["admin"]}),
        json!({"name": "read-accounts", "methods": ["GET"], "path": {"prefix": "/accounts/"}, "access": "authenticated"}),
        json!({"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"}),
        json!({"name": "analytics", "path": {"prefix": "/analytics/"}, "access": "authenticated", "credentials": ["api_key"]}),
        json!({"name": "shadowed", "path": {"prefix": "/beta/"}, "access": "roles", "roles_all": ["beta"], "mode": "shadow"}),
    ];
    if let Value::Array(extra) = extra_rules {
        rules.splice(0..0, extra);
    }
    let config = json!({
        "providers": [{
            "name": "idp",
            "issuer": data["issuer"],
            "audiences": [data["audience"]],
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "jwks_uri": {"cluster": "idp", "path": "/jwks"},
            "tier_claim": "plan",
        }],
        "api_keys": {"header": "x-api-key", "keys": [
            {"sha256": sha256_hex("demo-pro-key"), "consumer": "acme", "tier": "pro", "roles": ["reporting"]},
            {"sha256": sha256_hex("demo-free-key"), "consumer": "hobbyist", "tier": "free"},
        ]},
        "rules": rules,
        "publish_claims": ["plan", "iss", "no.such.claim"],
    });
    let settings = AuthSettings::from_json(config.to_string().as_bytes()).unwrap();
    let now = data["now"].as_i64().unwrap();
    Fixture {
        settings,
        data,
        now,
    }
}

struct Keys(Option<ProviderKeys>);

impl KeyLookup for Keys {
    fn keys(&self, _provider: &str) -> Option<ProviderKeys> {
        self.0.clone()
    }
    fn may_refetch(&self, _provider: &str) -> bool {
        true
    }
}

/// Keys that a refetch cannot change now (inline, or within the cooldown).
struct Settled(Keys);

impl KeyLookup for Settled {
    fn keys(&self, provider: &str) -> Option<ProviderKeys> {
        self.0.keys(provider)
    }
    fn may_refetch(&self, _provider: &str) -> bool {
        false
    }
}

fn loaded(data: &Value, member: &str, generation: u64) -> Keys {
    let (keys, _) = parse_jwks(data[member].to_string().as_bytes()).unwrap();
    Keys(Some(ProviderKeys {
        keys: Rc::new(keys),
        generation,
    }))
}

impl Fixture {
    fn token(&self, name: &str) -> String {
        self.data["tokens"][name].as_str().unwrap().to_string()
    }

    fn decide_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        keys: &dyn KeyLookup,
        refetch: bool,
    ) -> Verdict {
        let wait = if refetch {
            KeyWait::Refetch
        } else {
            KeyWait::Keys
        };
        self.decide_waiting(method, path, headers, keys, wait)
    }

    fn decide_waiting(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        keys: &dyn KeyLookup,
        wait: KeyWait,
    ) -> Verdict {
        let headers: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        let request = RequestView {
            method,
            path,
            headers: &headers,
        };
        decide(
            &self.settings,
            request,
            keys,
            &mut TokenCache::new(16),
            self.now,
            wait,
        )
    }

    fn decide(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Verdict {
        self.decide_with(method, path, headers, &loaded(&self.data, "jwks", 1), true)
    }
}

/// A compact summary of a verdict: `allow:<consumer>`, `deny:<status>:<reason>`, ...
fn summary(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allow { identity, .. } => format!(
            "allow:{}",
            identity
                .as_ref()
                .map_or("-", |identity| identity.consumer.as_str())
        ),
        Verdict::Deny { denial, .. } => format!("deny:{}:{}", denial.status, denial.reason),
        Verdict::ShadowDeny {
            denial, identity, ..
        } => format!(
            "shadow:{}:{}:{}",
            denial.status,
            denial.reason,
            identity
                .as_ref()
                .map_or("-", |identity| identity.consumer.as_str())
        ),
        Verdict::WaitForKeys { provider } => format!("wait:{provider}"),
        Verdict::RefetchKeys { provider } => format!("refetch:{provider}"),
    }
}

#[test]
fn requests_get_the_documented_verdicts() {
    let fixture = fixture(Value::Null);
    let user = format!("Bearer {}", fixture.token("user"));
    let admin = format!("Bearer {}", fixture.token("admin"));
    let folded = format!("{user},{admin}");
    let expired = format!("Bearer {}", fixture.token("expired"));
    let other_issuer = format!("Bearer {}", fixture.token("other_issuer"));
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/public/echo", vec![], "allow:-"),
        (
            "GET",
            "/public/echo",
            vec![("authorization", &user)],
            "allow:alice",
        ),
        (
            "GET",
            "/public/echo",
            vec![("authorization", &expired)],
            "deny:401:token_expired",
        ),
        ("GET", "/accounts/1", vec![], "deny:401:credential_missing"),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", &user)],
            "allow:alice",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", &other_issuer)],
            "deny:401:issuer_unknown",
        ),
        (
            "POST",
            "/accounts/close",
            vec![("authorization", &user)],
            "deny:403:role_missing",
        ),
        (
            "POST",
            "/accounts/close",
            vec![("authorization", &admin)],
            "allow:root",
        ),
        (
            "POST",
            "/accounts/close",
            vec![],
            "deny:401:credential_missing",
        ),
        (
            "GET",
            "/analytics/report",
            vec![("x-api-key", "demo-pro-key")],
            "allow:acme",
        ),
        (
            "GET",
            "/analytics/report",
            vec![("x-api-key", "demo-pro-kez")],
            "deny:401:api_key_unknown",
        ),
        (
            "GET",
            "/analytics/report",
            vec![("authorization", &user)],
            "deny:401:credential_not_accepted_here",
        ),
        (
            "GET",
            "/nowhere",
            vec![("authorization", &admin)],
            "deny:403:no_rule_matches",
        ),
        (
            "GET",
            "/beta/x",
            vec![("authorization", &user)],
            "shadow:403:role_missing:alice",
        ),
        (
            "GET",
            "/beta/x",
            vec![("authorization", &expired)],
            "shadow:401:token_expired:-",
        ),
        // Credentials that are not one clean credential.
        (
            "GET",
            "/accounts/1",
            vec![("authorization", &user), ("authorization", &admin)],
            "deny:401:credential_multiple",
        ),
        // The same two headers as Envoy hands them over: folded into one, joined by
        // a comma (no token has one).
        (
            "GET",
            "/accounts/1",
            vec![("authorization", &folded)],
            "deny:401:credential_multiple",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", &user), ("x-api-key", "demo-pro-key")],
            "deny:401:credential_multiple",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", "Bearer")],
            "deny:401:credential_malformed",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", "Bearer ")],
            "deny:401:credential_malformed",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            "deny:401:credential_malformed",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", "bearer x.y.z")],
            "deny:401:credential_malformed",
        ),
        (
            "GET",
            "/accounts/1",
            vec![("authorization", "Bearer x.y.z")],
            "deny:401:issuer_unknown",
        ),
    ];
    for (method, path, headers, expected) in cases {
        let verdict = fixture.decide(method, path, &headers);
        assert_eq!(summary(&verdict), expected, "{method} {path} {headers:?}");
    }
    let two_spaces = format!("Bearer  {}", fixture.token("user"));
    let verdict = fixture.decide("GET", "/accounts/1", &[("authorization", &two_spaces)]);
    assert_eq!(summary(&verdict), "deny:401:credential_malformed");
}

#[test]
fn every_spelling_of_the_protected_path_meets_the_rule() {
    let fixture = fixture(Value::Null);
    let user = format!("Bearer {}", fixture.token("user"));
    let cases = [
        ("POST", "/accounts/close", "deny:403:role_missing"),
        ("POST", "//accounts/close", "deny:403:role_missing"),
        ("POST", "/accounts/./close", "deny:403:role_missing"),
        ("POST", "/accounts/x/../close", "deny:403:role_missing"),
        ("POST", "/accounts/%63lose", "deny:403:role_missing"),
        ("POST", "/accounts/close/", "deny:403:role_missing"),
        ("POST", "/ACCOUNTS/Close", "deny:403:role_missing"),
        ("post", "/accounts/close", "deny:403:role_missing"),
        ("POST", "/accounts%2Fclose", "deny:400:path_encoded_slash"),
        ("POST", "/accounts/close;x", "deny:400:path_semicolon"),
        ("POST", "/accounts/close%00", "deny:400:path_nul"),
        ("POST", "/accounts\\close", "deny:400:path_backslash"),
        ("HEAD", "/accounts/1", "allow:alice"),
        ("OPTIONS", "/accounts/1", "allow:alice"),
    ];
    for (method, path, expected) in cases {
        let verdict = fixture.decide(method, path, &[("authorization", &user)]);
        assert_eq!(summary(&verdict), expected, "{method} {path}");
    }
}

#[test]
fn identity_carries_consumer_roles_tier_and_credential() {
    let fixture = fixture(Value::Null);
    let user = format!("Bearer {}", fixture.token("user"));
    let Verdict::Allow {
        identity: Some(identity),
        rule,
        path,
    } = fixture.decide("GET", "//accounts/./1", &[("authorization", &user)])
    else {
        panic!("allowed")
    };
    assert_eq!(
        path.map(|path| path.path).as_deref(),
        Some("/accounts/1"),
        "the path Envoy will route on"
    );
    assert_eq!(rule, "read-accounts");
    assert_eq!(identity.roles, ["user"]);
    assert_eq!(identity.tier.as_deref(), Some("pro"));
    assert_eq!(identity.via, CredentialKind::Provider("idp".into()));
    assert_eq!(
        identity.claims.get("plan").map(String::as_str),
        Some("pro"),
        "published claims come from the verified token"
    );
    assert_eq!(
        identity.claims.get("iss"),
        fixture.data["issuer"].as_str().map(str::to_string).as_ref()
    );
    assert!(!identity.claims.contains_key("no.such.claim"));

    let Verdict::Allow {
        identity: Some(identity),
        ..
    } = fixture.decide("GET", "/analytics/x", &[("x-api-key", "demo-free-key")])
    else {
        panic!("allowed")
    };
    assert_eq!(
        (identity.consumer.as_str(), identity.tier.as_deref()),
        ("hobbyist", Some("free"))
    );
    assert!(identity.claims.is_empty(), "an API key has no claims");
}

#[test]
fn keys_not_loaded_wait_and_unknown_kids_refetch_once() {
    let fixture = fixture(Value::Null);
    let rotated = format!("Bearer {}", fixture.token("rotated_key"));
    let user = format!("Bearer {}", fixture.token("user"));

    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &user)],
        &Keys(None),
        true,
    );
    assert_eq!(summary(&verdict), "wait:idp");
    let verdict = fixture.decide("GET", "/accounts/1", &[("authorization", &rotated)]);
    assert_eq!(summary(&verdict), "refetch:idp");
    let keys = loaded(&fixture.data, "jwks", 1);
    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &rotated)],
        &keys,
        false,
    );
    assert_eq!(summary(&verdict), "deny:401:key_unknown");
    let keys = loaded(&fixture.data, "rotated_jwks", 2);
    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &rotated)],
        &keys,
        false,
    );
    assert_eq!(summary(&verdict), "allow:carol");
    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &user)],
        &keys,
        true,
    );
    assert_eq!(
        summary(&verdict),
        "refetch:idp",
        "a removed key no longer verifies"
    );
}

#[test]
fn unknown_kids_are_refused_at_once_when_no_refetch_can_help() {
    let fixture = fixture(Value::Null);
    let rotated = format!("Bearer {}", fixture.token("rotated_key"));
    let keys = Settled(loaded(&fixture.data, "jwks", 1));
    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &rotated)],
        &keys,
        true,
    );
    assert_eq!(summary(&verdict), "deny:401:key_unknown");
    // Without any keys the request still waits: only a fetch can settle it.
    let verdict = fixture.decide_with(
        "GET",
        "/accounts/1",
        &[("authorization", &rotated)],
        &Settled(Keys(None)),
        true,
    );
    assert_eq!(summary(&verdict), "wait:idp");
}

#[test]
fn when_the_wait_for_keys_is_over_the_503_follows_the_rules_mode() {
    let fixture = fixture(Value::Null);
    let user = format!("Bearer {}", fixture.token("user"));
    let verdict = fixture.decide_waiting(
        "GET",
        "/accounts/1",
        &[("authorization", &user)],
        &Keys(None),
        KeyWait::Never,
    );
    assert_eq!(summary(&verdict), "deny:503:keys_unavailable:idp");
    // A shadow rule lets the request through, without an identity.
    let verdict = fixture.decide_waiting(
        "GET",
        "/beta/1",
        &[("authorization", &user)],
        &Keys(None),
        KeyWait::Never,
    );
    assert_eq!(summary(&verdict), "shadow:503:keys_unavailable:idp:-");
}

#[test]
fn cached_tokens_skip_verification_until_the_keys_change() {
    let fixture = fixture(Value::Null);
    let user = format!("Bearer {}", fixture.token("user"));
    let headers: Vec<(String, Vec<u8>)> = vec![("authorization".into(), user.into_bytes())];
    let request = RequestView {
        method: "GET",
        path: "/accounts/1",
        headers: &headers,
    };
    let mut cache = TokenCache::new(4);
    let real = loaded(&fixture.data, "jwks", 7);
    assert!(matches!(
        decide(
            &fixture.settings,
            request,
            &real,
            &mut cache,
            fixture.now,
            KeyWait::Refetch
        ),
        Verdict::Allow { .. }
    ));
    assert_eq!(cache.len(), 1);

    // Same generation, no usable key: only the cache can say yes.
    let empty = Keys(Some(ProviderKeys {
        keys: Rc::new(KeySet::default()),
        generation: 7,
    }));
    assert!(matches!(
        decide(
            &fixture.settings,
            request,
            &empty,
            &mut cache,
            fixture.now,
            KeyWait::Keys
        ),
        Verdict::Allow { .. }
    ));
    let changed = Keys(Some(ProviderKeys {
        keys: Rc::new(KeySet::default()),
        generation: 8,
    }));
    assert!(matches!(
        decide(
            &fixture.settings,
            request,
            &changed,
            &mut cache,
            fixture.now,
            KeyWait::Keys
        ),
        Verdict::Deny { .. }
    ));
}

#[test]
fn denials_speak_rfc_6750_and_leak_nothing() {
    let fixture = fixture(Value::Null);
    let expired = fixture.token("expired");
    let Verdict::Deny { denial, .. } = fixture.decide(
        "GET",
        "/accounts/1",
        &[("authorization", &format!("Bearer {expired}"))],
    ) else {
        panic!("denied")
    };
    assert_eq!(
        denial.challenge().unwrap(),
        "Bearer error=\"invalid_token\", error_description=\"the access token is not valid\""
    );
    let body: Value = serde_json::from_str(&denial.body("cid-1")).unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_token", "message": "the access token is not valid", "correlation_id": "cid-1"})
    );
    assert!(!denial.body("c").contains(&expired[..20]));

    let Verdict::Deny { denial, .. } = fixture.decide("GET", "/accounts/1", &[]) else {
        panic!("denied")
    };
    assert_eq!(denial.challenge().as_deref(), Some("Bearer"));
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let provider = json!({"name": "idp", "issuer": "https://i", "algorithms": ["RS256"], "jwks_uri": {"cluster": "c", "path": "/k"}});
    let rule = json!({"name": "r", "path": {"prefix": "/"}, "access": "public"});
    let with = |patch: Value| -> String {
        let mut config = json!({"providers": [provider.clone()], "rules": [rule.clone()]});
        if let (Value::Object(base), Value::Object(patch)) = (&mut config, patch) {
            base.extend(patch);
        }
        config.to_string()
    };
    let cases = [
        (json!({"rules": []}), "rules"),
        (json!({"rulez": []}), "rulez"),
        (json!({"mode": "audit"}), "mode"),
        (json!({"publish_claims": ["org..id"]}), "publish_claims[0]"),
        (
            json!({"providers": [{"name": "idp", "issuer": "https://i", "algorithms": ["none"], "jwks_uri": {"cluster": "c", "path": "/k"}}]}),
            "providers[0].algorithms[0]",
        ),
        (
            json!({"providers": [{"name": "idp", "issuer": "https://i", "algorithms": ["RS256", "HS256"], "shared_secret": "x"}]}),
            "providers[0].algorithms",
        ),
        (
            json!({"providers": [{"name": "idp", "issuer": "https://i", "algorithms": ["HS256"], "jwks_uri": {"cluster": "c", "path": "/k"}}]}),
            "providers[0].shared_secret",
        ),
        (
            json!({"providers": [{"name": "idp", "issuer": "https://i", "algorithms": ["HS256"], "shared_secret": "c2hvcnQ"}]}),
            "providers[0].shared_secret",
        ),
        (
            json!({"providers": [{"name": "idp", "issuer": "https://i", "algorithms": ["RS256"]}]}),
            "providers[0]",
        ),
        (
            json!({"providers": [provider.clone(), provider.clone()]}),
            "providers[1].name",
        ),
        (
            json!({"rules": [{"name": "r", "path": {"exact": "/a//b"}, "access": "public"}]}),
            "rules[0].path",
        ),
        (
            json!({"rules": [{"name": "r", "methods": ["GIT"], "path": {"exact": "/a"}, "access": "public"}]}),
            "rules[0].methods[0]",
        ),
        (
            json!({"rules": [{"name": "r", "path": {"exact": "/a"}, "access": "roles"}]}),
            "rules[0].roles_any",
        ),
        (
            json!({"rules": [{"name": "r", "path": {"exact": "/a"}, "access": "public", "roles_any": ["x"]}]}),
            "rules[0].access",
        ),
        (
            json!({"rules": [{"name": "r", "path": {"exact": "/a"}, "access": "public", "credentials": ["nobody"]}]}),
            "rules[0].credentials[0]",
        ),
        (
            json!({"rules": [{"name": "r", "path": {"exact": "/a"}, "access": "public", "credentials": ["api_key"]}]}),
            "rules[0].credentials[0]",
        ),
        (
            json!({"api_keys": {"header": "x-api-key", "keys": [{"sha256": "abc", "consumer": "c"}]}}),
            "api_keys.keys[0].sha256",
        ),
        (json!({"api_keys": {"keys": []}}), "api_keys"),
        (
            json!({"identity_headers": {"remove": ["authorization"]}}),
            "identity_headers.remove[0]",
        ),
        (
            json!({"identity_headers": {"signature": {"secret": "short"}}}),
            "identity_headers.signature.secret",
        ),
        (json!({"token_cache_entries": 0}), "token_cache_entries"),
        (json!({"max_waiting_requests": 0}), "max_waiting_requests"),
    ];
    for (patch, path) in cases {
        let json = with(patch.clone());
        let error = AuthSettings::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(error.path(), path, "{patch}: {error}");
    }
}
