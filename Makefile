# Lepton: every command a user or CI needs. `make demo` and `make test` set
# themselves up, so each is the only command a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lepton-setup
PACKAGES := libs/lepton-proto libs/lepton-core libs/lepton-ml libs/lepton-platform libs/lepton-ai examples/custom-model \
	services/data services/trainer services/evaluator services/registry services/deployer services/monitor \
	services/gateway services/console
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: setup protos check test test-unit test-faults fuzz up demo bench bench-serve bench-journey bench-console bench-load lock clean

setup: $(STAMP)

# Pinned, in one pass: Debian's packages (the gateway's nginx, Chromium for the console's tests), the full lock,
# our packages editable without deps, and the npm packages the browser tests inject (axe-core).
$(STAMP): requirements/lock.txt requirements/debian.txt tools/axe/package-lock.json $(PYPROJECTS)
	bash tools/system_packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check pip==25.3
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat $(addprefix -e ,$(PACKAGES))
	$(BIN)/python tools/smoke_imports.py
	$(BIN)/python tools/npm_fetch.py tools/axe/package-lock.json build/npm
	touch $@

# Regenerates the checked-in protobuf/gRPC code from protos/.
protos: setup
	bash tools/gen_protos.sh

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# Each package's pyproject.toml declares exactly what its code imports.
	@for p in $(PACKAGES); do (cd $$p && $(CURDIR)/$(BIN)/deptry . >/dev/null 2>&1) || (cd $$p && echo "deptry: $$p" && $(CURDIR)/$(BIN)/deptry .) || exit 1; done; echo "deptry: $(words $(PACKAGES)) packages declare what they import"
	@# The layers: services never import each other, infrastructure imports no model runtime, ...
	$(BIN)/lint-imports --no-cache
	$(BIN)/python tools/check_sizes.py
	$(BIN)/python tools/check_events_doc.py
	tmp=$$(mktemp -d) && bash tools/gen_protos.sh $$tmp >/dev/null && \
		diff -r $$tmp/lepton libs/lepton-proto/src/lepton -x __pycache__ && rm -rf $$tmp && echo "protos up to date"

# --durations: the slowest setups and tests in every run's log, to keep the suite's time in view.
test: setup
	$(BIN)/python -m pytest --durations=30

# What the platform survives (issue 19): services killed under users' calls, on platforms of their own.
test-faults: setup
	$(BIN)/python -m pytest tests/faults -p no:randomly

# The fast tier: every test that needs no nats-server, Triton or service process (under a minute).
test-unit: setup
	$(BIN)/python -m pytest -m "not integration"

# The security fuzz of every RPC, longer than make test's run (5 examples an RPC, fixed seed):
# LEPTON_FUZZ_EXAMPLES (default here 100, about 12,000 requests) and a new seed each run
# (LEPTON_FUZZ_SEED=<printed seed> replays one).
fuzz: setup
	LEPTON_FUZZ_EXAMPLES=$${LEPTON_FUZZ_EXAMPLES:-100} LEPTON_FUZZ_SEED=$${LEPTON_FUZZ_SEED:-random} \
		$(BIN)/python -m pytest tests/security -p no:randomly -s

# The whole platform in the foreground (NATS, Triton, six services) until Ctrl-C.
up: setup
	$(BIN)/python -m lepton_platform.embedded

demo: setup
	$(BIN)/python -m lepton_platform.demo

bench: setup
	$(BIN)/python bench/run.py
	$(BIN)/python bench/train_bench.py

MLSERVER_VENV := .venv-mlserver

# A benchmark's peer (MLServer, MLflow) lives in its own venv (git-ignored), pinned by its lock:
# $(call peer-venv,VENV,LOCK).
define peer-venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --disable-pip-version-check pip==25.3
	$(1)/bin/python -m pip install -q --disable-pip-version-check -r $(2)
	touch $(1)/.lepton-setup
endef

$(MLSERVER_VENV)/.lepton-setup: requirements/mlserver-lock.txt
	$(call peer-venv,$(MLSERVER_VENV),$<)

# Serving: our deployment on Triton vs hand-loaded Triton, MLServer, a gRPC echo floor (~3.5 min).
# Both load generators, one after the other: the p99 of 8 client threads is partly the client's.
bench-serve: setup $(MLSERVER_VENV)/.lepton-setup
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/serve_bench.py --client asyncio

MLFLOW_VENV := .venv-mlflow

$(MLFLOW_VENV)/.lepton-setup: requirements/mlflow-lock.txt
	$(call peer-venv,$(MLFLOW_VENV),$<)

# User journey: CSV -> dataset -> trained -> evaluated -> registered -> deployed -> first prediction,
# through the SDK on the running platform vs the same journey with MLflow (~1 min).
bench-journey: setup $(MLFLOW_VENV)/.lepton-setup
	$(BIN)/python bench/journey_bench.py

# Console: each page's first render in headless Chromium on a platform holding 50 datasets,
# 200 model versions and 20 deployments, against the bare SDK calls behind it (~10-20 min).
bench-console: setup
	$(BIN)/python bench/console_bench.py

# Load: what the embedded store's fsync-every-write costs against nats-server's default, side by side
# (docs/operations.md); 100 pipelines at once with 1, 2 and 4 trainer processes, throughput against the
# 1-trainer round and each stage's p50/p99 (docs/benchmarks.md); 5 minutes of serving at concurrency 16; the
# same 100 pipelines (2 trainers) on one nats-server and on a 3-node cluster, in one run, as ratios; what the
# monitor's windows hold at two log rates, against keeping every log id.
bench-load: setup
	$(BIN)/python bench/load/nats_sync_bench.py --pipeline
	$(BIN)/python bench/load/serving_soak.py
	$(BIN)/python bench/load/monitor_memory.py
	$(BIN)/python bench/load/pipelines.py --json bench/results/load-pipelines-latest.json
	$(BIN)/python bench/load/pipelines.py --nats-nodes 1,3 --trainers 2 --json bench/results/load-cluster-latest.json

# Re-resolves requirements/base.in into the exact lock (needs the network).
lock:
	rm -rf /tmp/lepton-lock && $(PYTHON) -m venv /tmp/lepton-lock
	/tmp/lepton-lock/bin/pip install -q pip==25.3 && /tmp/lepton-lock/bin/pip install -q -r requirements/base.in
	(echo "# Full pinned lock of every package in the venv, made from base.in by 'make lock'. Do not edit by hand."; \
		/tmp/lepton-lock/bin/pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//') > requirements/lock.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
