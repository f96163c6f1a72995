# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# The bundled offline sample: 1,797 scikit-learn digits at 32x32. No ImageNet weights can be
# downloaded offline, so the sample trains MobileNet from scratch.
SAMPLE_ARGS := --data sample:digits --backbone mobilenet --alpha 0.5 --weights none \
	--image-size 32 --epochs 8 --fine-tune-epochs 0 --learning-rate 0.002 \
	--augmentations rotation,zoom

.PHONY: venv run test test-fast lint compile bench clean

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: $(INSTALLED)
	$(BIN)/imgclf run $(SAMPLE_ARGS) --summary-json runs/summary.json

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/pytest --durations=15

test-fast: $(INSTALLED)
	$(BIN)/pytest -m "not slow"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Speed and memory against the baselines they replace, measured in one run: bench/results.md.
bench: $(INSTALLED)
	$(BIN)/python -m bench.run

compile: $(INSTALLED)
	$(BIN)/imgclf compile -o build/pipeline.yaml

clean:
	rm -rf runs serving build .pytest_cache
