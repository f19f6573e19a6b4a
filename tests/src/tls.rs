//! TLS for the scenarios: certificates made by `tests/helpers/make_certs.py`, a
//! backend that speaks only mutual TLS (`tests/helpers/tls_echo.py`), and an HTTPS
//! client that checks the gateway's certificate (`tests/helpers/https_get.py`).

use crate::envoy::kill_with_parent;
use crate::{paths, Context, HarnessError, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Makes a CA, the gateway's server and client certificates and a backend's, in `dir`.
pub fn certificates(dir: &Path) -> Result<PathBuf> {
    let output = Command::new(paths::python())
        .arg(paths::root().join("tests/helpers/make_certs.py"))
        .arg(dir)
        .output()
        .context("run make_certs.py (make tools installs cryptography)")?;
    if !output.status.success() {
        return Err(HarnessError(format!(
            "make_certs.py: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(dir.to_path_buf())
}

/// The transport socket Envoy terminates TLS with, from `dir`'s gateway certificate.
pub fn downstream_tls(dir: &Path) -> Value {
    serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": dir.join("gateway.pem").display().to_string()},
                "private_key": {"filename": dir.join("gateway-key.pem").display().to_string()}
            }]}
        }
    })
}

/// The transport socket Envoy uses towards a mutual-TLS backend: the gateway's
/// client certificate, and the backend's checked against the CA and its name.
pub fn upstream_mtls(dir: &Path) -> Value {
    serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "accounts.gatehouse.test",
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": dir.join("gateway-client.pem").display().to_string()},
                    "private_key": {"filename": dir.join("gateway-client-key.pem").display().to_string()}
                }],
                "validation_context": {
                    "trusted_ca": {"filename": dir.join("ca.pem").display().to_string()},
                    "match_typed_subject_alt_names": [{
                        "san_type": "DNS",
                        "matcher": {"exact": "accounts.gatehouse.test"}
                    }]
                }
            }
        }
    })
}

/// A backend that accepts only clients with a certificate of the CA and echoes the
/// request and the client certificate's subject; stopped when dropped.
pub struct TlsEcho {
    child: Child,
    address: SocketAddr,
}

impl TlsEcho {
    pub fn start(name: &str, certs: &Path) -> Result<Self> {
        Self::start_on(name, certs, 0)
    }

    pub fn start_on(name: &str, certs: &Path, port: u16) -> Result<Self> {
        let mut command = Command::new(paths::python());
        command
            .arg(paths::root().join("tests/helpers/tls_echo.py"))
            .arg(name)
            .arg(port.to_string())
            .arg(certs.join("backend.pem"))
            .arg(certs.join("backend-key.pem"))
            .arg(certs.join("ca.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        kill_with_parent(&mut command);
        let mut child = command.spawn().context("start tls_echo.py")?;
        let stdout = child.stdout.take().context("tls_echo.py output")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("read tls_echo.py port")?;
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .context(format!("tls_echo.py said {line:?}"))?;
        Ok(Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTPS GET checked against `ca`: `{"status", "headers", "body"}`.
pub fn https_get(url: &str, ca: &Path, headers: &[(&str, &str)]) -> Result<Value> {
    let output = Command::new(paths::python())
        .arg(paths::root().join("tests/helpers/https_get.py"))
        .arg(url)
        .arg(ca)
        .args(
            headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}")),
        )
        .output()
        .context("run https_get.py")?;
    if !output.status.success() {
        return Err(HarnessError(format!(
            "https_get.py {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    serde_json::from_slice(&output.stdout).context("https_get.py output")
}
