# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   installs into .venv and runs the main job
#   make test   installs into .venv and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the main job: a real sweep, then its best encoder promoted, evaluated and reported (MLflow in
# ./mlflow.db, results in ./runs/$(DEMO)); `make demo DEMO=name` picks the sweep name
ifndef DEMO
DEMO := demo-$(shell date +%Y%m%d-%H%M%S)
endif

demo: $(STAMP)
	$(BIN)/leoclr sweep demo --name $(DEMO)
	$(BIN)/leoclr promote --sweep $(DEMO)
	$(BIN)/leoclr evaluate models:/leoclr-encoder@candidate --protocols knn,linear,semi_10pct --augment none --set semi.epochs=3
	$(BIN)/leoclr report $(DEMO)
	@echo
	@echo "Browse the sweep, its trials and the registered encoder in the MLflow UI:"
	@echo "  $(BIN)/leoclr ui    (prints the link to the runs table once the server answers; --open opens it)"

# two pytest-xdist workers, whole modules each (tests/conftest.py orders the slow ones longest
# first, after every fast test); `.venv/bin/python -m pytest tests` runs the same tests in one process
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf $(VENV) .pytest_cache
