#!/usr/bin/env python3
"""Checks the Istio manifests: every WasmPlugin against the WasmPlugin resource's
schema (tests/data/istio/wasmplugin-crd.yaml, Istio's own CRD), the CRD's CEL rules
that matter here (url scheme; one of selector, targetRef, targetRefs; no wildcard
labels), and every pluginConfig with the filter's own validation (`gatehouse check`).
With --digests DIR, each rendered manifest's sha256 must be the digest that
`gatehouse oci` wrote for its module (DIR/<module>.digest), and the module must
come out of its layout (DIR/<module>) the way Istio's image fetcher takes it,
byte-for-byte the built DIR/../<module>.wasm.

usage: check_istio.py --cli PATH [--digests DIR] manifest.yaml...
Exit 1 with every problem listed when any check fails.
"""

import copy
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from urllib.parse import urlparse

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRD = os.path.join(ROOT, "tests/data/istio/wasmplugin-crd.yaml")


def openapi_to_jsonschema(node):
    """The CRD's OpenAPI v3 schema as JSON Schema: `nullable` becomes a null type,
    Kubernetes extensions (x-kubernetes-*) are dropped (the CEL rules are checked by
    hand below)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        out[key] = openapi_to_jsonschema(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def load_schema():
    with open(CRD) as handle:
        crd = yaml.safe_load(handle)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    versions = {}
    for version in crd["spec"]["versions"]:
        if version.get("served"):
            schema = openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
            versions[f"{group}/{version['name']}"] = schema
    return kind, versions


def cel_rules(spec):
    problems = []
    url = spec.get("url", "")
    scheme = urlparse(url if "://" in url else "http://" + url).scheme
    if scheme not in ("", "http", "https", "oci", "file"):
        problems.append(f"spec.url: scheme {scheme!r} is not one of http, https, file, oci")
    chosen = sum(1 for key in ("selector", "targetRef", "targetRefs") if key in spec)
    if chosen > 1:
        problems.append("spec: only one of targetRefs or selector can be set")
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    for key, value in labels.items():
        if "*" in key or "*" in str(value) or key == "":
            problems.append(f"spec.selector.matchLabels: {key!r}: no wildcard or empty key")
    return problems


def module_of(plugin_name):
    # gatehouse.ratelimit-edge -> ratelimit
    return plugin_name.split(".", 1)[-1].split("-", 1)[0]


def check_plugin_config(cli, name, spec):
    plugin = spec.get("pluginName", "")
    if not plugin.startswith("gatehouse."):
        return [f"{name}: spec.pluginName must be gatehouse.<instance>, not {plugin!r}"]
    config = spec.get("pluginConfig")
    if config is None:
        return [f"{name}: no spec.pluginConfig"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
        path = handle.name
    try:
        result = subprocess.run([cli, "check", module_of(plugin), path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if result.returncode != 0:
        return [f"{name}: pluginConfig refused by the {module_of(plugin)} filter: "
                + (result.stdout + result.stderr).strip().replace(path, "pluginConfig")]
    return []


def pulled_module(layout, manifest_digest):
    """The module as Istio's image fetcher takes it from the layout: the manifest by
    digest, its last layer a gzipped tar (the *compat* variant), plugin.wasm inside."""
    def blob(digest):
        data = open(os.path.join(layout, "blobs", "sha256", digest.removeprefix("sha256:")), "rb").read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"blob {digest} does not match its digest")
        return data
    index = json.load(open(os.path.join(layout, "index.json")))
    if not any(entry.get("digest") == manifest_digest for entry in index.get("manifests", [])):
        raise ValueError(f"index.json does not list {manifest_digest}")
    manifest = json.loads(blob(manifest_digest))
    if manifest.get("annotations", {}).get("module.wasm.image/variant") != "compat":
        raise ValueError("manifest lacks the module.wasm.image/variant=compat annotation")
    layers = manifest.get("layers", [])
    if not layers or layers[-1].get("mediaType") != "application/vnd.oci.image.layer.v1.tar+gzip":
        raise ValueError(f"last layer is not application/vnd.oci.image.layer.v1.tar+gzip: {layers}")
    archive = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layers[-1]["digest"]))))
    for member in archive.getmembers():
        if os.path.basename(member.name) == "plugin.wasm":
            return archive.extractfile(member).read()
    raise ValueError("plugin.wasm not found in the layer")


def main(argv):
    cli = None
    digests = None
    files = []
    args = iter(argv)
    for arg in args:
        if arg == "--cli":
            cli = next(args, None)
        elif arg == "--digests":
            digests = next(args, None)
        else:
            files.append(arg)
    if not cli or not files:
        sys.exit(__doc__)
    kind, versions = load_schema()
    problems = []
    plugins = 0
    for file in files:
        with open(file) as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if doc]
        for document in documents:
            name = f"{file}: {document.get('kind')} {document.get('metadata', {}).get('name')}"
            if document.get("kind") != kind:
                if not document.get("apiVersion") or not document.get("metadata", {}).get("name"):
                    problems.append(f"{name}: apiVersion and metadata.name are required")
                continue
            plugins += 1
            schema = versions.get(document.get("apiVersion"))
            if schema is None:
                problems.append(f"{name}: apiVersion {document.get('apiVersion')!r} is not served by the CRD")
                continue
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
                where = ".".join(str(part) for part in error.path) or "."
                problems.append(f"{name}: {where}: {error.message}")
            spec = document.get("spec", {})
            problems += [f"{name}: {problem}" for problem in cel_rules(spec)]
            problems += check_plugin_config(cli, name, spec)
            if digests is not None:
                module = urlparse(spec.get("url", "")).path.rsplit("/", 1)[-1].split(":", 1)[0]
                digest_file = os.path.join(digests, f"{module}.digest")
                try:
                    expected = open(digest_file).read().strip().removeprefix("sha256:")
                except OSError:
                    problems.append(f"{name}: no digest for module {module!r} ({digest_file})")
                    continue
                if spec.get("sha256") != expected:
                    problems.append(f"{name}: sha256 {spec.get('sha256')!r} is not the module's digest {expected}")
                    continue
                built = os.path.join(os.path.dirname(os.path.abspath(digests)), f"{module}.wasm")
                try:
                    pulled = pulled_module(os.path.join(digests, module), "sha256:" + expected)
                    if pulled != open(built, "rb").read():
                        problems.append(f"{name}: the image's plugin.wasm is not {built}")
                except (OSError, ValueError, tarfile.TarError) as error:
                    problems.append(f"{name}: image {module} cannot be pulled as Istio does: {error}")
    for problem in problems:
        print(problem)
    print(f"{plugins} WasmPlugin manifests checked in {len(files)} files, {len(problems)} problems")
    return 1 if problems or plugins == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
