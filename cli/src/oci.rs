//! `gatehouse oci`: a module packaged as a Wasm OCI image in an OCI image-layout
//! directory, which `oras`, `crane` and `skopeo` can push, and which Istio's and
//! Envoy Gateway's image fetchers pull.
//!
//! The image is the *compat* variant of the Wasm image specification: a standard OCI
//! image whose one layer (`application/vnd.oci.image.layer.v1.tar+gzip`) is a tar
//! holding `plugin.wasm`, with the manifest annotation
//! `module.wasm.image/variant: compat`. Both fetchers accept it (the *oci* variant
//! with custom media types needs two layers there), and so does every registry and
//! tool that handles container images. The layer is byte-for-byte reproducible: the
//! same module always gives the same digests.

use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file the fetchers look for in the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

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

/// The layer: a tar holding `plugin.wasm` (owner 0, mode 0644, time 0), and the
/// same tar gzipped (no name, time 0), so that equal modules give equal bytes.
fn layer(wasm: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(PLUGIN_FILE)
        .map_err(|error| format!("tar header: {error}"))?;
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    let mut archive = tar::Builder::new(Vec::new());
    archive
        .append(&header, wasm)
        .map_err(|error| format!("tar: {error}"))?;
    let tar = archive
        .into_inner()
        .map_err(|error| format!("tar: {error}"))?;

    let mut gzip = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gzip.write_all(&tar)
        .map_err(|error| format!("gzip: {error}"))?;
    let compressed = gzip.finish().map_err(|error| format!("gzip: {error}"))?;
    Ok((tar, compressed))
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

    let (tar, compressed) = layer(&wasm)?;
    // A standard image configuration: the layer's uncompressed digest is its diff id.
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(&tar)]},
    }))
    .map_err(|error| error.to_string())?;
    let config_digest = write_blob(layout, &config)?;
    let layer_digest = write_blob(layout, &compressed)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": LAYER_TYPE,
            "digest": layer_digest,
            "size": compressed.len(),
        }],
        "annotations": {
            "module.wasm.image/variant": "compat",
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
