//! Keys and tokens made by joserfc (`tests/helpers/jose_tool.py`), an independent
//! JOSE implementation: the filter under test never signs its own test tokens.

use crate::{paths, Context, HarnessError, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A signing key and the key set that publishes its public half.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub alg: String,
    pub kid: String,
    pub private: Value,
    pub jwks: Value,
}

fn tool() -> Command {
    let mut command = Command::new(paths::python());
    command.arg(paths::root().join("tests/helpers/jose_tool.py"));
    command
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs() as i64)
        .unwrap_or(0)
}

impl KeyPair {
    /// A fresh key for `alg` (`RS256`, `PS256`, `ES256`, `ES384`, `EdDSA`).
    pub fn generate(alg: &str, kid: &str) -> Result<Self> {
        let output = tool()
            .args(["keys", alg, kid])
            .output()
            .context("run jose_tool.py (make tools installs joserfc)")?;
        if !output.status.success() {
            return Err(HarnessError(format!(
                "jose_tool keys: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let value: Value =
            serde_json::from_slice(&output.stdout).context("jose_tool keys output")?;
        Ok(Self {
            alg: alg.into(),
            kid: kid.into(),
            private: value["private"].clone(),
            jwks: value["jwks"].clone(),
        })
    }

    /// Signs `claims` with a header of this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.sign_with_header(&json!({"alg": self.alg, "kid": self.kid}), claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> Result<String> {
        let request = json!({"key": self.private, "header": header, "claims": claims});
        let mut child = tool()
            .arg("sign")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run jose_tool.py sign")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(request.to_string().as_bytes())
                .context("send sign request")?;
        }
        let output = child.wait_with_output().context("jose_tool sign")?;
        if !output.status.success() {
            return Err(HarnessError(format!(
                "jose_tool sign: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// Key sets of several keys, as a provider publishes them during a rotation.
pub fn jwks_of(keys: &[&KeyPair]) -> Value {
    let all: Vec<Value> = keys
        .iter()
        .flat_map(|key| key.jwks["keys"].as_array().cloned().unwrap_or_default())
        .collect();
    json!({ "keys": all })
}
