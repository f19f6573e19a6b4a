//! Filters delivered by Extension Config Discovery from a watched directory.
//!
//! Each filter instance is one resource file, `<instance>.json`, in a directory Envoy
//! watches. Replacing it (write beside, then rename over) swaps the filter in the
//! running Envoy. Envoy ignores a resource that did not change, so modules are copied
//! under a name that carries a hash of their content: a new module is a new file.

use crate::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// The type URL every filter resource has.
pub const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// One filter instance: which module, which root, which configuration.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// Instance name; the resource is `gatehouse.<instance>`. The rate limiter loaded
    /// twice has two instances of one module.
    pub instance: String,
    /// The module file to load.
    pub module: PathBuf,
    /// The filter's JSON configuration.
    pub config: String,
}

impl FilterSpec {
    pub fn new(instance: &str, module: PathBuf, config: &str) -> Self {
        Self {
            instance: instance.to_string(),
            module,
            config: config.to_string(),
        }
    }

    /// The ECDS resource name Envoy's filter chain refers to.
    pub fn resource_name(&self) -> String {
        format!("gatehouse.{}", self.instance)
    }
}

/// Path of an instance's resource file in `directory`.
pub fn resource_path(directory: &Path, instance: &str) -> PathBuf {
    directory.join(format!("{instance}.json"))
}

/// Copies the module into `directory/modules` under a content-addressed name and
/// atomically replaces the instance's resource file. Returns the module's new path.
pub fn install(directory: &Path, spec: &FilterSpec) -> Result<PathBuf> {
    let bytes = fs::read(&spec.module).context(format!("read module {}", spec.module.display()))?;
    let digest = Sha256::digest(&bytes);
    let short: String = digest
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let stem = spec
        .module
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("filter");
    let modules = directory.join("modules");
    fs::create_dir_all(&modules).context(format!("create {}", modules.display()))?;
    let module = modules.join(format!("{stem}-{short}.wasm"));
    if !module.exists() {
        let partial = module.with_extension("wasm.partial");
        fs::write(&partial, &bytes).context(format!("write {}", partial.display()))?;
        fs::rename(&partial, &module).context(format!("rename {}", module.display()))?;
    }
    let module = fs::canonicalize(&module).context("resolve module path")?;

    let resource = resource(spec, &module);
    let target = resource_path(directory, &spec.instance);
    let partial = directory.join(format!(".{}.json.partial", spec.instance));
    fs::write(&partial, resource.to_string()).context(format!("write {}", partial.display()))?;
    fs::rename(&partial, &target).context(format!("rename over {}", target.display()))?;
    Ok(module)
}

/// The discovery response holding one filter resource.
pub fn resource(spec: &FilterSpec, module: &Path) -> Value {
    let name = spec.resource_name();
    let digest = Sha256::digest(format!("{}\n{}", module.display(), spec.config));
    let version: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": {
                "@type": WASM_TYPE_URL,
                "config": {
                    "name": name,
                    "root_id": spec.instance,
                    "vm_config": {
                        "vm_id": name,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": module.display().to_string()}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": spec.config
                    },
                    "failure_policy": "FAIL_RELOAD"
                }
            }
        }]
    })
}

/// The HTTP filter entry that loads an instance through discovery from `directory`.
pub fn discovered_filter(directory: &Path, spec: &FilterSpec) -> Value {
    json!({
        "name": spec.resource_name(),
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": resource_path(directory, &spec.instance).display().to_string(),
                    "watched_directory": {"path": directory.display().to_string()}
                }
            },
            "type_urls": [WASM_TYPE_URL]
        }
    })
}
