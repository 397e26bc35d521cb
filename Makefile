# Two commands for a fresh clone:
#   make demo   -> creates .venv, installs (torch==2.13.0 first), runs the synthetic Aachen demo
#   make test   -> same install, runs the test suite
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
FEATURES ?= hardnet

.PHONY: install demo test weights bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VPY) -m pipelines.aachen --features $(FEATURES) --max_keypoints 2048

test: install
	$(VPY) -m pytest tests

# Reproduce the shipped weights (CPU-sized runs; commands are recorded in weights/*.json).
weights: install
	$(VPY) -m pipelines.train --recipe hardnet --out weights/hardnet.pt --quick --eval test
	$(VPY) -m pipelines.train --recipe hndesc --out weights/hndesc.pt --quick --steps 600 --batch_size 128 --eval test
	$(VPY) -m pipelines.train --recipe sdb --out weights/sdb.pt --quick --eval test
	$(VPY) -m pipelines.train --recipe wlrn --out weights/wlrn.pt --quick --eval test
	$(VPY) -m pipelines.train --recipe fracking --out weights/fracking.pt --quick --eval test

bench: install
	$(VPY) benchmarks/descriptor_speed.py
	$(VPY) benchmarks/matching_speed.py
	$(VPY) benchmarks/pipeline_stages.py

clean:
	rm -rf outputs
