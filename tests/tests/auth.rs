//! The auth filter against a real Envoy: tokens signed by joserfc, key sets served
//! by a key-set server, identity headers, rules, shadow mode, API keys.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::client::Response;
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::jose::{jwks_of, now, KeyPair};
use gatehouse_tests::keyset::{KeySetServer, Serve};
use gatehouse_tests::{paths, wait_for};
use serde_json::{json, Value};
use std::time::Duration;

const AUDIENCE: &str = "https://api.gatehouse.test";

struct Scene {
    key: KeyPair,
    keys: KeySetServer,
    accounts: EchoBackend,
    _public: EchoBackend,
    _analytics: EchoBackend,
    gateway: Gateway,
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn auth_config(issuer: &str, key_source: Value) -> String {
    let mut provider = json!({
        "name": "test-idp",
        "issuer": issuer,
        "audiences": [AUDIENCE],
        "algorithms": ["RS256", "ES256", "EdDSA"],
        "refetch_cooldown_seconds": 1,
    });
    if let (Value::Object(provider), Value::Object(source)) = (&mut provider, key_source) {
        provider.extend(source);
    }
    json!({
        "providers": [provider],
        "api_keys": {"header": "x-api-key", "keys": [
            {"sha256": sha256_hex("demo-pro-key"), "consumer": "acme", "tier": "pro"},
        ]},
        "rules": [
            {"name": "public", "path": {"prefix": "/public/"}, "access": "public"},
            {"name": "close-account", "methods": ["POST"], "path": {"exact": "/accounts/close"},
             "access": "roles", "roles_any": ["admin"]},
            {"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"},
            {"name": "analytics", "path": {"prefix": "/analytics/"}, "access": "authenticated", "credentials": ["api_key"]},
        ],
        "identity_headers": {"remove": ["x-internal-admin"]},
        "key_wait_ms": 1500,
    })
    .to_string()
}

fn scene_with(key_source: impl Fn(&KeySetServer) -> Value) -> Scene {
    let key = KeyPair::generate("RS256", "key-1").unwrap();
    let keys = KeySetServer::start(key.jwks.clone()).unwrap();
    let accounts = EchoBackend::start("accounts").unwrap();
    let public = EchoBackend::start("public").unwrap();
    let analytics = EchoBackend::start("analytics").unwrap();
    let config = auth_config(&keys.issuer(), key_source(&keys));
    let gateway = GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
        .filter(FilterSpec::new("auth", paths::module("auth"), &config))
        .backend("accounts", accounts.address())
        .backend("public", public.address())
        .backend("analytics", analytics.address())
        .cluster("idp", keys.address())
        .start()
        .unwrap();
    Scene {
        key,
        keys,
        accounts,
        _public: public,
        _analytics: analytics,
        gateway,
    }
}

fn scene() -> Scene {
    scene_with(|_| json!({"jwks_uri": {"cluster": "idp", "path": "/jwks"}}))
}

impl Scene {
    fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.key.sign(&self.claims(subject, roles)).unwrap()
    }

    fn claims(&self, subject: &str, roles: &[&str]) -> Value {
        json!({"iss": self.keys.issuer(), "aud": AUDIENCE, "sub": subject, "roles": roles,
               "iat": now(), "exp": now() + 300})
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = format!("{method} {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            request.push_str("content-length: 0\r\n");
        }
        request.push_str("\r\n");
        gatehouse_tests::client::raw(self.gateway.address(), request.as_bytes()).unwrap()
    }
}

fn backend_headers(response: &Response) -> Value {
    serde_json::from_str::<Value>(&response.body).unwrap()["headers"].clone()
}

#[test]
fn valid_token_reaches_the_backend_with_trusted_identity_only() {
    let scene = scene();
    let bearer = format!("Bearer {}", scene.token("alice", &["user"]));

    let response = scene.request(
        "GET",
        "/accounts/42",
        &[
            ("authorization", &bearer),
            ("x-user-id", "root"),
            ("x-user-id", "admin"),
            ("x-user-role", "admin"),
            ("x-consumer-tier", "enterprise"),
            ("x-consumer-tier", "platinum"),
            ("x-internal-admin", "1"),
        ],
    );

    assert_eq!(response.status, 200, "{response:?}");
    let seen = backend_headers(&response);
    assert_eq!(seen["x-user-id"], "alice");
    assert_eq!(seen["x-user-role"], "user");
    assert_eq!(seen["x-consumer-id"], "alice");
    assert!(
        seen.get("x-consumer-tier").is_none(),
        "repeated spoofed headers are all gone (alice has no tier): {seen}"
    );
    assert!(
        seen.get("x-internal-admin").is_none(),
        "configured extra header removed"
    );
    let id = response.header("x-correlation-id").unwrap();
    let record = &scene.gateway.records_for(id, 1)[0];
    assert_eq!(record["auth_result"], "allowed");
    assert_eq!(record["consumer"], "alice");
    assert_eq!(record["roles"], json!(["user"]));
}

#[test]
fn missing_and_bad_credentials_get_rfc_6750_answers_and_never_reach_the_backend() {
    let scene = scene();
    let missing = scene.request("GET", "/accounts/42", &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let body: Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["correlation_id"],
        missing.header("x-correlation-id").unwrap()
    );
    let record = &scene
        .gateway
        .records_for(missing.header("x-correlation-id").unwrap(), 1)[0];
    assert_eq!(
        (record["status"].as_u64(), record["auth_reason"].as_str()),
        (Some(401), Some("credential_missing"))
    );

    let expired = scene
        .key
        .sign(
            &json!({"iss": scene.keys.issuer(), "aud": AUDIENCE, "sub": "alice",
                                          "iat": now() - 4000, "exp": now() - 3000}),
        )
        .unwrap();
    let other_key = KeyPair::generate("RS256", "key-1")
        .unwrap()
        .sign(&scene.claims("mallory", &["admin"]))
        .unwrap();
    let cases = [
        (format!("Bearer {expired}"), "token_expired"),
        (format!("Bearer {other_key}"), "signature_invalid"),
        ("Bearer not.a.token".to_string(), "issuer_unknown"),
        ("Basic YWxpY2U6cGFzcw==".to_string(), "credential_malformed"),
    ];
    for (authorization, reason) in cases {
        let response = scene.request("GET", "/accounts/42", &[("authorization", &authorization)]);
        assert_eq!(response.status, 401, "{reason}");
        let challenge = response.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("Bearer error="), "{challenge}");
        assert!(
            !response.body.contains(&authorization[7..]),
            "no token in the answer"
        );
        let record = &scene
            .gateway
            .records_for(response.header("x-correlation-id").unwrap(), 1)[0];
        assert_eq!(record["auth_reason"], reason);
    }
    assert_eq!(
        scene.accounts.requests(),
        0,
        "no denial reaches the backend"
    );
}

#[test]
fn roles_decide_the_admin_route_however_its_path_is_spelled() {
    let scene = scene();
    let user = format!("Bearer {}", scene.token("alice", &["user"]));
    let admin = format!("Bearer {}", scene.token("root", &["admin"]));

    let allowed = scene.request("POST", "/accounts/close", &[("authorization", &admin)]);
    assert_eq!(allowed.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&allowed.body).unwrap()["path"],
        "/accounts/close"
    );
    let before = scene.accounts.requests();

    let variants = [
        ("/accounts/close", 403),
        ("//accounts/close", 403),
        ("/accounts/./close", 403),
        ("/accounts/x/../close", 403),
        ("/accounts/%63lose", 403),
        ("/accounts/close/", 403),
        ("/ACCOUNTS/close", 403),
        ("/accounts%2Fclose", 400),
        ("/accounts/close;x", 400),
    ];
    for (path, status) in variants {
        let response = scene.request("POST", path, &[("authorization", &user)]);
        assert_eq!(response.status, status, "POST {path}: {}", response.body);
        if status == 403 {
            assert!(response
                .header("www-authenticate")
                .unwrap()
                .contains("insufficient_scope"));
        }
    }
    assert_eq!(
        scene.accounts.requests(),
        before,
        "no variant reached the backend"
    );

    // Other methods fall to the next rule (any valid token), as the rules say.
    for method in ["HEAD", "OPTIONS", "GET"] {
        let response = scene.request(method, "/accounts/close", &[("authorization", &user)]);
        assert_eq!(response.status, 200, "{method}");
    }
    let lower = scene.request("post", "/accounts/close", &[("authorization", &user)]);
    assert_eq!(
        lower.status, 400,
        "Envoy refuses a method that is not upper case"
    );
}

#[test]
fn api_keys_identify_consumers_and_their_tier() {
    let scene = scene();
    let response = scene
        .gateway
        .get("/analytics/report", &[("x-api-key", "demo-pro-key")])
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = backend_headers(&response);
    assert_eq!(
        (
            seen["x-consumer-id"].as_str(),
            seen["x-consumer-tier"].as_str()
        ),
        (Some("acme"), Some("pro"))
    );

    let wrong = scene
        .gateway
        .get("/analytics/report", &[("x-api-key", "demo-pro-kez")])
        .unwrap();
    assert_eq!(wrong.status, 401);
    let token = format!("Bearer {}", scene.token("alice", &["user"]));
    let not_here = scene
        .gateway
        .get("/analytics/report", &[("authorization", &token)])
        .unwrap();
    assert_eq!(not_here.status, 401, "this route takes API keys only");
    let both = scene
        .gateway
        .get(
            "/analytics/report",
            &[("authorization", &token), ("x-api-key", "demo-pro-key")],
        )
        .unwrap();
    assert_eq!(both.status, 401, "two credentials are refused");
}

#[test]
fn rotated_keys_are_picked_up_after_one_refetch_and_removed_keys_refused() {
    let scene = scene();
    let old = format!("Bearer {}", scene.token("alice", &["user"]));
    assert_eq!(
        scene
            .request("GET", "/accounts/1", &[("authorization", &old)])
            .status,
        200
    );

    let new_key = KeyPair::generate("ES256", "key-2").unwrap();
    scene.keys.set_jwks(jwks_of(&[&new_key]));
    let fetches = scene.keys.fetches();
    let new = format!(
        "Bearer {}",
        new_key.sign(&scene.claims("bob", &["user"])).unwrap()
    );

    let response = scene.request("GET", "/accounts/1", &[("authorization", &new)]);
    assert_eq!(
        response.status, 200,
        "new kid accepted after a refetch: {}",
        response.body
    );
    assert!(scene.keys.fetches() > fetches);
    assert_eq!(backend_headers(&response)["x-user-id"], "bob");

    // The old key left the set: its tokens (even one seen before) are refused.
    let refused = wait_for(Duration::from_secs(5), || {
        (scene
            .request("GET", "/accounts/1", &[("authorization", &old)])
            .status
            == 401)
            .then_some(())
    });
    assert!(refused.is_some(), "a token of a removed key is refused");
}

#[test]
fn unknown_kids_refetch_at_most_once_per_cooldown_and_are_refused_at_once_within_it() {
    let scene = scene_with(
        |_| json!({"jwks_uri": {"cluster": "idp", "path": "/jwks"}, "refetch_cooldown_seconds": 8}),
    );
    let bearer = format!("Bearer {}", scene.token("alice", &["user"]));
    let ok = scene.request("GET", "/accounts/1", &[("authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let stranger = |kid: &str| {
        let key = KeyPair::generate("ES256", kid).unwrap();
        format!(
            "Bearer {}",
            key.sign(&scene.claims("eve", &["user"])).unwrap()
        )
    };
    let refused = |token: &str| {
        let started = std::time::Instant::now();
        // A client that reads by length: the raw one waits for Envoy's delayed
        // close after a local reply (a second).
        let response = scene
            .gateway
            .get("/accounts/1", &[("authorization", token)])
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(response.status, 401, "{}", response.body);
        let record = &scene
            .gateway
            .records_for(response.header("x-correlation-id").unwrap(), 1)[0];
        assert_eq!(record["auth_reason"], "key_unknown");
        waited
    };

    // Within the cooldown of the start-up fetch: refused at once, nothing fetched.
    let fetches = scene.keys.fetches();
    for index in 0..5 {
        let waited = refused(&stranger(&format!("early-{index}")));
        assert!(
            waited < Duration::from_millis(700),
            "no wait for a refetch that cannot happen: {waited:?}"
        );
    }
    assert_eq!(
        scene.keys.fetches(),
        fetches,
        "no refetch within the cooldown"
    );

    // Past it: the first stranger causes one refetch; the flood after it, none.
    std::thread::sleep(Duration::from_secs(8));
    refused(&stranger("late-0"));
    let after = scene.keys.fetches();
    assert_eq!(
        after,
        fetches + 1,
        "exactly one refetch for the first stranger"
    );
    for index in 1..12 {
        let waited = refused(&stranger(&format!("late-{index}")));
        assert!(waited < Duration::from_millis(700), "{waited:?}");
    }
    assert_eq!(scene.keys.fetches(), after, "one refetch per cooldown");
    assert_eq!(
        scene.accounts.requests(),
        1,
        "only the valid token got through"
    );
}

#[test]
fn key_set_server_failures_keep_the_last_good_keys() {
    let scene = scene();
    let bearer = format!("Bearer {}", scene.token("alice", &["user"]));
    assert_eq!(
        scene
            .request("GET", "/accounts/1", &[("authorization", &bearer)])
            .status,
        200
    );

    for serve in [
        Serve::Status(500),
        Serve::Garbage,
        Serve::Huge(10 << 20),
        Serve::Slow(Duration::from_secs(8)),
    ] {
        scene.keys.set_serve(serve.clone());
        // An unknown kid forces a refetch against the failing server.
        let stranger =
            KeyPair::generate("ES256", format!("k-{}", scene.keys.fetches()).as_str()).unwrap();
        let token = format!(
            "Bearer {}",
            stranger.sign(&scene.claims("eve", &["user"])).unwrap()
        );
        let response = scene.request("GET", "/accounts/1", &[("authorization", &token)]);
        assert_eq!(response.status, 401, "{serve:?}: {}", response.body);
        assert_eq!(
            scene
                .request("GET", "/accounts/1", &[("authorization", &bearer)])
                .status,
            200,
            "{serve:?}"
        );
    }
    let failures = scene
        .gateway
        .metric("gatehouse_auth_key_fetch_failures_total")
        .unwrap();
    assert!(failures >= 2.0, "failures counted: {failures}");

    // The server gone altogether (connections refused): the same.
    let Scene {
        key: _key,
        keys,
        accounts: _accounts,
        gateway,
        ..
    } = scene;
    let issuer = keys.issuer();
    drop(keys);
    std::thread::sleep(Duration::from_millis(1100)); // past the refetch cooldown
    let stranger = KeyPair::generate("ES256", "after-the-server-went").unwrap();
    let claims = json!({"iss": issuer, "aud": AUDIENCE, "sub": "eve", "exp": now() + 300});
    let token = format!("Bearer {}", stranger.sign(&claims).unwrap());
    let response = gateway
        .get("/accounts/1", &[("authorization", &token)])
        .unwrap();
    assert_eq!(response.status, 401, "{}", response.body);
    let more = wait_for(Duration::from_secs(5), || {
        let now = gateway
            .metric("gatehouse_auth_key_fetch_failures_total")
            .ok()?;
        (now > failures).then_some(now)
    });
    assert!(
        more.is_some(),
        "the refused connection counted as a failure"
    );
    let response = gateway
        .get("/accounts/1", &[("authorization", &bearer)])
        .unwrap();
    assert_eq!(response.status, 200, "the last good keys still serve");
}

/// A gateway whose key server never answers (bound for the whole scene so that
/// no other test can take its port), and a token it cannot check.
struct Keyless {
    gateway: Gateway,
    accounts: EchoBackend,
    bearer: String,
    _silent: std::net::TcpListener,
}

fn keyless(patch: impl FnOnce(&mut Value)) -> Keyless {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let key = KeyPair::generate("RS256", "key-1").unwrap();
    let accounts = EchoBackend::start("accounts").unwrap();
    let mut config: Value = serde_json::from_str(&auth_config(
        "http://idp.test",
        json!({"jwks_uri": {"cluster": "idp", "path": "/jwks"}}),
    ))
    .unwrap();
    patch(&mut config);
    let gateway = GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
        .filter(FilterSpec::new(
            "auth",
            paths::module("auth"),
            &config.to_string(),
        ))
        .backend("accounts", accounts.address())
        .cluster("idp", silent.local_addr().unwrap())
        .start()
        .unwrap();
    let token = key
        .sign(&json!({"iss": "http://idp.test", "aud": AUDIENCE, "sub": "a", "exp": now() + 60}))
        .unwrap();
    Keyless {
        gateway,
        accounts,
        bearer: format!("Bearer {token}"),
        _silent: silent,
    }
}

#[test]
fn requests_wait_for_the_first_key_set_then_get_503() {
    let scene = keyless(|_| {});
    let started = std::time::Instant::now();
    let response = scene
        .gateway
        .get("/accounts/1", &[("authorization", &scene.bearer)])
        .unwrap();
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.header("retry-after").is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it waited for keys first"
    );
    assert_eq!(scene.accounts.requests(), 0);
    // Routes that need no key set are not held up.
    let public = scene.gateway.get("/public/x", &[]).unwrap();
    assert_eq!(
        public.status, 404,
        "no public backend here, but the filter let it pass"
    );
}

#[test]
fn requests_held_for_keys_are_capped_per_worker() {
    let scene = keyless(|config| config["max_waiting_requests"] = json!(2));
    let answers: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..12)
            .map(|_| {
                scope.spawn(|| {
                    let started = std::time::Instant::now();
                    let response = scene
                        .gateway
                        .get("/accounts/1", &[("authorization", &scene.bearer)])
                        .unwrap();
                    (response.status, started.elapsed())
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|(status, _)| *status == 503),
        "{answers:?}"
    );
    let held = answers
        .iter()
        .filter(|(_, waited)| *waited >= Duration::from_millis(1000))
        .count();
    assert!(
        (1..=4).contains(&held),
        "at most two held per worker (two workers), the rest answered at once: {answers:?}"
    );
    assert_eq!(scene.accounts.requests(), 0);
}

#[test]
fn under_a_shadow_rule_a_request_that_cannot_get_keys_passes_unidentified() {
    let scene = keyless(|config| {
        config["mode"] = json!("shadow");
        for rule in config["rules"].as_array_mut().unwrap() {
            rule["mode"] = json!("shadow");
        }
    });
    let response = scene
        .gateway
        .get(
            "/accounts/1",
            &[("authorization", &scene.bearer), ("x-user-id", "root")],
        )
        .unwrap();
    assert_eq!(response.status, 200, "shadow lets it through: {response:?}");
    assert!(
        backend_headers(&response).get("x-user-id").is_none(),
        "no identity without a verified token"
    );
    let id = response.header("x-correlation-id").unwrap();
    let record = &scene.gateway.records_for(id, 1)[0];
    assert_eq!(record["auth_result"], "shadow_denied", "{record}");
    assert_eq!(
        record["auth_reason"], "keys_unavailable:test-idp",
        "{record}"
    );
}

#[test]
fn discovery_finds_the_key_set() {
    let scene = scene_with(|_| json!({"discovery": {"cluster": "idp"}}));
    let bearer = format!("Bearer {}", scene.token("alice", &["user"]));
    let response = scene.request("GET", "/accounts/1", &[("authorization", &bearer)]);
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The real identity provider: oidc-provider issuing client-credentials tokens,
/// found by discovery, rotating its key.
mod identity_provider {
    use super::*;
    use gatehouse_tests::idp::Idp;

    fn gateway(idp: &Idp, accounts: &EchoBackend) -> Gateway {
        let config = json!({
            "providers": [{
                "name": "demo-idp",
                "issuer": idp.issuer(),
                "audiences": ["https://api.gatehouse.demo"],
                "algorithms": ["RS256"],
                "discovery": {"cluster": "idp"},
                "refetch_cooldown_seconds": 1,
            }],
            "rules": [
                {"name": "close-account", "methods": ["POST"], "path": {"exact": "/accounts/close"},
                 "access": "roles", "roles_any": ["admin"]},
                {"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"},
            ],
        });
        GatewayBuilder::new()
            .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
            .filter(FilterSpec::new(
                "auth",
                paths::module("auth"),
                &config.to_string(),
            ))
            .backend("accounts", accounts.address())
            .cluster("idp", idp.address())
            .start()
            .unwrap()
    }

    fn post_close(gateway: &Gateway, token: &str) -> Response {
        let request = format!(
            "POST /accounts/close HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        gatehouse_tests::client::raw(gateway.address(), request.as_bytes()).unwrap()
    }

    #[test]
    fn admin_may_close_accounts_and_user_may_not() {
        let idp = Idp::start(0, "RS256").unwrap();
        let accounts = EchoBackend::start("accounts").unwrap();
        let gateway = gateway(&idp, &accounts);

        let admin = post_close(&gateway, &idp.token("demo-admin").unwrap());
        assert_eq!(admin.status, 200, "{}", admin.body);
        assert_eq!(backend_headers(&admin)["x-user-id"], "demo-admin");
        let user = post_close(&gateway, &idp.token("demo-user").unwrap());
        assert_eq!(user.status, 403, "{}", user.body);
        let read = gateway
            .get(
                "/accounts/1",
                &[(
                    "authorization",
                    &format!("Bearer {}", idp.token("demo-user").unwrap()),
                )],
            )
            .unwrap();
        assert_eq!(read.status, 200);
    }

    #[test]
    fn provider_key_rotation_is_followed() {
        let idp = Idp::start(0, "RS256").unwrap();
        let accounts = EchoBackend::start("accounts").unwrap();
        let gateway = gateway(&idp, &accounts);
        let before = idp.token("demo-user").unwrap();
        let bearer = |token: &str| format!("Bearer {token}");
        assert_eq!(
            gateway
                .get("/accounts/1", &[("authorization", &bearer(&before))])
                .unwrap()
                .status,
            200
        );

        // New key first, old key still published: both verify.
        idp.rotate(true).unwrap();
        let after = idp.token("demo-user").unwrap();
        assert_eq!(
            gateway
                .get("/accounts/1", &[("authorization", &bearer(&after))])
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            gateway
                .get("/accounts/1", &[("authorization", &bearer(&before))])
                .unwrap()
                .status,
            200
        );

        // Old key dropped: its tokens are refused once the set is fetched again.
        idp.rotate(false).unwrap();
        let latest = idp.token("demo-user").unwrap();
        assert_eq!(
            gateway
                .get("/accounts/1", &[("authorization", &bearer(&latest))])
                .unwrap()
                .status,
            200
        );
        let refused = gateway
            .get("/accounts/1", &[("authorization", &bearer(&before))])
            .unwrap();
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
}

/// Shadow mode, spoofed headers, other credential places, the signed identity.
mod hardening {
    use super::*;

    /// `config` with one inline ES256 provider for `key`.
    fn gateway_with(mut config: Value, key: &KeyPair) -> (Gateway, EchoBackend) {
        config["providers"] = json!([{
            "name": "inline", "issuer": "https://issuer.test", "audiences": [AUDIENCE],
            "algorithms": ["ES256"], "jwks": key.jwks,
        }]);
        gateway_for(&config)
    }

    /// Audit, then auth with `config`, in front of an `accounts` echo backend.
    fn gateway_for(config: &Value) -> (Gateway, EchoBackend) {
        let accounts = EchoBackend::start("accounts").unwrap();
        let gateway = GatewayBuilder::new()
            .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
            .filter(FilterSpec::new(
                "auth",
                paths::module("auth"),
                &config.to_string(),
            ))
            .backend("accounts", accounts.address())
            .start()
            .unwrap();
        (gateway, accounts)
    }

    fn token(key: &KeyPair, subject: &str, roles: &[&str]) -> String {
        key.sign(
            &json!({"iss": "https://issuer.test", "aud": AUDIENCE, "sub": subject, "roles": roles,
                         "iat": now(), "exp": now() + 300}),
        )
        .unwrap()
    }

    #[test]
    fn shadow_mode_lets_would_be_denials_through_without_trusting_them() {
        let key = KeyPair::generate("ES256", "inline-1").unwrap();
        let config = json!({"mode": "shadow", "rules": [
            {"name": "admins", "path": {"prefix": "/accounts/"}, "access": "roles", "roles_any": ["admin"]}]});
        let (gateway, accounts) = gateway_with(config, &key);

        let user = format!("Bearer {}", token(&key, "alice", &["user"]));
        let response = gateway
            .get(
                "/accounts/1",
                &[("authorization", &user), ("x-user-id", "root")],
            )
            .unwrap();
        assert_eq!(response.status, 200);
        let seen = backend_headers(&response);
        assert_eq!(
            seen["x-user-id"], "alice",
            "a valid credential still sets the identity"
        );
        let record = &gateway.records_for(response.header("x-correlation-id").unwrap(), 1)[0];
        assert_eq!(
            (
                record["auth_result"].as_str(),
                record["auth_reason"].as_str()
            ),
            (Some("shadow_denied"), Some("role_missing"))
        );

        let forged = format!("Bearer {}", KeyPair::generate("ES256", "inline-1").unwrap().sign(&json!({"iss": "https://issuer.test", "aud": AUDIENCE, "sub": "root", "roles": ["admin"], "exp": now() + 60})).unwrap());
        let response = gateway
            .get(
                "/accounts/1",
                &[
                    ("authorization", &forged),
                    ("x-user-id", "root"),
                    ("x-user-role", "admin"),
                ],
            )
            .unwrap();
        assert_eq!(response.status, 200, "shadow: passes");
        let seen = backend_headers(&response);
        assert!(
            seen.get("x-user-id").is_none() && seen.get("x-user-role").is_none(),
            "no identity from an invalid credential: {seen}"
        );
        assert_eq!(
            gateway
                .settled_metric("gatehouse_auth_shadow_denied_total", 2.0)
                .unwrap(),
            2.0
        );
        assert_eq!(accounts.requests(), 2);
    }

    #[test]
    fn spoofed_identity_and_proxy_headers_change_nothing() {
        let key = KeyPair::generate("ES256", "inline-1").unwrap();
        let config = json!({"rules": [
            {"name": "public", "path": {"prefix": "/accounts/public/"}, "access": "public"},
            {"name": "admins", "path": {"prefix": "/accounts/"}, "access": "roles", "roles_any": ["admin"]}]});
        let (gateway, accounts) = gateway_with(config, &key);
        let spoofed = [
            ("x-user-id", "root"),
            ("x-user-role", "admin"),
            ("x-consumer-id", "root"),
            ("x-consumer-tier", "enterprise"),
            ("x-gatehouse-identity", "t=1,v1=00"),
            ("x-envoy-original-path", "/accounts/public/x"),
            ("x-envoy-internal", "true"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-original-url", "/accounts/public/x"),
            ("x-rewrite-url", "/accounts/public/x"),
        ];

        let public = gateway.get("/accounts/public/x", &spoofed).unwrap();
        assert_eq!(public.status, 200);
        let seen = backend_headers(&public);
        for name in [
            "x-user-id",
            "x-user-role",
            "x-consumer-id",
            "x-consumer-tier",
            "x-gatehouse-identity",
        ] {
            assert!(
                seen.get(name).is_none(),
                "{name} reached the backend on a public route"
            );
        }
        let denied = gateway.get("/accounts/secret", &spoofed).unwrap();
        assert_eq!(denied.status, 401, "proxy headers do not move the decision");
        let user = format!("Bearer {}", token(&key, "alice", &["user"]));
        let mut with_user = spoofed.to_vec();
        with_user.push(("authorization", &user));
        assert_eq!(
            gateway.get("/accounts/secret", &with_user).unwrap().status,
            403
        );
        assert_eq!(
            accounts.requests(),
            1,
            "only the public request reached the backend"
        );
    }

    #[test]
    fn tokens_from_other_places_and_the_signed_identity() {
        let key = KeyPair::generate("ES256", "inline-1").unwrap();
        let secret = "identity-signing-secret-for-tests-0001";
        let config = json!({
            "credentials": {"bearer": true, "query_parameter": "access_token", "cookie": "session"},
            "rules": [{"name": "any", "path": {"prefix": "/accounts/"}, "access": "authenticated"}],
            "identity_headers": {"signature": {"secret": secret}, "strip_credential": true},
        });
        let (gateway, _accounts) = gateway_with(config, &key);
        let token = token(&key, "alice", &["user", "billing"]);

        let by_query = gateway
            .get(
                &format!("/accounts/1?page=2&access_token={token}&sort=asc"),
                &[],
            )
            .unwrap();
        assert_eq!(by_query.status, 200);
        let seen: Value = serde_json::from_str(&by_query.body).unwrap();
        assert_eq!(
            (&seen["path"], &seen["query"]),
            (&json!("/accounts/1"), &json!("page=2&sort=asc")),
            "the query credential was stripped, the rest of the query kept"
        );
        let by_cookie = gateway
            .get(
                "/accounts/1",
                &[("cookie", &format!("theme=dark; session={token}; lang=en"))],
            )
            .unwrap();
        assert_eq!(by_cookie.status, 200);
        assert_eq!(
            backend_headers(&by_cookie)["cookie"],
            "theme=dark; lang=en",
            "the cookie credential was stripped, the other cookies kept"
        );
        let only_cookie = gateway
            .get("/accounts/1", &[("cookie", &format!("session={token}"))])
            .unwrap();
        assert_eq!(only_cookie.status, 200);
        assert!(backend_headers(&only_cookie).get("cookie").is_none());
        let twice = gateway
            .get(
                &format!("/accounts/1?access_token={token}"),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .unwrap();
        assert_eq!(twice.status, 401, "header plus query token is refused");

        let response = gateway
            .get(
                "/accounts/7",
                &[("authorization", &format!("Bearer {token}"))],
            )
            .unwrap();
        assert_eq!(response.status, 200);
        let seen = backend_headers(&response);
        assert!(
            seen.get("authorization").is_none(),
            "the credential was stripped"
        );
        let signature = seen["x-gatehouse-identity"].as_str().unwrap();
        let (timestamp, mac) = signature
            .strip_prefix("t=")
            .unwrap()
            .split_once(",v1=")
            .unwrap();
        let message = format!("v1\nalice\nuser,billing\n\nGET\n/accounts/7\n{timestamp}");
        use hmac::Mac;
        let mut expected = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        expected.update(message.as_bytes());
        let hex: String = expected
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(mac, hex, "a backend can check what the gateway asserted");
        assert!((timestamp.parse::<i64>().unwrap() - now()).abs() < 30);
    }

    fn reason_of(gateway: &Gateway, response: &Response) -> String {
        let id = response.header("x-correlation-id").unwrap();
        gateway.records_for(id, 1)[0]["auth_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn a_token_header_api_keys_in_the_query_and_more_than_one_credential() {
        let key = KeyPair::generate("ES256", "inline-1").unwrap();
        let config = json!({
            "credentials": {"bearer": true, "header": "x-access-token"},
            "api_keys": {"query_parameter": "api_key", "keys": [
                {"sha256": super::sha256_hex("demo-pro-key"), "consumer": "acme", "tier": "pro"}]},
            "rules": [{"name": "any", "path": {"prefix": "/accounts/"}, "access": "authenticated"}],
        });
        let (gateway, accounts) = gateway_with(config, &key);
        let token = token(&key, "alice", &["user"]);
        let bearer = format!("Bearer {token}");

        let by_header = gateway
            .get("/accounts/1", &[("x-access-token", &token)])
            .unwrap();
        assert_eq!(by_header.status, 200, "{}", by_header.body);
        assert_eq!(backend_headers(&by_header)["x-user-id"], "alice");
        let by_query = gateway
            .get("/accounts/1?api_key=demo-pro-key", &[])
            .unwrap();
        assert_eq!(by_query.status, 200, "{}", by_query.body);
        let seen = backend_headers(&by_query);
        assert_eq!(
            (
                seen["x-consumer-id"].as_str(),
                seen["x-consumer-tier"].as_str()
            ),
            (Some("acme"), Some("pro"))
        );
        let wrong = gateway
            .get("/accounts/1?api_key=demo-pro-kez", &[])
            .unwrap();
        assert_eq!(
            (wrong.status, reason_of(&gateway, &wrong).as_str()),
            (401, "api_key_unknown")
        );
        let served = accounts.requests();

        for (headers, path) in [
            (
                vec![
                    ("x-access-token", token.as_str()),
                    ("authorization", bearer.as_str()),
                ],
                "/accounts/1",
            ),
            (
                vec![("x-access-token", token.as_str())],
                "/accounts/1?api_key=demo-pro-key",
            ),
            (
                vec![("authorization", bearer.as_str())],
                "/accounts/1?api_key=demo-pro-key",
            ),
        ] {
            let response = gateway.get(path, &headers).unwrap();
            assert_eq!(response.status, 401, "{path} {headers:?}");
            assert_eq!(reason_of(&gateway, &response), "credential_multiple");
        }

        // Two Authorization lines, sent as such: Envoy folds them into one value
        // joined by a comma, and the filter refuses it as two credentials.
        let raw = format!(
            "GET /accounts/1 HTTP/1.1\r\nhost: gw\r\nauthorization: {bearer}\r\n\
             authorization: {bearer}\r\nconnection: close\r\n\r\n"
        );
        let twice = gatehouse_tests::client::raw(gateway.address(), raw.as_bytes()).unwrap();
        assert_eq!(twice.status, 401, "{twice:?}");
        assert_eq!(reason_of(&gateway, &twice), "credential_multiple");
        assert_eq!(
            accounts.requests(),
            served,
            "no refused request reached the backend"
        );
    }

    #[test]
    fn roles_from_nested_claims_and_scopes_all_of_and_unmatched_allow() {
        let key = KeyPair::generate("ES256", "inline-1").unwrap();
        let provider = |name: &str, roles_claim: &str| {
            json!({"name": name, "issuer": format!("https://{name}.test"), "audiences": [AUDIENCE],
                   "algorithms": ["ES256"], "jwks": key.jwks, "roles_claim": roles_claim})
        };
        let config = json!({
            "providers": [provider("realm", "realm_access.roles"), provider("groups", "groups"),
                          provider("scopes", "scope")],
            "rules": [{"name": "billing-admin", "path": {"prefix": "/accounts/billing/"},
                       "access": "roles", "roles_all": ["admin", "billing"]}],
            "unmatched": "allow",
        });
        let (gateway, _accounts) = gateway_for(&config);
        let sign = |issuer: &str, roles: Value| {
            let mut claims = json!({"iss": format!("https://{issuer}.test"), "aud": AUDIENCE,
                                    "sub": "dana", "exp": now() + 300});
            match issuer {
                "realm" => claims["realm_access"] = json!({"roles": roles}),
                "groups" => claims["groups"] = roles,
                _ => claims["scope"] = roles,
            }
            format!("Bearer {}", key.sign(&claims).unwrap())
        };
        let cases = [
            (
                sign("realm", json!(["admin", "billing"])),
                200,
                "admin,billing",
            ),
            (sign("realm", json!(["admin"])), 403, ""),
            (
                sign("groups", json!(["billing", "admin", "ops"])),
                200,
                "billing,admin,ops",
            ),
            (sign("groups", json!(["billing"])), 403, ""),
            (sign("scopes", json!("admin billing")), 200, "admin,billing"),
            (sign("scopes", json!("admin")), 403, ""),
        ];
        for (bearer, status, roles) in cases {
            let response = gateway
                .get("/accounts/billing/close", &[("authorization", &bearer)])
                .unwrap();
            assert_eq!(response.status, status, "{roles}: {}", response.body);
            if status == 200 {
                assert_eq!(backend_headers(&response)["x-user-role"], roles);
            } else {
                assert_eq!(reason_of(&gateway, &response), "role_missing");
            }
        }
        // No rule matches: allowed without a credential (and no spoofed identity
        // reaches the backend); an invalid credential is still refused.
        let open = gateway
            .get("/accounts/other", &[("x-user-id", "root")])
            .unwrap();
        assert_eq!(open.status, 200, "{}", open.body);
        assert!(backend_headers(&open).get("x-user-id").is_none());
        let bad = gateway
            .get(
                "/accounts/other",
                &[
                    ("authorization", "Bearer not.a.token"),
                    ("x-user-id", "root"),
                ],
            )
            .unwrap();
        assert_eq!(
            (bad.status, reason_of(&gateway, &bad).as_str()),
            (401, "issuer_unknown"),
            "{}",
            bad.body
        );
    }
}
