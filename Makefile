# mfd-serve: two commands on a fresh machine.
#   make demo   set up, then serve the bundled demo model (embedded TorchScript, CPU) on http://127.0.0.1:3000,
#               with the demo genome (generated once, deterministically, into build/demo_data) for intervals/variants
#   make test   set up, then run the whole test suite (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PIP_EXTRA_INDEX_URL
# (e.g. https://download.pytorch.org/whl/cpu) so that no CUDA build is pulled.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup tools demo demo-genome serve test image-test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(FIND_LINKS) -e '.[test]'
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and not torch.version.cuda else f'expected CPU torch 2.13.0, got {v} (cuda={torch.version.cuda})')"
	touch $@

setup: $(VENV)/.installed

tools: setup
	bash scripts/install_tools.sh

# The demo model's genome: training.demo_data is deterministic (seed 0), so this is the FASTA the bundled model
# was trained on; 1 MB, generated in about a second rather than committed.
DEMO_DATA ?= build/demo_data
$(DEMO_DATA)/genome.fa:
	$(PY) -m training.demo_data --out $(DEMO_DATA)

demo-genome: setup $(DEMO_DATA)/genome.fa

demo: setup $(DEMO_DATA)/genome.fa
	MFD_FASTA=$(DEMO_DATA)/genome.fa $(PY) -m service

serve: demo

test: setup tools
	$(PY) -m pytest

# The paper's claims on a converged demo run (MFD vs baseline, the CI preset of
# training/evaluation/demo_preset.py run for PAPER_EPOCHS = 40 epochs each; about 13 min on 2 idle cores, timeout 40 min).
test-paper: setup
	$(PY) -m pytest -m paper tests/test_training_demo.py

# The container image build + run alone (podman, mmdebstrap base; 2-4 minutes; also part of `make test`).
image-test: setup tools
	$(PY) -m pytest -m image

bench: setup
	$(PY) -m bench.bench_training
	$(PY) -m bench.bench_trunk
	$(PY) -m bench.bench_service
	$(PY) -m bench.bench_variants

clean:
	rm -rf $(VENV) build .pytest_cache
