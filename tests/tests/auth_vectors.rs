//! Every attack in the policy crate's JWT vectors, freshly signed by joserfc and
//! pyca/cryptography at the current time, sent through a real gateway: a valid
//! token reaches the backend with the trusted identity; every other one gets a 401
//! with the vector's reason in the audit record and never reaches the backend.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse_tests::ecds::FilterSpec;
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::jose::now;
use gatehouse_tests::keyset::KeySetServer;
use gatehouse_tests::paths;
use serde_json::{json, Value};
use std::process::Command;

const ISSUER: &str = "https://idp.vectors.test";

/// Runs the vector generator at the current time into a scratch file.
fn fresh_vectors() -> Value {
    let out = std::env::temp_dir().join(format!("gatehouse-vectors-{}.json", std::process::id()));
    let output = Command::new(paths::python())
        .arg(paths::root().join("shared/tests/data/generate_jwt_vectors.py"))
        .args(["--now", &now().to_string(), "--issuer", ISSUER, "--out"])
        .arg(&out)
        .output()
        .expect("run generate_jwt_vectors.py (make tools installs joserfc)");
    assert!(
        output.status.success(),
        "vector generator: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).unwrap()
}

/// The provider each vector's key context stands for, as the filter configures it.
fn provider(vectors: &Value, keys: &str) -> Value {
    let public = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
    let mut provider = json!({
        "name": "vectors",
        "issuer": ISSUER,
        "audiences": [vectors["audience"]],
        "max_lifetime_seconds": 3600,
        "required_claims": ["sub"],
    });
    let source = match keys {
        // Fetched, so that the set's 1024-bit key is skipped (inline keys are the
        // operator's own and a weak one refuses the configuration).
        "jwks" => json!({"algorithms": public, "jwks_uri": {"cluster": "idp", "path": "/jwks"}}),
        "jwks-es256-only" => {
            json!({"algorithms": ["ES256"], "jwks": {"keys": vectors["jwks"]["keys"]
            .as_array().unwrap().iter().filter(|key| key["kty"] == "EC").collect::<Vec<_>>()}})
        }
        "secret" => json!({"algorithms": ["HS256", "HS384", "HS512"],
                           "shared_secret": vectors["secret"]}),
        other => panic!("unknown key context {other}"),
    };
    if let (Value::Object(provider), Value::Object(source)) = (&mut provider, source) {
        provider.extend(source);
    }
    provider
}

/// The reason the gateway must give: the vector's own, unless the payload does not
/// readably name the issuer, in which case no provider can be chosen.
fn expected_reason(token: &str, vector_reason: &str) -> String {
    let names_issuer = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|claims| claims["iss"] == ISSUER);
    if names_issuer {
        vector_reason.to_string()
    } else {
        "issuer_unknown".to_string()
    }
}

/// The verdicts the gateway may give for a vector sent between `sent` and
/// `answered` (seconds): a vector whose verdict flips at a time (expiry at the skew
/// boundary, say) has the verdict of the side of that time the check fell on, and
/// either when the request straddled it.
fn expected_verdicts(vector: &Value, sent: i64, answered: i64) -> Vec<String> {
    let token = vector["token"].as_str().unwrap();
    let before = expected_reason(token, vector["expect"].as_str().unwrap());
    let Some(flip) = vector.get("flips") else {
        return vec![before];
    };
    let at = flip["after"].as_i64().unwrap();
    let after = expected_reason(token, flip["expect"].as_str().unwrap());
    match (sent > at, answered > at) {
        (true, _) => vec![after],
        (false, false) => vec![before],
        (false, true) => vec![before, after],
    }
}

fn gateway(vectors: &Value, keys: &str, backend: &EchoBackend, idp: &KeySetServer) -> Gateway {
    let config = json!({
        "providers": [provider(vectors, keys)],
        "rules": [{"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"}],
    });
    GatewayBuilder::new()
        .filter(FilterSpec::new("audit", paths::module("audit"), "{}"))
        .filter(FilterSpec::new(
            "auth",
            paths::module("auth"),
            &config.to_string(),
        ))
        .backend("accounts", backend.address())
        .cluster("idp", idp.address())
        .start()
        .unwrap()
}

#[test]
fn every_jwt_vector_gets_its_verdict_through_envoy() {
    let vectors = fresh_vectors();
    let all = vectors["vectors"].as_array().unwrap();
    assert!(all.len() >= 100, "the generator made {} vectors", all.len());
    let idp = KeySetServer::start(vectors["jwks"].clone()).unwrap();
    let mut checked = 0;
    for keys in ["jwks", "jwks-es256-only", "secret"] {
        let backend = EchoBackend::start("accounts").unwrap();
        let gateway = gateway(&vectors, keys, &backend, &idp);
        let mut allowed = 0;
        for vector in all.iter().filter(|vector| vector["keys"] == keys) {
            let name = vector["name"].as_str().unwrap();
            let token = vector["token"].as_str().unwrap();
            let authorization = format!("Bearer {token}");
            let sent = now();
            let response = gatehouse_tests::client::get(
                &gateway.url("/accounts/7"),
                &[("authorization", &authorization), ("x-user-id", "spoofed")],
            )
            .unwrap();
            let answered = now();
            let id = response.header("x-correlation-id").unwrap().to_string();
            let record = &gateway.records_for(&id, 1)[0];
            let verdict = if response.status == 200 {
                "ok".to_string()
            } else {
                record["auth_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            let expected = expected_verdicts(vector, sent, answered);
            assert!(
                expected.contains(&verdict),
                "{name}: {verdict} (expected one of {expected:?}): {}",
                response.body
            );
            if verdict == "ok" {
                let seen: Value = serde_json::from_str(&response.body).unwrap();
                assert_eq!(seen["headers"]["x-user-id"], "client-1", "{name}");
                assert_eq!(record["auth_result"], "allowed", "{name}");
                allowed += 1;
            } else {
                assert_eq!(response.status, 401, "{name}: {}", response.body);
                let challenge = response.header("www-authenticate").unwrap();
                assert!(challenge.contains("invalid_token"), "{name}: {challenge}");
                assert!(
                    !response
                        .body
                        .contains(token.split('.').next().unwrap_or(token)),
                    "{name}: the answer carries none of the token"
                );
            }
            checked += 1;
        }
        assert_eq!(
            backend.requests(),
            allowed,
            "{keys}: only valid tokens reach the backend"
        );
    }
    assert_eq!(checked, all.len(), "every vector has a key context");
}
