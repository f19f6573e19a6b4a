//! The `gatehouse` command as its users run it: check, schema, explain and oci.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gatehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_accepts_the_shipped_configurations_and_names_the_bad_field() {
    let ok = gatehouse(&[
        "check",
        "ratelimit-edge",
        "envoy-config/demo/ratelimit-edge.json",
        "envoy-config/demo/ratelimit-tiers.json",
    ]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert_eq!(stdout(&ok).matches("ok ").count(), 2);

    let dir = scratch("check");
    let bad = dir.join("traffic.json");
    std::fs::write(
        &bad,
        r#"{"name": "t", "routes": [{"name": "r", "targets": [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}]}]}"#,
    )
    .unwrap();
    let typo = dir.join("audit.json");
    std::fs::write(&typo, r#"{"correlation": {"max_lenght": 5}}"#).unwrap();
    let refused = gatehouse(&[
        "check",
        "traffic",
        bad.to_str().unwrap(),
        "envoy-config/demo/traffic.json",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let text = stdout(&refused);
    assert!(
        text.contains("routes[0].targets: weights must sum to 100, not 90"),
        "{text}"
    );
    assert!(
        text.contains("ok      envoy-config/demo/traffic.json"),
        "{text}"
    );
    let typo_out = gatehouse(&["check", "audit", typo.to_str().unwrap()]);
    assert_eq!(typo_out.status.code(), Some(1));
    assert!(
        stdout(&typo_out).contains("correlation.max_lenght: unknown field"),
        "{}",
        stdout(&typo_out)
    );
    assert_eq!(
        stdout(&typo_out)
            .lines()
            .filter(|line| line.contains("max_lenght"))
            .count(),
        1,
        "the filter's problem is not listed twice"
    );

    // The filter stops at its first problem; the schema lists the others.
    let many = dir.join("ratelimit.json");
    std::fs::write(
        &many,
        r#"{"name": 5, "extra": true, "limits": [
            {"name": "a", "key": {"kind": "nope"}, "tiers": {"default": {"requests": "5", "window_seconds": 60}}},
            {"key": {"kind": "client_address"}, "tiers": {}}]}"#,
    )
    .unwrap();
    let many_out = gatehouse(&["check", "ratelimit", many.to_str().unwrap()]);
    assert_eq!(many_out.status.code(), Some(1));
    let text = stdout(&many_out);
    for expected in [
        "name: invalid type: integer `5`, expected a string",
        "extra: unknown field",
        "limits[0].key.kind: must be one of \"client_address\"",
        "limits[0].tiers.default.requests: expected integer, found a string",
        "limits[1].name: is required",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    // An optional section with problems is judged as what it is, and a member
    // the filter already named is not listed again.
    let optional = dir.join("auth.json");
    std::fs::write(&optional, r#"{"api_keys": {"header": 5, "kees": []}}"#).unwrap();
    let optional_out = stdout(&gatehouse(&["check", "auth", optional.to_str().unwrap()]));
    for expected in [
        ": api_keys.header: invalid type: integer `5`, expected a string",
        "api_keys.kees: unknown field",
        "api_keys.keys: is required",
        "rules: is required",
    ] {
        assert!(
            optional_out.contains(expected),
            "{expected}: {optional_out}"
        );
    }
    assert_eq!(
        optional_out.matches("api_keys.header").count(),
        1,
        "{optional_out}"
    );
    assert!(!optional_out.contains("expected null"), "{optional_out}");
    let no_rules = dir.join("rules.json");
    std::fs::write(&no_rules, r#"{"providers": []}"#).unwrap();
    let no_rules_out = stdout(&gatehouse(&["check", "auth", no_rules.to_str().unwrap()]));
    assert!(
        no_rules_out.contains(": .: missing field `rules`"),
        "{no_rules_out}"
    );
    assert!(
        !no_rules_out.contains("rules: is required"),
        "named once: {no_rules_out}"
    );
    let missing = gatehouse(&["check", "auth", "no/such/file.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stdout(&missing).contains("cannot read"));
    let unknown = gatehouse(&["check", "firewall", "envoy-config/demo/auth.json"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stdout(&unknown).contains("unknown filter"));
}

#[test]
fn schemas_describe_every_filter_and_refuse_unknown_fields() {
    for filter in ["audit", "auth", "ratelimit", "traffic"] {
        let output = gatehouse(&["schema", filter]);
        assert!(output.status.success(), "{filter}");
        let schema: Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{filter}: {schema}");
        assert!(schema["properties"].is_object(), "{filter}");
    }
    let ratelimit: Value =
        serde_json::from_str(&stdout(&gatehouse(&["schema", "ratelimit"]))).unwrap();
    assert_eq!(ratelimit["required"], serde_json::json!(["name", "limits"]));
    assert!(!gatehouse(&["schema", "firewall"]).status.success());
}

#[test]
fn explain_walks_a_request_through_the_demo_chain() {
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--edge",
            "envoy-config/demo/ratelimit-edge.json",
            "--auth",
            "envoy-config/demo/auth.json",
            "--ratelimit",
            "envoy-config/demo/ratelimit-tiers.json",
            "--traffic",
            "envoy-config/demo/traffic.json",
            "--client",
            "203.0.113.9",
        ];
        args.extend_from_slice(extra);
        let output = gatehouse(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout(&output)
    };

    let free = demo(&[
        "--path",
        "/analytics/report",
        "--api-key",
        "demo-free-key",
        "--requests",
        "62",
    ]);
    assert!(
        free.contains("auth: rule analytics -> allowed: consumer demo-free, tier free"),
        "{free}"
    );
    assert!(
        free.contains("limit analytics-plan [key demo-free, tier free: 60 per 60 s"),
        "{free}"
    );
    assert!(free.contains("requests 1-60: forwarded"), "{free}");
    assert!(
        free.contains("requests 61-62: answered 429 by limit analytics-plan"),
        "{free}"
    );

    let anonymous = demo(&["--path", "/accounts/7"]);
    assert!(
        anonymous.contains("-> 401 invalid_request (credential_missing)"),
        "{anonymous}"
    );
    let orders = demo(&["--path", "/api/v1/orders/7?x=1", "--requests", "400"]);
    assert!(
        orders.contains("traffic orders: route orders (weights [95, 5])"),
        "{orders}"
    );
    assert!(orders.contains("forwarded to target monolith"), "{orders}");
    assert!(orders.contains("forwarded to target orders-v2"), "{orders}");
    let bad = gatehouse(&["explain", "--path"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn explain_checks_a_token_against_a_given_key_set_at_a_given_time() {
    // Tokens and keys made by joserfc (shared/tests/data/generate_jwt_vectors.py),
    // valid at the vectors' fixed time.
    let vectors: Value = serde_json::from_slice(
        &std::fs::read(root().join("shared/tests/data/jwt_vectors.json")).unwrap(),
    )
    .unwrap();
    let dir = scratch("explain-token");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, vectors["jwks"].to_string()).unwrap();
    let auth = dir.join("auth.json");
    let config = serde_json::json!({
        "providers": [{"name": "idp", "issuer": vectors["issuer"], "audiences": [vectors["audience"]],
                       "algorithms": ["RS256"], "jwks_uri": {"cluster": "idp", "path": "/jwks"}}],
        "rules": [
            {"name": "close-account", "methods": ["POST"], "path": {"exact": "/accounts/close"},
             "access": "roles", "roles_any": ["admin"]},
            {"name": "accounts", "path": {"prefix": "/accounts/"}, "access": "authenticated"},
        ],
    });
    std::fs::write(&auth, config.to_string()).unwrap();
    let at = "2026-12-03T16:13:29Z"; // the vectors' time, 1796314409
    let explain = |token: &str, extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--auth",
            auth.to_str().unwrap(),
            "--method",
            "POST",
            "--path",
            "/accounts/close",
            "--token",
            token,
        ];
        args.extend_from_slice(extra);
        let output = gatehouse(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout(&output)
    };
    let with_keys = ["--jwks", &format!("idp={}", jwks.display()), "--at", at];
    let token = |name: &str| vectors["tokens"][name].as_str().unwrap().to_string();

    let admin = explain(&token("admin"), &with_keys);
    assert!(
        admin.contains("auth: rule close-account -> allowed: consumer root"),
        "{admin}"
    );
    let user = explain(&token("user"), &with_keys);
    assert!(
        user.contains("auth: rule close-account -> 403 insufficient_scope (role_missing)"),
        "{user}"
    );
    let expired = explain(&token("expired"), &with_keys);
    assert!(expired.contains("(token_expired)"), "{expired}");
    let later = explain(
        &token("admin"),
        &[
            "--jwks",
            &format!("idp={}", jwks.display()),
            "--at",
            "2026-12-03T17:13:29Z",
        ],
    );
    assert!(later.contains("(token_expired)"), "an hour later: {later}");
    let without_keys = explain(&token("admin"), &[]);
    assert!(
        without_keys.contains("whose keys are fetched at run time; pass --jwks idp=FILE"),
        "{without_keys}"
    );
}

#[test]
fn oci_layouts_carry_the_module_with_the_right_media_types_and_digests() {
    let dir = scratch("oci");
    let module = dir.join("filter.wasm");
    // The smallest valid module: magic and version.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let layout = dir.join("layout");
    let pack = |into: &Path| {
        gatehouse(&[
            "oci",
            module.to_str().unwrap(),
            into.to_str().unwrap(),
            "--name",
            "gatehouse-test",
            "--tag",
            "9.9.9",
        ])
    };
    let output = pack(&layout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest_digest = stdout(&output).trim().to_string();

    let sha = |bytes: &[u8]| {
        let hex: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    };
    let blob = |digest: &str| {
        let path = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(sha(&bytes), digest, "{} matches its name", path.display());
        bytes
    };
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(entry["digest"], manifest_digest.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "9.9.9"
    );
    let manifest_bytes = blob(&manifest_digest);
    assert_eq!(entry["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"], "compat",
        "the compat variant Istio and Envoy Gateway pull"
    );
    let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "exactly one layer");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(layers[0]["digest"].as_str().unwrap());
    // The layer is a gzipped tar whose plugin.wasm is the module, and the image
    // configuration names the uncompressed tar as its diff id.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(layer.as_slice()),
        &mut tar,
    )
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha(&tar).as_str());
    let mut archive = tar::Archive::new(tar.as_slice());
    let files: Vec<(String, Vec<u8>)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            (path, content)
        })
        .collect();
    assert_eq!(files.len(), 1, "one file in the layer");
    assert_eq!(files[0].0, "plugin.wasm");
    assert_eq!(
        files[0].1,
        std::fs::read(&module).unwrap(),
        "plugin.wasm is the module"
    );
    assert_eq!(layers[0]["size"], layer.len());
    // Reproducible: the same module packed again has the same manifest digest.
    let again = dir.join("again");
    let repacked = pack(&again);
    assert_eq!(stdout(&repacked).trim(), manifest_digest);

    let not_wasm = dir.join("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let refused = gatehouse(&["oci", not_wasm.to_str().unwrap(), layout.to_str().unwrap()]);
    assert!(!refused.status.success());
    // A directory that is not a layout is never cleared.
    let precious = dir.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), b"keep").unwrap();
    let kept = gatehouse(&["oci", module.to_str().unwrap(), precious.to_str().unwrap()]);
    assert!(!kept.status.success());
    assert!(precious.join("notes.txt").exists());
}
