# forecast: `make help` lists what you can do.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.DEFAULT_GOAL := help
.PHONY: help venv run test test-scale fuzz lint format bench bench-generate bench-scale bench-features bench-explain bench-revenue bench-service bench-real book-checks docs lock clean train mlflow-ui cards team drill

help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create the environment in .venv (done by run and test when needed)

run: $(STAMP) ## Generate the default world, train and gate the models, forecast the quarter, serve
	$(BIN)/forecast data generate
	$(BIN)/forecast train win
	$(BIN)/forecast train churn
	$(BIN)/forecast revenue --level team
	@KEY=$$($(BIN)/forecast keys create --role admin --label "make run") && \
	  echo "forecast service: http://127.0.0.1:8000 (OpenAPI docs: http://127.0.0.1:8000/docs)" && \
	  echo "dashboard: http://127.0.0.1:8000/dashboard (sign in with the key: $$KEY)" && \
	  echo "try: curl -s -H 'X-API-Key: $$KEY' -H 'Content-Type: application/json' -d '{\"deals\": [{\"deal_id\": \"CRM-1\", \"stage\": \"proposal\", \"amount\": 48000, \"created_at\": \"2026-10-01T09:00:00Z\", \"expected_close\": \"2026-12-18\"}]}' http://127.0.0.1:8000/v1/deals:score"
	$(BIN)/python -m service.serve --host 127.0.0.1 --port 8000

# The project's MLflow store, from settings (FORECAST_HOME / FORECAST_TRACKING_URI), never cwd's.
TRACKING_URI = $(shell $(BIN)/python -c 'from forecast.settings import get_settings as s; print(s().mlflow_tracking_uri)')

train: $(STAMP) ## Train the deal win model on the stored CRM via `mlflow run` (offline), then gate it
	$(BIN)/python -c 'from forecast.training.shared import ensure_experiment; ensure_experiment("deal-win")'
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI="$(TRACKING_URI)" \
		$(BIN)/mlflow run . -e train_win --env-manager local --experiment-name deal-win

cards: $(STAMP) ## Copy the model cards of the last runs ($$FORECAST_HOME/models) into models/
	cp "$$($(BIN)/python -c 'from forecast.training.shared import default_card_dir as d; print(d())')"/*.md models/

team: $(STAMP) ## An MLflow server on PostgreSQL and two service instances switching champions together (docs/deploy.md)
	$(BIN)/python -m deploy.team

drill: $(STAMP) ## Every fault under load (worker killed, PostgreSQL away, SIGTERM, wrong model, spool full): answered vs logged
	$(BIN)/python -m deploy.drill

mlflow-ui: $(STAMP) ## Open the MLflow UI on the local store at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "$(TRACKING_URI)" --host 127.0.0.1

test: $(STAMP) ## Run the whole test suite (PostgreSQL tests need FORECAST_TEST_POSTGRES_URL)
	$(BIN)/ruff check src service tests benchmarks deploy
	$(BIN)/ruff format --check src service tests benchmarks deploy
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile --durations=25

test-scale: $(STAMP) ## The opt-in tier on large worlds: 200,000 deals in parts on a LocalCluster equal to one process
	$(BIN)/pytest -m scale -n 0 -q

fuzz: $(STAMP) ## schemathesis over the service's OpenAPI schema, 1,000 cases per operation
	FORECAST_FUZZ_CASES=$${FORECAST_FUZZ_CASES:-1000} $(BIN)/pytest tests/service/test_fuzz.py -n 0 -s -q

lint: $(STAMP) ## Lint, check formatting and types
	$(BIN)/ruff check src service tests benchmarks deploy
	$(BIN)/ruff format --check src service tests benchmarks deploy
	$(BIN)/mypy

format: $(STAMP) ## Format the code and fix what ruff can
	$(BIN)/ruff check --fix src service tests benchmarks deploy
	$(BIN)/ruff format src service tests benchmarks deploy

bench: bench-generate bench-features bench-explain bench-revenue ## Run the main benchmarks

bench-service: $(STAMP) ## The service (1 deal with reasons) vs `mlflow models serve`, 2 workers each, concurrency 8; then with 4 heavy scenarios running
	$(BIN)/python benchmarks/serving.py --workers 2 --heavy-scenarios 4

bench-revenue: $(STAMP) ## Revenue simulation: 100,000 open deals x 10,000 draws over the tree
	$(BIN)/python benchmarks/revenue_simulation.py

bench-scale: $(STAMP) ## 1,000,000 and 5,000,000 deals end to end, one process vs a LocalCluster of 2 workers (an hour or more)
	$(BIN)/python benchmarks/scale.py --deals 1000000 --parts 20 --workers 2 --memory-limit 6GB
	$(BIN)/python benchmarks/scale.py --deals 5000000 --parts 50 --workers 2 --memory-limit 6GB

bench-features: $(STAMP) ## Point-in-time features for about 1,000,000 snapshots
	$(BIN)/python benchmarks/features.py --deals 200000

bench-real: $(STAMP) ## The sets of ../shared/data through their mappings: the trained model vs the references on the same rows, into docs/benchmarks.md
	@# the lock's versions as constraints (pip would ask hashes of the benchmark's extras too)
	grep -o '^[^ #]*==[^ ]*' requirements/dev.lock > $(VENV)/pins.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/pins.txt -r benchmarks/requirements-clv.txt
	PYTENSOR_FLAGS=blas__ldflags= $(BIN)/python benchmarks/shared_data.py --write-docs

bench-explain: $(STAMP) ## Reasons and recommendations vs LightGBM SHAP and shap.TreeExplainer
	$(BIN)/python benchmarks/explain.py

book-checks: $(STAMP) ## Reasons and actions checked over the stored CRM's whole open book (after `make run`)
	$(BIN)/python benchmarks/book_checks.py

bench-generate: $(STAMP) ## Generate and import 1,000,000 deals: time and peak memory
	$(BIN)/python benchmarks/generate_and_import.py --deals 1000000

docs: $(STAMP) ## Re-render docs/data-contract.md from the schema
	$(BIN)/python -m forecast.data.contract_doc docs/data-contract.md

# Pins with hashes, resolved by uv: the dev lock (what `make venv` installs) first, then the
# runtime lock (what a deployment installs) within it, so both pin the same versions.
LOCK = uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --no-annotate \
	--custom-compile-command "make lock" --quiet

lock: ## Re-pin requirements/dev.lock and requirements/runtime.lock (hashed) from pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet "uv>=0.5"
	PATH="$(abspath .lock-venv/bin):$$PATH" $(LOCK) --extra dev --upgrade -o requirements/dev.lock
	PATH="$(abspath .lock-venv/bin):$$PATH" $(LOCK) -c requirements/dev.lock -o requirements/runtime.lock
	rm -rf .lock-venv

clean: ## Remove the environment and caches (not your store in ~/.forecast)
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
