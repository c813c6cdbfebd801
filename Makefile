# exonta — the two commands a newcomer needs:
#   make demo   set up a virtual environment, analyse the bundled sample videos, print the summaries
#   make test   set up everything (Python test + GUI deps, Xvfb system packages) and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= results/demo

.PHONY: demo test install install-dev system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[batch,report]"
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed plugins/napari-exonta/pyproject.toml
	$(BIN)/pip install -q -e ".[batch,report,dev]" "napari[pyqt6]" -e plugins/napari-exonta
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/exonta analyze sample_data/beads100.tif sample_data/ev.tif sample_data/bimodal.tif --out $(DEMO_OUT)

system-deps:
	bash scripts/install_system_deps.sh

test: system-deps $(VENV)/.installed-dev
	EXONTA_REQUIRE_GUI=1 xvfb-run -a -s "-screen 0 1280x1024x24" $(BIN)/python -m pytest

# speed/accuracy tables (minutes; not part of the tests); see benchmarks/README.md
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_detect.py --quick
	$(BIN)/python benchmarks/bench_link.py
	$(BIN)/python benchmarks/bench_sizing.py
	$(BIN)/python benchmarks/bench_accuracy.py

clean:
	rm -rf $(VENV) results .pytest_cache
