# bncourse: two commands.
#   make course   open the course in JupyterLab (creates .venv and installs the lock on first use)
#   make test     run the whole test suite: unit tests, nbval on every chapter and solution, exercise checks,
#                 then nbval on every notebook again as if on another CPU (see OTHER_CPU below)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bncourse-installed
JOBS   ?= 2

.PHONY: course test test-here test-other-cpu setup lock bench exercises grade-demo clean-venv site

# Another CPU, emulated: PyTorch's generic kernels instead of AVX2, NumPy without its AVX2/AVX-512 paths, OpenBLAS's
# and MKL's SSE kernels, oneDNN (convolutions) capped at SSE4.1. Float32 sums then add in another order, as on a
# student's laptop, so a stored output that only this CPU reproduces fails here.
# Chapter 5 trains LeNet six times on all of Fashion-MNIST; in both passes it alone would take half of a 30-minute CI
# run on 2 cores. So it runs once, in the stricter pass: on the emulated CPU, where its stored outputs (made on this
# CPU) must reproduce and its assertions must hold. `make test-here ONCE=` runs it natively as well.
ifeq ($(shell uname -m),x86_64)
OTHER_CPU ?= ATEN_CPU_CAPABILITY=default NPY_DISABLE_CPU_FEATURES=X86_V3,X86_V4 OPENBLAS_CORETYPE=Nehalem \
             MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41
else
OTHER_CPU ?= ATEN_CPU_CAPABILITY=default
endif
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=1800
ONCE  ?= --ignore=notebooks/05_batchnorm_in_cnns.ipynb
# collected first in the emulated pass, so that one worker starts on it at once
LONGEST_FIRST := notebooks/05_batchnorm_in_cnns.ipynb
PYTEST_ARGS ?=

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

# JupyterLab saves the open tabs in a workspace and restores it at the next start, so a second `make course` would
# reopen every notebook of the last visit (each starting a kernel). The course keeps its workspace here, cleared at
# every start: it opens on 00_start_here alone. root_dir is the repository: given a file alone, jupyter would serve
# only that file's folder, hiding exercises/ and solutions/. LAB_ARGS: extra `jupyter lab` options (the browser
# tests use it).
LAB_WORKSPACES ?= $(VENV)/share/jupyter/lab/course-workspaces
LAB_ARGS ?=

course: $(STAMP)
	@rm -rf $(LAB_WORKSPACES)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.workspaces_dir=$(LAB_WORKSPACES) $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
		$(LAB_ARGS) notebooks/00_start_here.ipynb

test: test-here test-other-cpu

test-here: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -n $(JOBS) --dist loadfile $(NBVAL) $(ONCE) $(PYTEST_ARGS) \
		tests notebooks solutions

test-other-cpu: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(OTHER_CPU) $(PY) -m pytest -n $(JOBS) --dist loadfile $(NBVAL) \
		-p no:cacheprovider $(PYTEST_ARGS) $(LONGEST_FIRST) $(filter-out $(LONGEST_FIRST),$(wildcard notebooks/*.ipynb)) \
		solutions

# the course as a static HTML book (Jupyter Book 1.x) from the stored outputs, nothing re-executed: _build/site/
site: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) book/build.py

bench: $(STAMP)
	$(PY) benchmarks/bench_batchnorm.py

exercises: $(STAMP)
	$(VENV)/bin/bncourse make-exercises solutions exercises

lock:
	$(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock.new
	@echo "wrote requirements.lock.new: review, add the header comment, and replace requirements.lock"

clean-venv:
	rm -rf $(VENV)
