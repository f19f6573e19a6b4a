#!/usr/bin/env python3
"""Checks the gatehouse filter configurations written inside Envoy bootstraps (the
benchmark configurations carry theirs inline): every `envoy.filters.http.wasm`
filter whose `root_id` is a gatehouse filter has its `configuration` value run
through the filter's own validation (`gatehouse check`). Other wasm filters (the
benchmarks' do-nothing filter) are skipped by name.

usage: check_envoy_configs.py --cli PATH bootstrap.yaml...
Exit 1 with every refusal listed when any configuration is refused.
"""

import os
import subprocess
import sys
import tempfile

import yaml

FILTERS = {"audit", "auth", "ratelimit", "traffic"}
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def wasm_configs(node):
    """Every (root_id, configuration text) of a wasm HTTP filter under `node`."""
    if isinstance(node, list):
        for item in node:
            yield from wasm_configs(item)
    elif isinstance(node, dict):
        if node.get("@type") == WASM:
            config = node.get("config") or {}
            value = (config.get("configuration") or {}).get("value", "")
            yield config.get("root_id", ""), value
        for item in node.values():
            yield from wasm_configs(item)


def main(argv):
    if len(argv) < 3 or argv[0] != "--cli":
        sys.exit(__doc__)
    cli, files = argv[1], argv[2:]
    refused, checked = [], 0
    for path in files:
        with open(path) as text:
            bootstrap = yaml.safe_load(text)
        for index, (root_id, value) in enumerate(wasm_configs(bootstrap)):
            if root_id.split("-")[0] not in FILTERS:
                continue
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
                out.write(value)
            try:
                result = subprocess.run([cli, "check", root_id, out.name],
                                        capture_output=True, text=True)
            finally:
                os.unlink(out.name)
            checked += 1
            where = f"{path}: wasm filter {index} ({root_id})"
            if result.returncode != 0:
                refused.append(f"{where}: {result.stdout.strip() or result.stderr.strip()}")
            else:
                print(f"ok      {where}")
    for line in refused:
        print(f"refused {line}")
    if refused:
        sys.exit(1)
    print(f"{checked} embedded filter configurations checked")


if __name__ == "__main__":
    main(sys.argv[1:])
