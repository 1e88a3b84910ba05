# Two commands a new user needs: `make demo` and `make test`. Both set up .venv/ first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROWS   ?= 200000

.PHONY: setup demo demo-daily test bench bench-peers experiments lint clean

setup: $(STAMP)

# Re-run the install whenever a pin changes. torchrec goes in with --no-deps (see requirements/torchrec.txt).
$(STAMP): pyproject.toml requirements/torch-cpu.txt requirements/runtime.txt requirements/dev.txt requirements/torchrec.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		-r requirements/torch-cpu.txt -r requirements/runtime.txt -r requirements/dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/torchrec.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -c "import recsys_mtl; print('recsys-mtl', recsys_mtl.__version__, 'installed; fbgemm ops load')"
	touch $(STAMP)

# the whole loop: pipeline (generate, validate, train on 2 processes, evaluate, gate, export, publish),
# then the server on the published model and one scored request; re-runs skip the done stages
demo: $(STAMP)
	$(BIN)/python pipelines/demo.py --rows $(ROWS)

# incremental training: a 4-day synthetic stream, then the pipeline once per day (days 1-3), each
# warm-started from the model published the day before, evaluated on the next day, gated and published
demo-daily: $(STAMP)
	$(BIN)/python pipelines/daily.py --rows $(ROWS)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/reader_throughput.py
	$(BIN)/python bench/generator_speed.py
	$(BIN)/python bench/train_throughput.py

# recsys-mtl beside DeepCTR-Torch and torch-rechub (optional extra, installed --no-deps next to the pinned torch)
bench-peers: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/peers.txt
	$(BIN)/python bench/peers/run.py

# paper reproductions; each rewrites its section of docs/experiments.md and its plots
experiments: $(STAMP)
	$(BIN)/python bench/experiments/mmoe_synthetic.py
	$(BIN)/python bench/experiments/esmm_funnel.py
	$(BIN)/python bench/experiments/balancing_scales.py
	$(BIN)/python bench/experiments/objectives.py

lint: $(STAMP)
	$(BIN)/ruff check recsys_mtl serving pipelines bench tests

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache *.egg-info
