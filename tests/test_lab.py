"""`make lab`: JupyterLab lists the chapters as notebooks and runs them on the course's own kernel.

The server runs on loopback with a token, is driven through its REST API and a kernel websocket as
JupyterLab drives it, and is shut down at the end. A user-level `cifar-course` and `python3` kernelspec
that cannot start is planted in the user's Jupyter data folder: the one inside .venv must win.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.name for p in (ROOT / "chapters").glob("[0-9][0-9]_*.md"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, port, token):
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def api(self, path, method="GET", body=None):
        request = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def execute(self, kernel_id, code, timeout=180):
        """Run code on a kernel over its websocket, as JupyterLab does; return (reply, iopub messages)."""
        import websocket

        ws = websocket.create_connection(
            f"ws://{self.base[7:]}/api/kernels/{kernel_id}/channels?token={self.token}", timeout=timeout)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        reply, outputs, idle = None, [], False
        deadline = time.monotonic() + timeout
        while not (reply and idle) and time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            else:
                outputs.append(msg)
        ws.close()
        assert reply and idle, f"no reply from the kernel in {timeout} s"
        return reply, outputs


@pytest.fixture
def lab(tmp_path):
    # The user's own Jupyter folders, each with kernels that would fail if they were chosen.
    user_data = tmp_path / "jupyter-data"
    for name in ("cifar-course", "python3"):
        (user_data / "kernels" / name).mkdir(parents=True)
        (user_data / "kernels" / name / "kernel.json").write_text(json.dumps(
            {"argv": ["/bin/false", "{connection_file}"], "display_name": f"user {name}",
             "language": "python"}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "JUPYTER_PREFER_ENV_PATH")}
    env.update(JUPYTER_DATA_DIR=str(user_data), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"), TF_CPP_MIN_LOG_LEVEL="0")
    port, token = free_port(), secrets.token_hex(16)
    args = f"--no-browser --IdentityProvider.token={token} --ServerApp.port_retries=0"
    args += " --allow-root" * (os.geteuid() == 0)  # CI containers run as root
    log = open(tmp_path / "lab.log", "w+")
    server = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_PORT={port}", f"LAB_ARGS={args}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = Lab(port, token)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client.api("/api/status")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (log.seek(0), log.read())[1]
                time.sleep(0.5)
        yield client
        client.api("/api/shutdown", method="POST")
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()


@pytest.mark.timeout(400)
def test_make_lab_lists_the_chapters_as_notebooks_and_runs_them_on_the_course_kernel(lab):
    listing = lab.api("/api/contents/chapters")
    kinds = {item["name"]: item["type"] for item in listing["content"]}
    assert CHAPTERS and {name: kinds.get(name) for name in CHAPTERS} == dict.fromkeys(CHAPTERS, "notebook")

    chapter = lab.api(f"/api/contents/chapters/{CHAPTERS[0]}?type=notebook&content=1")
    kernel_name = chapter["content"]["metadata"]["kernelspec"]["name"]
    assert chapter["type"] == "notebook" and kernel_name == "cifar-course"
    spec = lab.api("/api/kernelspecs")["kernelspecs"][kernel_name]["spec"]
    assert Path(spec["argv"][0]) == ROOT / ".venv" / "bin" / "python"
    assert spec["env"] == {"TF_CPP_MIN_LOG_LEVEL": "3"}

    # Open the chapter as JupyterLab does (a session with the kernel it names) and run its first code cell.
    session = lab.api("/api/sessions", "POST", {"path": f"chapters/{CHAPTERS[0]}", "type": "notebook",
                                                "name": CHAPTERS[0], "kernel": {"name": kernel_name}})
    kernel_id = session["kernel"]["id"]
    first_cell = next(c for c in chapter["content"]["cells"] if c["cell_type"] == "code")["source"]
    reply, outputs = lab.execute(kernel_id, first_cell)
    assert reply["status"] == "ok", reply
    assert not [m for m in outputs if m["msg_type"] == "error"]

    reply, outputs = lab.execute(
        kernel_id, "import os, sys; print(sys.prefix, os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert printed.split() == [str(ROOT / ".venv"), "3"]  # not the caller's "0"
    lab.api(f"/api/sessions/{session['id']}", "DELETE")
