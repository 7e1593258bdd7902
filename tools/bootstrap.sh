#!/usr/bin/env bash
# Create .venv from uv.lock and register the course's Jupyter kernel in it; `make` runs this first.
#
# Works where the system Python refuses pip (PEP 668: Debian 12+, Ubuntu 23.04+) or is not 3.11:
#   uv:          $UV_BIN, else .tools/bin/uv, else `uv` on PATH, else `python3.11 -m uv`, else pip installs
#                uv into the private venv .tools/ (never into the system Python).
#   Python 3.11: $PYTHON, else the one uv finds (`uv python find --system 3.11`), else the one uv
#                downloads (`uv python install 3.11`, where downloads work).
# When nothing works it prints one sentence saying what to install, and exits 1.
#
#   tools/bootstrap.sh            create or update .venv (what `make .venv/bin/.synced` runs)
#   tools/bootstrap.sh --check    print the uv and the Python 3.11 it would use (getting them if need be)
#   tools/bootstrap.sh uv ARGS    run that uv (`make lock` and `make environment.yml` use it)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
KERNEL=cifar-course

fail() {
  echo "bootstrap: $*" >&2
  exit 1
}

find_uv() {
  if [ -n "${UV_BIN:-}" ]; then
    echo "$UV_BIN"
  elif [ -x "$TOOLS/bin/uv" ]; then
    echo "$TOOLS/bin/uv"
  elif command -v uv >/dev/null 2>&1; then
    command -v uv
  elif command -v python3.11 >/dev/null 2>&1 && python3.11 -m uv --version >/dev/null 2>&1; then
    echo "python3.11 -m uv"
  else
    install_uv
  fi
}

# pip inside a venv of our own is allowed under PEP 668; `python3 -m venv` needs the venv module
# (Debian and Ubuntu ship it separately as python3-venv). Each interpreter is tried once: python3 is
# usually a link to one of the others, and a second try of it would only repeat pip's retries.
install_uv() {
  local py path seen tried=() said=""
  for py in python3.11 python3 python3.13 python3.12; do
    path=$(command -v "$py" 2>/dev/null) || continue
    for seen in ${tried[@]+"${tried[@]}"}; do
      [ "$path" -ef "$seen" ] && continue 2  # the same file, through a symlink
    done
    tried+=("$path")
    rm -rf "$TOOLS"
    if ! said=$("$py" -m venv "$TOOLS" 2>&1); then
      said="$py -m venv: ${said##*$'\n'}"
    elif ! said=$("$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.5" 2>&1); then
      said="pip: ${said##*$'\n'}"
    else
      echo "$TOOLS/bin/uv"
      return
    fi
  done
  rm -rf "$TOOLS"
  fail "no uv found and none could be installed into .tools/ (that needs python3 with its venv module," \
    "e.g. 'apt install python3-venv', and access to PyPI${said:+; $said}): install uv" \
    "(https://docs.astral.sh/uv/getting-started/installation/) and run make again."
}

find_python() {
  local uv="$1" py
  if [ -n "${PYTHON:-}" ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || fail "PYTHON=$PYTHON is not a command: unset it or install it."
    echo "$PYTHON"
  elif py=$($uv python find --system --no-project 3.11 2>/dev/null); then
    echo "$py"
  elif $uv python install --quiet 3.11 >&2 2>/dev/null &&
    py=$($uv python find --system --no-project 3.11 2>/dev/null); then
    echo "$py"
  else
    fail "no Python 3.11 found and uv could not download one: install Python 3.11" \
      "(e.g. 'apt install python3.11' or 'brew install python@3.11'), or run 'uv python install 3.11'" \
      "where it can reach GitHub, then run make again."
  fi
}

uv=$(find_uv)
case "${1:-}" in
  uv)
    shift
    exec $uv "$@"
    ;;
  --check)
    py=$(find_python "$uv")
    echo "uv: $uv ($($uv --version))"
    echo "python: $py ($("$py" --version 2>&1))"
    exit 0
    ;;
esac

py=$(find_python "$uv")
# --compile-bytecode: every installed module is compiled once, here (about a minute of CPU). Where
# PYTHONDONTWRITEBYTECODE is set, as in many containers, Python would otherwise compile TensorFlow's
# thousands of modules again in every process: `import cifar_course` took 18.6 s of CPU instead of 5.5 s
# (2-core AMD EPYC), paid by every chapter's kernel, test worker and subprocess of `make test`.
$uv sync --locked --all-extras --compile-bytecode --python "$py"
# The kernel every chapter names (kernelspec `cifar-course` in its header), inside .venv so no user-level
# kernel can stand in for it; its env keeps TensorFlow's C++ start-up log out of every notebook.
.venv/bin/python -m ipykernel install --sys-prefix --name "$KERNEL" \
  --display-name "Python 3 (cifar-course)" --env TF_CPP_MIN_LOG_LEVEL 3 >/dev/null
# JupyterLab in .venv opens MyST Markdown (the chapters) as notebooks on a double click.
mkdir -p .venv/share/jupyter/lab/settings
cat >.venv/share/jupyter/lab/settings/overrides.json <<'JSON'
{"@jupyterlab/docmanager-extension:plugin":
  {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}
JSON
