# Two commands do all set-up on a fresh machine with Python 3.11:
#   make book   executes every chapter and builds the HTML book in _build/html
#   make test   runs the package's tests and executes every chapter under nbval
# Both first create .venv from uv.lock (installing uv with pip if it is missing).

PYTHON ?= python3.11
UV = $(PYTHON) -m uv
VENV = .venv
BIN = $(VENV)/bin
PROFILE ?= smoke
# PROFILE: smoke | quick | full (see book/setup.md)
TEST_WORKERS ?= 2

.PHONY: book book-student test lock benchmark chapter clean serve-model

$(BIN)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --locked --all-extras --python $(PYTHON)
	@touch $@

test: $(BIN)/.synced
	CIFAR_COURSE_PROFILE=smoke $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	  --nbval-lax --nbval-cell-timeout=900 tests chapters

book: $(BIN)/.synced
	CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going

# The student edition, for a teacher who hands out the exercises: the same book with every solution
# removed (book/_ext/student_edition.py), in _build/html-student. It reuses the executed notebooks; the
# next `make book` renders the full edition again.
book-student: $(BIN)/.synced
	CIFAR_COURSE_EDITION=student CIFAR_COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going
	rm -rf _build/html-student && mv _build/html _build/html-student

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

# Real CIFAR-10 needed (CIFAR_COURSE_DATA); about 30 minutes on a 2-core CPU.
benchmark: $(BIN)/.synced
	$(BIN)/python benchmarks/pipeline_throughput.py
	$(BIN)/python benchmarks/flagship.py --budget 5min
	$(BIN)/python benchmarks/flagship.py --budget 15min --eval-every 8

clean:
	rm -rf _build results deploy
