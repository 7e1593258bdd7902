"""The serving figures of issue 17, measured in one run (run it under the shared CPU lock):

    flock /tmp/cpu.lock .venv/bin/python benchmarks/serving.py [--clients 16 --requests 40]

1. installed size of the serving install (requirements-serve.txt in a fresh uv venv) against .venv;
2. cold start (process start to the first 200 from /health), serving install against the full one;
3. p50/p99 latency and throughput under `--clients` concurrent clients, each sending `--requests`
   single 32x32 PNGs one after another on fresh connections: the FastAPI/uvicorn server (full env,
   tf.lite, and serving install, tflite_runtime) against the previous ThreadingHTTPServer one
   (`git show main:cifar_course/serve.py`, run on the same tf.lite interpreter through runtime.py).

The model is the deployment chapter's small CNN (width 16, untrained: timing does not need weights).
Writes results/benchmarks/serving.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cifar_course as cc  # noqa: E402
from cifar_course import serve as S  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def make_slim_venv(folder: Path) -> tuple[str, float]:
    uv = [sys.executable, "-m", "uv"]
    if subprocess.run([*uv, "--version"], capture_output=True).returncode:
        uv = ["python3.11", "-m", "uv"]
    start = time.perf_counter()
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(folder)], check=True)
    python = str(folder / "bin" / "python")
    subprocess.run([*uv, "pip", "install", "-q", "--python", python, "-r",
                    str(ROOT / "requirements-serve.txt")], check=True)
    subprocess.run([*uv, "pip", "install", "-q", "--python", python, "--no-deps", str(ROOT)], check=True)
    return python, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], port: int, cwd) -> tuple[subprocess.Popen, float]:
    """Start a server process; return it and the seconds until /health first answered 200."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return process, time.perf_counter() - start
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}") from None
            time.sleep(0.02)


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def load(url: str, clients: int, requests: int) -> dict:
    """`clients` threads, each sending `requests` single-image requests back to back."""
    png = S.encode_png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
    latencies, errors, lock = [], [], threading.Lock()

    def client():
        for _ in range(requests):
            t0 = time.perf_counter()
            status, _ = S.post(f"{url}/predict", png, "image/png", timeout=60)
            elapsed = time.perf_counter() - t0
            with lock:
                (latencies if status == 200 else errors).append(elapsed if status == 200 else status)

    for _ in range(3):  # warm-up
        S.post(f"{url}/predict", png, "image/png")
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = 1000 * np.asarray(latencies)
    return {"requests": clients * requests, "errors": len(errors), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "throughput_rps": len(latencies) / wall}


OLD_SHIMS = {  # what main's serve.py imported, from where it lives now
    "__init__.py": "",
    "export.py": "from cifar_course.runtime import read_preprocessing, load_onnx, predict_onnx\n",
    "compress.py": "from cifar_course.runtime import TFLiteModel\n",
}


def old_server_package(folder: Path) -> Path:
    package = folder / "old_serving"
    package.mkdir()
    (package / "serve.py").write_text(subprocess.run(
        ["git", "-C", str(ROOT), "show", "main:cifar_course/serve.py"], capture_output=True, text=True,
        check=True).stdout)
    for name, text in OLD_SHIMS.items():
        (package / name).write_text(text)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--cold-starts", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cifar_course_serving_bench_"))
    cc.seed_everything(0)
    model = cc.build_small_cnn(width=16)
    model_path = cc.export_tflite(model, work / "model.tflite", cc.CLASS_NAMES,
                                  (np.full(3, 0.47), np.full(3, 0.25)))
    slim_python, install_s = make_slim_venv(work / "slim")
    full_python = str(ROOT / ".venv" / "bin" / "python")
    sizes = {"serving install (requirements-serve.txt)": du(work / "slim"),
             "full env (.venv)": du(ROOT / ".venv")}

    def serve_command(python, port):
        return [python, "-m", "cifar_course", "serve", str(model_path), "--port", str(port)]

    cold = {}
    for name, python in (("serving install", slim_python), ("full env", full_python)):
        times = []
        for _ in range(args.cold_starts):
            port = free_port()
            process, seconds = launch(serve_command(python, port), port, work)
            stop(process)
            times.append(seconds)
        cold[name] = {"median_s": statistics.median(times), "all_s": times}

    old_path = old_server_package(work)
    servers = {
        "previous (ThreadingHTTPServer, full env)": lambda port: [
            full_python, "-c", f"import sys; sys.path.insert(0, {str(old_path)!r}); "
            f"from old_serving.serve import serve; serve({str(model_path)!r}, port={port})"],
        "new (FastAPI/uvicorn, full env)": lambda port: serve_command(full_python, port),
        "new (FastAPI/uvicorn, serving install)": lambda port: serve_command(slim_python, port),
    }
    loads = {}
    for name, command in servers.items():
        port = free_port()
        process, _ = launch(command(port), port, work)
        try:
            loads[name] = load(f"http://127.0.0.1:{port}", args.clients, args.requests)
        finally:
            stop(process)

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")),
        platform.processor())
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu,
              "cores": os.cpu_count(), "python": platform.python_version(), "clients": args.clients,
              "requests_per_client": args.requests, "slim_install_s": install_s,
              "installed_bytes": sizes, "cold_start": cold, "load": loads}
    out = ROOT / "results" / "benchmarks" / "serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"Measured {result['when']} on {cpu} ({os.cpu_count()} cores), Python {result['python']}\n")
    print("| environment | installed size (MB) | cold start, median of "
          f"{args.cold_starts} (s) |\n|---|---|---|")
    for (name, size), (_, c) in zip(sizes.items(), cold.items()):
        print(f"| {name} | {size / 1e6:,.0f} | {c['median_s']:.2f} |")
    print(f"\n{args.clients} clients x {args.requests} single-image requests:\n")
    print("| server | p50 (ms) | p99 (ms) | max (ms) | requests/s | errors |\n|---|---|---|---|---|---|")
    for name, r in loads.items():
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
              f"{r['throughput_rps']:.0f} | {r['errors']} |")


if __name__ == "__main__":
    main()
