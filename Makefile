# AsymML for Swift. `make train` and `make test` install what is missing, build, and run.
SWIFT   ?= swift
CONFIG  ?= configs/fmnist-cnn.yaml
BIN     := .build/release/asymml
# Debian packages the build and the default job need (pkg-config finds the C libraries);
# python3's numpy, h5py and yaml run scripts/to_torch.py and from_torch.py in the tests.
PACKAGES := pkg-config libopenmpi-dev openmpi-bin libopenblas-dev libdnnl-dev libhdf5-dev hdf5-tools \
            zlib1g-dev libpng-dev libjpeg-dev dataset-fashion-mnist python3-numpy python3-h5py python3-yaml

# Open MPI refuses to run as root unless told to; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: deps build train test bench bench-mpi bench-predict bench-hosts soak clean

# Installs only the missing packages (with sudo when not root); does nothing otherwise.
deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build -c release

# The default job: 1 trusted + 1 untrusted rank in asym mode on this machine. A second
# `make train` continues runs/<name> (after Ctrl-C, from its checkpoint) instead of refusing it.
train: build
	launch/local.sh -t 1 -u 3 -- train --config $(CONFIG) --resume auto

# The numeric tests run built with optimisation (fast); then once more in a debug build,
# where Swift's checks and every precondition execute (the MPI jobs use the release binary
# and the attack tests train models, so the debug pass leaves those two out).
test: deps
	$(SWIFT) build -c release
	$(SWIFT) test -c release
	$(SWIFT) test --skip AsymClusterTests --skip AsymAttackTests

# Regenerates docs/CONFIG.md, the reference of every config key, from the config reader
# (the ConfigReferenceTests fail while the committed file is out of date).
.PHONY: docs
docs:
	ASYMML_WRITE_DOCS=1 $(SWIFT) test -c release --filter ConfigReferenceTests

# asymml alone (all modes), then side by side with PyTorch where it is installed.
bench: build
	$(BIN) bench --config configs/fmnist-cnn.yaml
	$(BIN) bench --config configs/vgg-cifar.yaml
	@if python3 -c 'import torch' 2>/dev/null; then python3 scripts/torch_reference.py; else \
	  echo "PyTorch is not installed: for the side-by-side table, pip install torch --index-url https://download.pytorch.org/whl/cpu"; fi

# vgg-cifar on this machine, one OpenBLAS thread per rank (wall clock, bytes moved, peak
# memory): one tee-only rank, the unprotected split on 1 trusted + 1 untrusted rank, and the
# private default on 1 trusted + 3 untrusted ranks.
BENCH_MPI := --config configs/vgg-cifar.yaml --set train.max_steps=24 --set train.log_every=8 \
             --set data.synthetic_train=1536 --set data.synthetic_test=512 --set train.threads=1
bench-mpi: build
	launch/local.sh -t 1 -u 0 -- train $(BENCH_MPI) --run-dir runs/bench-tee-only --set asym.mode=tee-only
	launch/local.sh -t 1 -u 1 -- train $(BENCH_MPI) --run-dir runs/bench-asym --set asym.mode=asym --set asym.mask=off --set asym.verify=false
	launch/local.sh -t 1 -u 3 -- train $(BENCH_MPI) --run-dir runs/bench-private --set asym.mode=asym

# `asymml plan --hardware` against real 1T+1U runs here: calibrate, predict, run, compare.
bench-predict: build
	scripts/predict-vs-measured.sh configs/fmnist-cnn.yaml 40
	scripts/predict-vs-measured.sh configs/vgg-cifar.yaml 16 --set data.synthetic_train=1536

# vgg-cifar 1T+1U across two namespaced hosts (real TCP), the link shaped to 1 and 10
# Gbit/s, next to plan --hardware's prediction (needs root: network namespaces).
bench-hosts: build
	scripts/bench-hosts.sh configs/vgg-cifar.yaml 12 1 10

# About 30 minutes of the private job (1T+3U spread masking) with an untrusted rank killed
# every 3 minutes and relaunched by launch/local.sh --restarts, then the same steps without
# kills (30 more): restarts, steps redone, both accuracies, per-tensor equality, memory early and late.
# Not part of make test. scripts/soak.sh STEPS KILL_EVERY runs a shorter one.
soak: build
	scripts/soak.sh

clean:
	rm -rf .build
