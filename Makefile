# bncourse: two commands.
#   make course   open the course in JupyterLab (creates .venv and installs the lock on first use)
#   make test     run the whole test suite: unit tests, nbval on every chapter and solution, exercise checks
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bncourse-installed
JOBS   ?= 2

.PHONY: course test setup lock bench exercises grade-demo clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

course: $(STAMP)
	$(VENV)/bin/jupyter lab $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/00_start_here.ipynb

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -n $(JOBS) --dist loadfile \
		--nbval --nbval-current-env --nbval-cell-timeout=900 tests notebooks solutions

bench: $(STAMP)
	$(PY) benchmarks/bench_batchnorm.py

exercises: $(STAMP)
	$(VENV)/bin/bncourse make-exercises solutions exercises

lock:
	$(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock.new
	@echo "wrote requirements.lock.new: review, add the header comment, and replace requirements.lock"

clean-venv:
	rm -rf $(VENV)
