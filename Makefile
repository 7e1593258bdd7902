# Two commands do all set-up on a fresh machine (Python 3.11, or uv, or a python3 with its venv module):
#   make book   executes every chapter and builds the HTML book in _build/html
#   make test   runs the package's tests and executes every chapter under nbval
# and one opens the chapters as notebooks:
#   make lab    JupyterLab on chapters/ with the course's kernel
# Each first creates .venv from uv.lock with tools/bootstrap.sh, which finds or installs uv (never with
# the system pip, which PEP 668 forbids on current Debian and Ubuntu) and Python 3.11, and registers the
# course's kernel `cifar-course` inside .venv. PYTHON=/path/to/python3.11 picks the interpreter.

PYTHON ?=
UV = tools/bootstrap.sh uv
VENV = .venv
BIN = $(VENV)/bin
PROFILE ?= smoke
# PROFILE: smoke | quick | full (see book/setup.md)
# Three workers on two cores: smoke chapters are mostly single-threaded tracing (two workers kept 1.19 of
# 2 cores busy). Whole suite on a 2-core AMD EPYC: 923 s with 3 workers, 1,213 s with 2 (an earlier
# commit, before the faster fixtures of 6ae7d37: not a same-commit comparison).
TEST_WORKERS ?= 3
# A hung kernel or subprocess fails its test, named, after this many seconds (pytest-timeout) instead of
# using up CI's time; each chapter cell is a test, also bounded by nbval's --nbval-cell-timeout.
# Files start costliest first (conftest.py's SMOKE_COST; --no-loadscope-reorder keeps that order).
TEST_TIMEOUT ?= 1000
# More pytest options; the default lists the slowest tests, so CI's log shows where its time goes.
TEST_ARGS ?= --durations=25
BOOK ?= .
LAB_PORT ?= 8888
LAB_ARGS ?=

# Every kernel and process the targets start inherits this: no TensorFlow C++ start-up log in outputs.
export TF_CPP_MIN_LOG_LEVEL = 3
# Environment-level Jupyter paths (.venv's kernels) before the user's (~/.local/share/jupyter).
export JUPYTER_PREFER_ENV_PATH = 1

.PHONY: book book-publish book-student test lab lock benchmark chapter clean references serve-model

$(BIN)/.synced: pyproject.toml uv.lock tools/bootstrap.sh
	PYTHON=$(PYTHON) tools/bootstrap.sh
	@touch $@

test: $(BIN)/.synced
	CIFAR_COURSE_PROFILE=smoke $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	  --no-loadscope-reorder --timeout=$(TEST_TIMEOUT) --nbval-lax --nbval-cell-timeout=900 $(TEST_ARGS) \
	  tests chapters

# Each profile and data source executes into its own jupyter-cache (tools/book_config.py), so a build
# never publishes another profile's outputs; then no page may show TensorFlow's start-up log. The page
# checks execute no notebook, so pytest runs them without nbval (whose nbformat import alone costs
# 2.5 s: jsonschema builds rfc3987-syntax's parsers when it is imported).
book: $(BIN)/.synced
	@config=$$(CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/python tools/book_config.py $(BOOK)) && \
	  echo "Building $(BOOK) with $$config" && \
	  CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter-book build $(BOOK) --config $$config -W --keep-going
	CIFAR_COURSE_BOOK_HTML=$(BOOK)/_build/html $(BIN)/python -m pytest -q -p no:cacheprovider -p no:nbval \
	  tests/test_book_html.py

# The book for publication: every chapter executed in the quick profile on real CIFAR-10, in its own
# jupyter-cache (never the smoke outputs), with the same checks as `make book`. CIFAR_COURSE_DATA must name
# the data (a folder or archive: book/setup.md); without it this stops before building anything. Takes
# about as long as the committed reference runs (book/setup.md, "Publishing"), on a 2-core CPU over an hour.
book-publish: $(BIN)/.synced
	@test -n "$(CIFAR_COURSE_DATA)" && test -e "$(CIFAR_COURSE_DATA)" || { \
	  echo "make book-publish needs real CIFAR-10: CIFAR_COURSE_DATA=/path/to/cifar10 (book/setup.md)" >&2; \
	  exit 2; }
	$(MAKE) book PROFILE=quick CIFAR_COURSE_DATA="$(abspath $(CIFAR_COURSE_DATA))"

# The student edition, for a teacher who hands out the exercises: the same book with every solution
# removed (book/_ext/student_edition.py), in _build/html-student. It shares the profile's executed
# notebooks with `make book`; the next `make book` renders the full edition again.
book-student: $(BIN)/.synced
	@config=$$(CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/python tools/book_config.py $(BOOK)) && \
	  CIFAR_COURSE_EDITION=student CIFAR_COURSE_PROFILE=$(PROFILE) \
	  $(BIN)/jupyter-book build $(BOOK) --config $$config -W --keep-going
	rm -rf $(BOOK)/_build/html-student && mv $(BOOK)/_build/html $(BOOK)/_build/html-student

# JupyterLab on the chapters (on loopback): jupytext opens chapters/*.md as notebooks, which run on the
# course's kernel (the `cifar-course` kernelspec their headers name). LAB_ARGS: more options.
lab: $(BIN)/.synced
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/chapters $(LAB_ARGS)

# Regenerate the lock (after editing pyproject.toml) and the conda/Binder environment that mirrors it.
lock:
	$(UV) lock
	$(MAKE) environment.yml

environment.yml: uv.lock
	@{ echo "# Generated from uv.lock by 'make lock': do not edit by hand."; \
	   echo "# pip cannot apply uv's overrides, so tensorflow-federated (whose pins they replace) and the"; \
	   echo "# course package are installed without dependency resolution by postBuild."; \
	   echo "name: cifar-course"; echo "channels: [conda-forge]"; echo "dependencies:"; \
	   echo "  - python=3.11"; echo "  - pip"; echo "  - pip:"; \
	   $(UV) export --frozen --no-hashes --all-extras --no-emit-project --no-header --no-annotate \
	     | grep -v '^tensorflow-federated==' | sed 's/^/      - /'; } > $@

# The serving install without TensorFlow (the Dockerfile's, tests/test_serve_slim.py's), pinned with hashes.
requirements-serve.txt: requirements-serve.in
	$(UV) pip compile $< --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --generate-hashes --no-header --quiet -o $@
	@sed -i "1i # Generated from requirements-serve.in by 'make requirements-serve.txt': do not edit by hand." $@

# The model the service and the Docker image serve, as the deployment chapter makes it:
# deploy/model.tflite and deploy/model.onnx with their JSON (PROFILE picks the data and epochs).
serve-model: $(BIN)/.synced
	CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/cifar-course export-demo deploy

# Execute one chapter on its own, e.g. make chapter CHAPTER=chapters/01_data.md PROFILE=quick
# (its results record lands in results/<profile>/; the executed notebook in _build/executed/).
chapter: $(BIN)/.synced
	@mkdir -p _build/executed
	$(BIN)/jupytext --to ipynb --output _build/executed/$(notdir $(basename $(CHAPTER))).ipynb $(CHAPTER)
	CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter-execute --inplace --timeout=-1 \
	  _build/executed/$(notdir $(basename $(CHAPTER))).ipynb

# Regenerate the reference results in one sweep (tools/reference_sweep.py): the recording chapters (or
# CHAPTERS="02_baseline_cnn 11_simclr") in the quick profile on real CIFAR-10, one at a time under the
# lock file /tmp/heavy.lock, from a clean committed tree; only chapters with no error are promoted into
# book/reference_results. Several hours on a 2-core CPU (the sum of the records' times: book/setup.md).
references: $(BIN)/.synced
	CIFAR_COURSE_DATA="$(CIFAR_COURSE_DATA)" $(BIN)/python tools/reference_sweep.py $(CHAPTERS)

# Real CIFAR-10 needed (CIFAR_COURSE_DATA); about 30 minutes on a 2-core CPU.
benchmark: $(BIN)/.synced
	$(BIN)/python benchmarks/pipeline_throughput.py
	$(BIN)/python benchmarks/flagship.py --budget 5min
	$(BIN)/python benchmarks/flagship.py --budget 15min --eval-every 8

clean:
	rm -rf _build results deploy
