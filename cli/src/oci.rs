//! `gatehouse oci`: a module packaged as a Wasm OCI artifact in an OCI image-layout
//! directory, which `oras`, `crane` and `skopeo` can push, and which Istio's and
//! Envoy Gateway's image fetchers pull: one layer of media type
//! `application/vnd.module.wasm.content.layer.v1+wasm` holding the module itself.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Result<String, String> {
    let digest = digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    let dir = layout.join("blobs").join("sha256");
    fs::create_dir_all(&dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
    fs::write(dir.join(hex), bytes).map_err(|error| format!("write blob {hex}: {error}"))?;
    Ok(digest)
}

/// Writes the layout for `module` into `layout` (replacing it) and returns the
/// manifest's digest, which is what a WasmPlugin's `sha256` names.
pub fn package(module: &Path, layout: &Path, name: &str, tag: &str) -> Result<String, String> {
    let wasm = fs::read(module).map_err(|error| format!("read {}: {error}", module.display()))?;
    if !wasm.starts_with(b"\0asm") {
        return Err(format!("{} is not a WebAssembly module", module.display()));
    }
    if layout.exists() {
        let empty = fs::read_dir(layout)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if !empty && !layout.join("oci-layout").exists() {
            return Err(format!(
                "{} exists and is not an OCI layout: not replacing it",
                layout.display()
            ));
        }
        fs::remove_dir_all(layout)
            .map_err(|error| format!("clear {}: {error}", layout.display()))?;
    }
    fs::create_dir_all(layout).map_err(|error| format!("create {}: {error}", layout.display()))?;

    let config = serde_json::to_vec(&json!({
        "type": "envoy_proxy",
        "abiVersions": ["v0.2.1"],
        "rootIds": [name],
    }))
    .map_err(|error| error.to_string())?;
    let config_digest = write_blob(layout, &config)?;
    let layer_digest = write_blob(layout, &wasm)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": LAYER_TYPE,
            "digest": layer_digest,
            "size": wasm.len(),
            "annotations": {"org.opencontainers.image.title": format!("{name}.wasm")},
        }],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": tag,
        },
    }))
    .map_err(|error| error.to_string())?;
    let manifest_digest = write_blob(layout, &manifest)?;
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))
    .map_err(|error| error.to_string())?;
    fs::write(layout.join("index.json"), index)
        .map_err(|error| format!("write index.json: {error}"))?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(|error| format!("write oci-layout: {error}"))?;
    Ok(manifest_digest)
}
