# hyft — `make help` lists the targets. Every target installs what it needs itself.
SHELL := /bin/bash
HYFT_CACHE ?= $(HOME)/.cache/hyft
VENV ?= $(HYFT_CACHE)/venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
export HYFT_CACHE
# This checkout's code first: the shared venv holds only a copy (see .ci/venv.sh).
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/trainer:$(CURDIR)/envtest:$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# DeepSpeed compiles its CPU ops on first use: compile once, keep them.
export TORCH_EXTENSIONS_DIR ?= $(HYFT_CACHE)/torch-extensions

.DEFAULT_GOAL := help
.PHONY: help venv binaries sysdeps test test-unit test-k8s test-trainer test-e2e lint regen cluster real-node demo images bench gpu-check

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

venv: ## create/refresh the virtualenv ($(VENV)) with every extra installed
	@bash .ci/venv.sh "$(VENV)"

binaries: venv sysdeps ## build/cache etcd, kube-apiserver/scheduler/controller-manager, kubectl, kubelet, containerd, runc, CoreDNS, kwok, helm, ...
	$(PY) -m hyft_envtest.build

sysdeps: ## Debian packages the tests use: lua5.4, prometheus, docker.io, debootstrap, CNI plugins, libseccomp-dev
	@bash .ci/system-deps.sh

test: venv sysdeps binaries lint ## everything CI runs
	$(PYTEST) tests

test-unit: venv sysdeps ## pure tests: no cluster, no heavy torch work
	$(PY) -m hyft_envtest.build --only flux-health argocd-health
	$(PYTEST) -m unit tests

test-k8s: venv binaries ## operator and control-plane tests against a real API server
	$(PYTEST) -m k8s tests

test-trainer: venv ## tiny Hunyuan models, real DeepSpeed on CPU
	$(PYTEST) -m trainer tests

test-e2e: venv binaries sysdeps ## both images, a real node, the chart and the examples as real pods; local runs
	$(PYTEST) -m e2e tests

lint: venv ## ruff
	$(VENV)/bin/ruff check .

regen: venv ## regenerate from the declarations: crds/, the chart's CRDs, docs/reference.md, the golden files
	$(PY) -m hyft_trainer.upstream_gen
	$(PY) -m hyft_operator.crdgen crds/
	$(PY) -m hyft_operator.docgen > docs/reference.md
	cp crds/*.yaml charts/hyft-operator/crds/
	HYFT_UPDATE_GOLDEN=1 $(PYTEST) -q tests/unit/test_builders.py

cluster: venv binaries ## start a local control plane with fake GPU nodes (Ctrl-C stops it)
	$(PY) -m hyft_envtest

real-node: venv binaries sysdeps ## a control plane + one real node running the hyft images (root; Ctrl-C stops it)
	$(PY) -m hyft_envtest --real-node

DEMO := $(HYFT_CACHE)/demo
demo: venv ## train examples/local-tiny.yaml on this machine: 2 nodes, ZeRO-3 + CPU offload, LoRA
	$(PY) -m hyft_trainer.cli tiny-model $(DEMO)/models/tiny-small --family small
	rm -rf $(DEMO)/work/local-tiny
	$(PY) -m hyft_operator.cli run examples/local-tiny.yaml --local \
	  --volume models=$(DEMO)/models --volume data=examples/data --volume work=$(DEMO)/work

images: ## build hyft-operator and hyft-trainer:<version> with Docker (starts dockerd for the build if none runs)
	python3 -m hyft_envtest.images

bench: venv ## benchmarks: ratios against baselines measured in the same run (installs LLaMA-Factory aside)
	bash bench/setup_llamafactory.sh
	$(PY) bench/data_prep.py --workers 2
	$(PY) bench/data_prep.py --workers 1
	$(PY) bench/train_vs_llamafactory.py
	$(PY) bench/default_vs_recipe.py
	$(PY) bench/train_step.py
	$(PY) bench/trained_logits.py
	$(PY) bench/estimate_vs_measured.py
	$(PY) bench/operator_scale.py

gpu-check: ## on a GPU machine: facts, fail-fast, 30 steps of the default GPU path, MFU, memory -> $$OUT/gpu-check.json
	PYTHONPATH=$(CURDIR)/operator:$(CURDIR)/trainer:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} \
	  python3 -m hyft_trainer.gpu_check --out $${OUT:-.}/gpu-check.json
