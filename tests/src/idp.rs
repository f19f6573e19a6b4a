//! The identity provider (`idp/server.mjs`, oidc-provider) as a child process.

use crate::{paths, Context, HarnessError, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A running identity provider; killed when dropped.
pub struct Idp {
    child: Child,
    issuer: String,
    address: SocketAddr,
}

impl Idp {
    /// Starts the provider on `port` (0: one the system picks), signing with `alg`.
    pub fn start(port: u16, alg: &str) -> Result<Self> {
        let mut command = Command::new(paths::node());
        command
            .arg(paths::root().join("idp/server.mjs"))
            .args(["--port", &port.to_string(), "--alg", alg])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        crate::envoy::kill_with_parent(&mut command);
        let mut child = command
            .spawn()
            .context("start the identity provider (make tools installs it)")?;
        let stdout = child.stdout.take().context("identity provider output")?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let started: serde_json::Value = match read {
            Ok(count) if count > 0 => {
                serde_json::from_str(&line).context("identity provider start line")?
            }
            _ => {
                let _ = child.kill();
                return Err(HarnessError(
                    "the identity provider exited while starting".into(),
                ));
            }
        };
        let issuer = started["issuer"].as_str().context("issuer")?.to_string();
        let port =
            u16::try_from(started["port"].as_u64().context("port")?).context("port range")?;
        Ok(Self {
            child,
            issuer,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A fresh access token for `demo-user` or `demo-admin`.
    pub fn token(&self, client: &str) -> Result<String> {
        let output = Command::new(paths::node())
            .arg(paths::root().join("idp/token.mjs"))
            .args([client, &self.issuer])
            .output()
            .context("run idp/token.mjs")?;
        if !output.status.success() {
            return Err(HarnessError(format!(
                "token: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Signs with a fresh key from now on; `keep` leaves the old key published.
    pub fn rotate(&self, keep: bool) -> Result<()> {
        let url = format!(
            "{}/admin/rotate{}",
            self.issuer,
            if keep { "?keep=1" } else { "" }
        );
        let mut response = crate::client::agent()
            .post(&url)
            .send_empty()
            .context("rotate keys")?;
        let _ = response.body_mut().read_to_string();
        Ok(())
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
