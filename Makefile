# effstack: `make demo` runs the main job, `make test` runs the tests; both bootstrap .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= onnx,openvino,serve,search,shrink,grpc,pretrained,ray,text,lm,dev
STAMP := $(VENV)/.effstack-installed

.PHONY: install demo test results bench-overhead record-cpu clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/effstack demo

test: install
	$(PY) -m pytest -q

results: install
	$(PY) -m effstack.report.results --readme README.md --root results

bench-overhead: install
	$(PY) benchmarks/record.py engine_overhead -- $(PY) benchmarks/engine_overhead.py --json {json}

record-cpu: install  # the standard recordings for a new CPU kind, about 30 min (benchmarks/record_cpu.sh)
	bash benchmarks/record_cpu.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
