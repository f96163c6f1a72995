# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The pinned runtime dependencies the tests and the step images install.
CONSTRAINTS := containers/constraints.txt

# The cluster path: images, the compiled pipeline, a run, a nightly schedule.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/imgclf
TAG ?= $(VERSION)
STEP_IMAGE := $(REGISTRY)/imgclf:$(TAG)
LIGHT_IMAGE := $(REGISTRY)/imgclf-light:$(TAG)
GPU_IMAGE := $(REGISTRY)/imgclf-gpu:$(TAG)
PLATFORMS ?= linux/amd64
PIPELINE ?= build/pipeline.yaml
# Where the GPU node pool is: generic (the GPU Operator's label), gke, eks or aks.
PRESET ?=
COMPILE_FLAGS ?=
KFP_ENDPOINT ?= http://localhost:8080
# The profile namespace on multi-user Kubeflow; a token comes from $KFP_EXISTING_TOKEN.
NAMESPACE ?= kubeflow
EXPERIMENT ?= imgclf
RUN_NAME ?= imgclf-$(shell date -u +%Y%m%d-%H%M%S)
SCHEDULE_NAME ?= imgclf-nightly
# KFP's six-field cron, seconds first, in UTC: 02:00 every night.
CRON ?= 0 0 2 * * *
# Pipeline parameters beyond the data and the serving root, as NAME=VALUE words.
PARAMS ?=
RUN_PARAMETERS = data_uri=$(DATA_URI) serving_root=$(SERVING_ROOT) $(PARAMS)

.PHONY: venv run test test-fast lint compile bench bench-quality clean images image image-gpu-standin \
	run-containers submit \
	schedule run-parameters

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

# The bundled offline sample (1,797 scikit-learn digits at 32x32), with the settings it carries
# (components/data/sample.py): MobileNet from scratch, as no ImageNet weights can be had offline.
run: $(INSTALLED)
	$(BIN)/imgclf run --summary-json runs/summary.json

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist worksteal --durations=15

test-fast: $(INSTALLED)
	$(BIN)/pytest -m "not slow"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Speed and memory against the baselines they replace, measured in one run: bench/results.md.
bench: $(INSTALLED)
	$(BIN)/python -m bench.run

# Our defaults against the seeds' recipe and a linear probe on several data sets, medians over
# seeds: bench/quality.md. DATASETS=two-class,few-per-class,digits,clothing (clothing: an hour
# a seed on 2 cores).
DATASETS ?= two-class,few-per-class,digits
bench-quality: $(INSTALLED)
	$(BIN)/python -m bench.quality --datasets $(DATASETS)

compile: $(INSTALLED)
	$(BIN)/imgclf compile -o $(PIPELINE) --image $(STEP_IMAGE) --light-image $(LIGHT_IMAGE) \
		--gpu-image $(GPU_IMAGE) $(if $(PRESET),--preset $(PRESET)) $(COMPILE_FLAGS)

# Builds and pushes the CPU step image, the light image and the GPU image (docker buildx,
# logged in to REGISTRY).
images:
	docker buildx build --platform $(PLATFORMS) -f containers/Dockerfile \
		--build-arg IMGCLF_VERSION=$(VERSION) -t $(STEP_IMAGE) --push .
	docker buildx build --platform $(PLATFORMS) -f containers/Dockerfile \
		--build-arg IMGCLF_VERSION=$(VERSION) -t $(LIGHT_IMAGE) --target light --push .
	docker buildx build --platform $(PLATFORMS) -f containers/Dockerfile.gpu \
		--build-arg IMGCLF_VERSION=$(VERSION) -t $(GPU_IMAGE) --push .

# The CPU step image and the light image built here with podman, offline: a base made from
# Debian's packages (containers/local-base.sh) and a wheelhouse of the pinned dependencies
# made on this host. Tagged as the pipeline's, so that `imgclf run --runner docker` finds them.
PODMAN_SOCKET ?= /tmp/imgclf-podman/podman.sock
WHEELHOUSE := build/wheelhouse
LOCAL_BUILD = podman build --no-cache --network=none -v "$(CURDIR)/$(WHEELHOUSE):/wheelhouse:ro" \
	--build-arg BASE=localhost/imgclf-base:bookworm \
	--build-arg EXTRA_PIP_ARGS="--no-index --find-links /wheelhouse" \
	--build-arg IMGCLF_VERSION=$(VERSION)

image: $(INSTALLED)
	containers/podman-setup.sh
	containers/local-base.sh
	rm -rf $(WHEELHOUSE) build/image-sources && mkdir -p build/image-sources
	cp -r pyproject.toml README.md components pipelines build/image-sources/
	$(BIN)/pip wheel --quiet -c $(CONSTRAINTS) --wheel-dir $(WHEELHOUSE) build/image-sources \
		'setuptools>=77'
	rm -f $(WHEELHOUSE)/imgclf-*.whl
	$(LOCAL_BUILD) -t $(STEP_IMAGE) -f containers/Dockerfile .
	$(LOCAL_BUILD) --target light -t $(LIGHT_IMAGE) -f containers/Dockerfile .

# The GPU image's layers on the local CPU base: its CUDA base cannot be fetched here.
image-gpu-standin: image
	$(LOCAL_BUILD) --build-arg GPU_BASE=localhost/imgclf-base:bookworm \
		-t localhost/imgclf-gpu-standin:$(TAG) -f containers/Dockerfile.gpu .

# `make run`, every step in the step image (make image) as uid 1000, through podman's
# Docker-compatible API; kfp.local mounts only the pipeline root, so serving lives under it.
run-containers: $(INSTALLED)
	containers/podman-setup.sh start $(PODMAN_SOCKET)
	DOCKER_HOST=unix://$(PODMAN_SOCKET) $(BIN)/imgclf run --runner docker \
		--pipeline-root runs-containers --serving-dir runs-containers/serving \
		--summary-json runs-containers/summary.json; \
		status=$$?; containers/podman-setup.sh stop $(PODMAN_SOCKET); exit $$status

run-parameters:
	$(if $(and $(DATA_URI),$(SERVING_ROOT)),,$(error Set DATA_URI and SERVING_ROOT, e.g. \
		make $(firstword $(MAKECMDGOALS)) DATA_URI=gs://bucket/photos SERVING_ROOT=gs://bucket/models))

# One run now, and retraining on a schedule (one run at a time, no catch-up after a pause, each
# run reading the data as of its slot), through the kfp client: the compiled pipeline is
# registered as `imgclf` with a version per release, and parameters keep their types.
KFP_FLAGS = --endpoint $(KFP_ENDPOINT) --namespace $(NAMESPACE) --experiment $(EXPERIMENT) \
	--package $(PIPELINE)

submit: run-parameters compile
	$(BIN)/imgclf submit $(KFP_FLAGS) --run-name $(RUN_NAME) $(RUN_PARAMETERS)

schedule: run-parameters compile
	$(BIN)/imgclf schedule $(KFP_FLAGS) --name $(SCHEDULE_NAME) --cron "$(CRON)" \
		$(RUN_PARAMETERS)

clean:
	rm -rf runs runs-containers serving build .pytest_cache
