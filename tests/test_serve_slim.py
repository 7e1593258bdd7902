"""The serving install without TensorFlow (requirements-serve.txt, what the Dockerfile installs), in a
throwaway venv made with uv (packages come from uv's cache after the first run): the server answers
from that venv with TFLite (tflite_runtime) and ONNX models, `python -X importtime` shows that no
TensorFlow module was imported, and SIGTERM lets a request in flight finish. Skipped, with the reason,
only when the package registry cannot be reached and the cache does not hold the packages."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tensorflow import keras

from cifar_course import export as E
from cifar_course import runtime as R
from cifar_course import serve as S
from cifar_course.models import build_small_cnn

ROOT = Path(__file__).resolve().parents[1]
NETWORK_ERRORS = ("failed to fetch", "dns error", "connection refused", "error sending request",
                  "tcp connect error", "network is unreachable", "could not connect", "timed out")


def uv_command() -> list[str]:
    """The uv that made .venv: tools/bootstrap.sh finds it where make put it (on a bare CI machine that
    is .tools/bin/uv, on no PATH), so this test needs no uv of its own."""
    command = [str(ROOT / "tools" / "bootstrap.sh"), "uv"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"no uv to build the serving venv: tools/bootstrap.sh said {done.stderr.strip()}")
    return command


def run_uv(uv, *args):
    done = subprocess.run([*uv, *args], capture_output=True, text=True, timeout=600)
    if done.returncode:
        if any(text in done.stderr.lower() for text in NETWORK_ERRORS):
            pytest.skip(f"package registry unreachable and the uv cache lacks a package: "
                        f"{done.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"uv {' '.join(args)} failed:\n{done.stderr}")


@pytest.fixture(scope="module")
def slim_python(tmp_path_factory):
    """The Python of a fresh venv holding requirements-serve.txt and the course package (no deps)."""
    uv, venv = uv_command(), tmp_path_factory.mktemp("slim") / "venv"
    run_uv(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    run_uv(uv, "pip", "install", "--quiet", "--python", python, "-r", str(ROOT / "requirements-serve.txt"))
    run_uv(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", str(ROOT))
    return python


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = build_small_cnn(width=4)
    folder = tmp_path_factory.mktemp("slim_models")
    names = [f"c{i}" for i in range(10)]
    return E.export_for_serving(model, folder, names, (np.full(3, 0.5), np.full(3, 0.25)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(python, model, cwd, *flags):
    """`python [flags] -m cifar_course serve MODEL` on a free port; returns (process, url)."""
    port = free_port()
    process = subprocess.Popen([python, *flags, "-m", "cifar_course", "serve", str(model), "--port",
                                str(port)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {process.communicate()[1].decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                return process, url, json.loads(response.read())
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the server did not answer /health within 60 s")


def stop(process) -> str:
    """SIGTERM, as `docker stop` sends; the log must show a clean shutdown. uvicorn re-raises the
    signal once it has shut down, so the exit status says "terminated by SIGTERM" (143 in a shell)."""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    log = err.decode()
    assert process.returncode == -signal.SIGTERM and "Finished server process" in log, log[-2000:]
    return log


def test_slim_venv_has_no_tensorflow(slim_python):
    probe = "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'tflite_runtime', " \
            "'onnxruntime', 'fastapi') if u.find_spec(m)])"
    found = subprocess.run([slim_python, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "['tflite_runtime', 'onnxruntime', 'fastapi']"


def test_slim_server_answers_without_importing_tensorflow(slim_python, models, tmp_path):
    process, url, health = start(slim_python, models["tflite"], tmp_path, "-X", "importtime")
    try:
        assert health["status"] == "ok" and health["kind"] == "tflite"
        images = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8) for i in range(4)]
        served = S.classify(url, images)["predictions"]
        info = R.read_preprocessing(models["tflite"])
        direct = R.TFLiteModel(models["tflite"]).predict(
            R.standardize(np.stack(images), info["mean"], info["std"]))
        for prediction, probabilities in zip(served, direct):
            assert prediction["top_k"][0]["index"] == int(probabilities.argmax())
            assert abs(prediction["top_k"][0]["probability"] - float(probabilities.max())) < 1e-5
    finally:
        log = stop(process)
    imported = re.findall(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log)
    assert "cifar_course.serve" in imported and "tflite_runtime.interpreter" in imported
    assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras")]


def test_slim_onnx_server_and_sigterm(slim_python, models, tmp_path):
    """The ONNX model from the slim venv; then SIGTERM, as `docker stop` sends it: a request whose
    body is still arriving gets its answer, then the server shuts down."""
    process, url, health = start(slim_python, models["onnx"], tmp_path)
    assert health["kind"] == "onnx"
    answer = S.classify(url, np.zeros((40, 40, 3), np.uint8))
    assert answer["predictions"][0]["resized"]["from"] == [40, 40]
    png = S.encode_png(np.zeros((32, 32, 3), np.uint8))
    head = (f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(png)}\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20) as sock:
            sock.sendall(head + png[:50])
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None  # still finishing the request
            sock.sendall(png[50:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b'"predictions"' in answer
        log = process.communicate(timeout=20)[1].decode()
        assert process.returncode == -signal.SIGTERM and "Finished server process" in log
    finally:
        if process.poll() is None:
            process.kill()
