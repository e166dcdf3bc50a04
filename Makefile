# Every target creates and uses .venv in the repository root and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# These two lie on this offline machine's disk; other pins download several GB.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The shared data (../shared/data in the README): $MASKGATE_DATA, else beside this checkout,
# else beside the checkout this one was cloned from (a clone in a scratch folder).
ORIGIN := $(shell git config --get remote.origin.url 2>/dev/null)
DATA ?= $(firstword $(wildcard $(MASKGATE_DATA) ../shared/data $(ORIGIN)/../shared/data) ../shared/data)
# Tests and the export's parity check read it from there too (tests/conftest.py).
export MASKGATE_DATA := $(abspath $(DATA))
DEMO_INPUT ?= $(DATA)/videos/kaggle853_test_scenes.mp4
OUT ?= out

.PHONY: help install install-edge system-deps test-deps weights models mtcnn train train-three-class train-detector demo evaluate bench test lint floor-test soak nano-check clean

help:
	@echo "make demo     run the edge service on the demo video with the shipped model"
	@echo "make test     run the test suite"
	@echo "make train    train the shipped classifier: two classes, then three grown from them (docs/model-card.md)"
	@echo "make train-three-class  three classes from ImageNet, the earlier candidate (docs/model-card.md)"
	@echo "make train-detector  fine-tune the RetinaFace face detector (train/detector)"
	@echo "make weights  provision ImageNet weights into the torch hub cache (offline-capable)"
	@echo "make models   provision the face-detector files (checked by sha256; MTCNN's where torch is)"
	@echo "make mtcnn    export MTCNN's three nets to ONNX (needs torch; copy them to a device)"
	@echo "make evaluate end-to-end accuracy on the kaggle853 test scenes"
	@echo "make bench    edge-bench on the demo video, with the one-at-a-time baseline"
	@echo "make soak     20-minute soak: memory and descriptors of the running service"
	@echo "make floor-test  the device tests on the oldest numpy/OpenCV/PyYAML pip installs here"
	@echo "make nano-check  on a Jetson Nano: versions, Jetson elements, camera, engine, tests, bench -> one report"

# GStreamer and the headers PyGObject builds against (Debian/Ubuntu; skipped when present).
system-deps:
	@./scripts/install-system-deps.sh

# What only the tests use: a Mosquitto broker, Chromium and ChromeDriver, openssl.
test-deps:
	@./scripts/install-system-deps.sh --test

# What the service needs (numpy, OpenCV, PyYAML, onnxruntime, PyGObject, paho-mqtt): no torch.
$(VENV)/.edge-installed: pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[ort,gst,mqtt]"
	touch $@

# Everything: training (torch), export and the test tools on top.
$(VENV)/.installed: $(VENV)/.edge-installed
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[train,export,ort,gst,mqtt,dev]"
	touch $@

install-edge: $(VENV)/.edge-installed
install: $(VENV)/.installed

weights: install
	$(PY) -m train.weights

# MTCNN's files are exported from PyTorch weights, so only where torch is installed (`make
# install`); the edge-only install (`make demo`) provisions the others and says so.
models: install-edge
	$(PY) -m edge.provision
	@if $(PY) -c "import torch, onnx" 2>/dev/null; then $(PY) -m export.mtcnn \
	  || echo "mtcnn: export failed (above); the other detectors are provisioned"; \
	else echo "mtcnn: not exported here (no torch): run \`make mtcnn\` on a workstation and copy models/detectors/mtcnn_*.onnx"; fi

# Nothing happens when the three files are current (python -m export.mtcnn --force redoes them).
mtcnn: install
	$(PY) -m export.mtcnn

# The shipped classifier: the two-class model, then three classes grown from it (model card).
train: install weights models  # models: the detectors that --face-crop uses
	$(PY) -m train --config train/configs/default.yaml
	$(PY) -m train --config train/configs/three_class_warm.yaml

# The three-class model trained from ImageNet (docs/model-card.md); the synthesized wearing set it was compared with.
train-three-class: install weights models
	$(PY) -m train --config train/configs/three_class.yaml
runs/maskwear/manifest.csv: install models
	$(PY) -m train.maskwear --data $(DATA) --out runs/maskwear --per-face 2

# The shipped detector's recipe (docs/detector-card.md): RetinaFace-MobileNet0.25 fine-tuned
# from the provisioned WIDER FACE ONNX (models: its starting weights) on kaggle853 + moxa3k,
# exported to ONNX for the edge (runs/det/face_detector.onnx) and calibrated on val (its
# confidence and the floor of its largest, 512 px, anchors, written into the file's metadata).
train-detector: install models
	$(PY) -m train.detector --data $(DATA)/kaggle853 --data $(DATA)/moxa3k \
	  --ignore-unannotated moxa3k=0.5 --balance --epochs 8 --threads 1 --out runs/det
	$(PY) -m train.detector.export runs/det/best.pt --out runs/det/face_detector.onnx
	$(PY) -m train.detector.calibrate runs/det/face_detector.onnx --data $(DATA)/kaggle853 --data $(DATA)/moxa3k

demo: install-edge models
	mkdir -p $(OUT)
	$(PY) -m edge $(DEMO_INPUT) $(OUT)/demo.mp4 --events $(OUT)/demo.jsonl --headless

# End-to-end accuracy on the kaggle853 test scenes, every detector compared.
evaluate: install-edge models
	$(PY) -m edge.evaluate $(DATA)/kaggle853 --split test --detector retinaface,retinaface-wider,ssd,haar --misses $(OUT)/misses.png

# Speed of the demo configuration against one-face-at-a-time classification.
bench: install models
	mkdir -p $(OUT)
	$(VENV)/bin/edge-bench $(DEMO_INPUT) $(OUT)/bench.mp4 --events $(OUT)/bench.jsonl --vs-baseline

test: install weights models mtcnn lint test-deps
	$(PY) -m pytest -q

# What runs on the Nano (edge/, the torch-free part of export/) must parse as Python 3.6.
NANO_CODE := edge scripts/soak.py scripts/nanocheck.py export/__init__.py export/trt.py export/samples.py
lint: install
	$(VENV)/bin/vermin -q --no-tips -t=3.6- --violations $(NANO_CODE)
	shellcheck scripts/*.sh
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.jetson

# The device tests on the oldest numpy/OpenCV/PyYAML/onnxruntime pip installs for this Python
# (a venv in .cache/floor-venv; PyGObject taken from .venv). See the script for what and why.
floor-test: install
	GI_PYTHON=$(abspath $(PY)) ./scripts/floor-test.sh

MINUTES ?= 20
soak: install-edge models
	$(PY) scripts/soak.py --minutes $(MINUTES)

# On the Nano, from the checkout, with the installed service's Python (no `make install`):
# one report (out/nano-check/nano-check.json and .md) for the owner to send back.
nano-check:
	./scripts/nano-check.sh --out $(OUT)/nano-check

clean:
	rm -rf $(VENV) $(OUT) runs .pytest_cache
