"""An HTTP inference service for an exported model: FastAPI on uvicorn.

    cifar-course serve model.tflite --port 8000 --top-k 3

Introduced in the deployment chapter (10). Endpoints:
    GET  /          a small web page: pick or drop an image, see the top-k classes as bars
    GET  /docs      the OpenAPI page, where an upload can be tried from the browser
    GET  /health    runs the model on one blank image: {"status": "ok", ...}, or 503 if it fails
    POST /predict   one image as the body (Content-Type image/png or image/jpeg), or a batch as
                    multipart/form-data (one file part per image); answers JSON top-k classes per image

The model is a `.tflite` file, a `.onnx` file or a SavedModel folder, with its preprocessing file beside
it (`runtime.write_preprocessing`). Images of another size are resized (bilinear) to the model's input and
the answer says so; grey or RGBA images are converted to RGB. Every client mistake gets a 4xx JSON body
{"error": ..., "status": ...} and the server carries on; a bug of ours gets a 500 and a logged traceback.

Nothing here imports TensorFlow (only a SavedModel needs it): the serving install runs without it.
Defences against bad clients, most of them uvicorn's own: a deadline for the request head and one for
the body (a stalled client is answered 408 and dropped), idle keep-alive connections closed after a few
seconds, a cap on requests in flight (answered 503, retry later) and on open connections, a body limit
answered 413 before the body is read, graceful shutdown on SIGTERM (requests in flight are finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from .runtime import TFLiteModel, artifact_kind, load_artifact, read_preprocessing, standardize

IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of 64 CIFAR-sized PNGs is ~200 KB; 8 MB leaves room for photos
MAX_BATCH = 64
MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding
MAX_IN_FLIGHT = 32  # requests being handled at once; more are answered 503 at once (clients retry)
MAX_CONNECTIONS = 256  # open connections; uvicorn answers 503 beyond
HEAD_TIMEOUT = 10.0  # seconds for a client to send a complete request head
BODY_TIMEOUT = 10.0  # seconds for the whole body to arrive once the head has
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept open
GRACEFUL_TIMEOUT = 10  # seconds given to requests in flight after SIGTERM

logger = logging.getLogger("cifar_course.serve")


class RequestError(Exception):
    """A problem with the request, answered with `status` and a message telling the client what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------
# The model behind the endpoint


class Predictor:
    """An exported model plus its preprocessing: bytes of PNG/JPEG in, top-k classes out.

    Inference runs on `workers` threads (default: one per core). A TFLite interpreter is not
    thread-safe, so each thread gets its own; an ONNX or SavedModel session is shared.
    """

    def __init__(self, path, num_threads: int | None = None, workers: int | None = None):
        self.path = Path(path)
        self.kind = artifact_kind(self.path)
        info = read_preprocessing(self.path)
        self.class_names = info["class_names"]
        self.input_shape = tuple(info["input_shape"])
        self.mean = np.asarray(info["mean"], np.float32)
        self.std = np.asarray(info["std"], np.float32)
        self.num_threads = num_threads
        self.workers = workers or os.cpu_count() or 1
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cifar-course-infer")
        self._local = threading.local()
        self._shared = None if self.kind == "tflite" else load_artifact(self.path, num_threads)
        self._runner()  # load now, so a broken model fails at start-up, not on the first request

    def _runner(self):
        if self._shared is not None:
            return self._shared
        if getattr(self._local, "runner", None) is None:  # one interpreter per thread
            self._local.runner = TFLiteModel(self.path, num_threads=self.num_threads or 1)
        return self._local.runner

    def predict_array(self, x) -> np.ndarray:
        """Probabilities for standardized float32 images (N, H, W, C)."""
        return np.asarray(self._runner().predict(np.asarray(x, np.float32)))

    def prepare(self, content: bytes) -> tuple[np.ndarray, dict]:
        """Decode PNG/JPEG bytes to one standardized image; the dict notes any resize or conversion."""
        from PIL import Image, UnidentifiedImageError

        notes = {}
        try:
            image = Image.open(io.BytesIO(content))
            if image.format not in ("PNG", "JPEG"):
                raise RequestError(415, f"Got a {image.format} image; send PNG or JPEG.")
            if image.width * image.height > MAX_PIXELS:
                raise RequestError(413, f"Image of {image.width}x{image.height} pixels is too large; "
                                        f"send at most {MAX_PIXELS:,} pixels.")
            image.load()
        except RequestError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise RequestError(400, f"Could not decode the image ({err.__class__.__name__}): send a valid "
                                    "PNG or JPEG file.") from None
        if image.mode != "RGB":
            notes["converted_from_mode"] = image.mode
            image = image.convert("RGB")
        height, width = self.input_shape[:2]
        if image.size != (width, height):
            notes["resized"] = {"from": [image.height, image.width], "to": [height, width],
                                "method": "bilinear"}
            image = image.resize((width, height), Image.BILINEAR)
        return standardize(np.asarray(image), self.mean, self.std), notes

    def top_k(self, probabilities, k: int) -> list[dict]:
        order = np.argsort(-probabilities)[:k]
        return [{"class": self.class_names[i], "index": int(i), "probability": float(probabilities[i])}
                for i in order]

    def predict_images(self, parts: list[tuple[str, bytes]], top_k: int) -> dict:
        """The JSON answer for a list of (name, image bytes); raises RequestError for a bad image."""
        images, notes = [], []
        for name, content in parts:
            try:
                x, note = self.prepare(content)
            except RequestError as err:
                raise RequestError(err.status, f"{name}: {err}") from None
            images.append(x)
            notes.append(note)
        start = time.perf_counter()
        probabilities = self.predict_array(np.stack(images))
        elapsed = time.perf_counter() - start
        predictions = [{"name": name, "top_k": self.top_k(probs, top_k), **note}
                       for (name, _), note, probs in zip(parts, notes, probabilities)]
        return {"model": self.path.name, "kind": self.kind, "batch_size": len(predictions),
                "inference_ms": round(1000 * elapsed, 3), "predictions": predictions}

    def check(self) -> None:
        """Run the model on one blank image; raise if the answer is not a probability vector."""
        probabilities = self.predict_array(np.zeros((1, *self.input_shape), np.float32))[0]
        if not (np.all(np.isfinite(probabilities)) and abs(float(probabilities.sum()) - 1) < 1e-3):
            raise RuntimeError(f"the model answered {probabilities!r}, not probabilities")


def load_predictor(path, num_threads: int | None = None, workers: int | None = None) -> Predictor:
    return Predictor(path, num_threads, workers)


# ------------------------------------------------------------------------------------------------
# The application


def error_body(status: int, message: str) -> dict:
    return {"error": message, "status": status}


async def send_json(send, status: int, payload: dict, close: bool = False, headers=()) -> None:
    """Answer from ASGI middleware (before FastAPI has the request)."""
    body = json.dumps(payload).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: caps requests in flight (503) and reads the body under a size limit (413, sent
    before the body is read; uvicorn then discards the rest, so the client can read the answer) and a
    deadline (408, connection closed), so the application only ever sees a complete, bounded body."""

    def __init__(self, app, max_body_bytes: int, body_timeout: float, max_in_flight: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.body_timeout, self.max_in_flight = body_timeout, max_in_flight
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            return await send_json(send, 503, error_body(
                503, f"The server is busy ({self.max_in_flight} requests in flight): retry shortly."),
                headers=[(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            if scope["method"] in ("GET", "HEAD", "OPTIONS"):
                return await self.app(scope, receive, send)
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect

            await self.app(scope, replay, send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, scope, receive, send) -> bytes | None:
        limit = self.max_body_bytes
        too_big = RequestError(413, f"The body is larger than the {limit:,} bytes accepted; send fewer "
                                    "or smaller images per request.")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > limit:  # h11 has checked that it is a number
            await send_json(send, 413, error_body(413, str(too_big)))
            return None
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                remaining = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(receive(), max(remaining, 0))
            except TimeoutError:
                await send_json(send, 408, error_body(
                    408, f"The body did not arrive within {self.body_timeout:g} s."), close=True)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked upload that grew too large
                await send_json(send, 413, error_body(413, str(too_big)))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
}}}


def make_app(model, top_k: int = 3, max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH,
             max_in_flight: int = MAX_IN_FLIGHT, body_timeout: float = BODY_TIMEOUT,
             num_threads: int | None = None, workers: int | None = None):
    """The ASGI application (FastAPI behind `RequestGuard`) for a model path or a Predictor."""
    predictor = model if isinstance(model, Predictor) else Predictor(model, num_threads, workers)
    if not 1 <= top_k <= len(predictor.class_names):
        raise ValueError(f"top_k must be between 1 and {len(predictor.class_names)}, got {top_k}.")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        predictor.executor.shutdown(wait=False)

    app = FastAPI(title="cifar-course inference service", lifespan=lifespan,
                  description=f"Serves {predictor.path.name} ({predictor.kind}): top-{top_k} classes of "
                              f"{', '.join(predictor.class_names)}.")
    app.state.predictor = predictor

    async def run(function, *args):
        return await asyncio.get_running_loop().run_in_executor(predictor.executor, function, *args)

    @app.exception_handler(RequestError)
    async def request_error(request, err):
        return JSONResponse(error_body(err.status, str(err)), err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err):
        message = {404: f"No such endpoint {request.url.path}: use GET /health or POST /predict.",
                   405: f"{request.method} is not allowed on {request.url.path}: use GET /health or "
                        "POST /predict."}.get(err.status_code, str(err.detail))
        return JSONResponse(error_body(err.status_code, message), err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, err):
        return JSONResponse(error_body(422, str(err.errors())), 422)

    @app.exception_handler(Exception)
    async def internal_error(request, err):  # a bug of ours: keep the traceback, keep serving
        logger.error("500 on %s %s", request.method, request.url.path, exc_info=err)
        return JSONResponse(error_body(500, f"Internal error ({err.__class__.__name__}); the server is "
                                            "still up."), 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((resources.files(__package__) / "static" / "index.html").read_text())

    @app.get("/health")
    async def health():
        """Runs the model on one blank image: 'ok' means it answered with probabilities."""
        try:
            await run(predictor.check)
        except Exception as err:
            logger.error("health check failed", exc_info=err)
            return JSONResponse({"status": "failing", "error": str(err)}, 503)
        return {"status": "ok", "model": predictor.path.name, "kind": predictor.kind,
                "input_shape": list(predictor.input_shape), "classes": predictor.class_names,
                "top_k": top_k, "max_batch": max_batch, "max_body_bytes": max_body_bytes}

    @app.post("/predict", openapi_extra=UPLOAD_SCHEMA)
    async def predict(request: Request):
        """One PNG/JPEG image as the body, or several as multipart/form-data: top-k classes of each."""
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        if media in IMAGE_TYPES:
            body = await request.body()
            if not body:
                raise RequestError(400, "Empty body: send an image.")
            parts = [("image", body)]
        elif media == "multipart/form-data":
            parts = await read_parts(request, content_type, max_batch)
        else:
            raise RequestError(415, f"Content-Type {media or '(none)'} is not accepted: send image/png, "
                                    "image/jpeg, or multipart/form-data with one file part per image.")
        return await run(predictor.predict_images, parts, top_k)

    return RequestGuard(app, max_body_bytes, body_timeout, max_in_flight)


async def read_parts(request, content_type: str, max_batch: int) -> list[tuple[str, bytes]]:
    """The file parts of a multipart/form-data request as (name, bytes)."""
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart/form-data without a boundary parameter.")
    try:
        form = await request.form(max_files=max_batch + 1, max_fields=max_batch + 1)
    except HTTPException as err:
        status = 413 if "too many" in str(err.detail).lower() else 400
        raise RequestError(status, f"Malformed or oversized multipart body ({err.detail}); send at most "
                                   f"{max_batch} file parts.") from None
    parts = [(item.filename or key, await item.read()) for key, item in form.multi_items()
             if isinstance(item, UploadFile)]
    await form.close()
    parts = [(name, content) for name, content in parts if content]
    if not parts:
        raise RequestError(400, "The multipart body holds no file parts: add one part per image.")
    if len(parts) > max_batch:
        raise RequestError(413, f"{len(parts)} images in one request; send at most {max_batch}.")
    return parts


# ------------------------------------------------------------------------------------------------
# The server: uvicorn, with JSON for the errors it answers itself and a deadline for request heads


def raw_json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps(error_body(status, message)).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a JSON body on the 400 it sends for an unparseable request
    and a deadline for the request head (uvicorn times out idle keep-alive connections, but not a
    client that sends its head slowly or not at all)."""

    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm_head_deadline()

    def _arm_head_deadline(self):
        cycle = self.cycle

        def expire():  # no new request head since the timer was armed, and none being answered
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                self.transport.write(raw_json_response(408, "Request Timeout", "No complete request "
                                                       f"within {self.head_timeout:g} s."))
                self.transport.close()

        self._head_timer = self.loop.call_later(self.head_timeout, expire)

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_timer.cancel()
            self._arm_head_deadline()

    def connection_lost(self, exc):
        self._head_timer.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(raw_json_response(
            400, "Bad Request", "Invalid HTTP request (request line, headers or Content-Length): "
                                "send a well-formed HTTP/1.1 request."))
        self.transport.close()


def make_config(app, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False,
                head_timeout: float = HEAD_TIMEOUT, keep_alive: int = KEEP_ALIVE,
                max_connections: int = MAX_CONNECTIONS,
                graceful_timeout: int = GRACEFUL_TIMEOUT) -> uvicorn.Config:
    """uvicorn's settings: HTTP/1.1 (h11, pure Python), the timeouts and limits above."""
    protocol = type("Protocol", (Protocol,), {"head_timeout": head_timeout})
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=keep_alive,
                          limit_concurrency=max_connections, timeout_graceful_shutdown=graceful_timeout,
                          log_level="info" if verbose else "warning", access_log=verbose,
                          server_header=False)


SERVER_OPTIONS = ("host", "port", "verbose", "head_timeout", "keep_alive", "max_connections",
                  "graceful_timeout")


def make_server(model_path, **options) -> uvicorn.Server:
    """A ready (not yet serving) uvicorn.Server for the model; `options` are those of `make_app` and
    `make_config`."""
    server_options = {k: options.pop(k) for k in SERVER_OPTIONS if k in options}
    return uvicorn.Server(make_config(make_app(model_path, **options), **server_options))


def start_server(model_path, **options) -> uvicorn.Server:
    """Serve from a background thread of this process on 127.0.0.1 and a free port; returns the
    server, whose `url` attribute is its base URL. Stop it with `stop_server`."""
    host = options.pop("host", "127.0.0.1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, options.pop("port", 0)))
    server = make_server(model_path, host=host, **options)
    server.url = f"http://{host}:{sock.getsockname()[1]}"
    server.thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                                     name="cifar-course-serve")
    server.thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not server.thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"The server on {server.url} did not start.")
        time.sleep(0.01)
    return server


def stop_server(server) -> None:
    """Stop serving (requests in flight are finished) and wait for the thread to end."""
    server.should_exit = True
    server.thread.join(timeout=30)


@contextlib.contextmanager
def running_server(model_path, **options):
    """Serve in a background thread for the duration of a `with` block; yields the base URL.

        with cc.running_server("model.tflite") as url:
            ...  # POST to f"{url}/predict"
    """
    server = start_server(model_path, **options)
    try:
        yield server.url
    finally:
        stop_server(server)


def serve(model_path, host: str = "127.0.0.1", port: int = 8000, top_k: int = 3, **options) -> None:
    """Serve until SIGINT or SIGTERM (what `cifar-course serve` runs); on either, requests in flight
    are finished before the process ends."""
    server = make_server(model_path, host=host, port=port, top_k=top_k, verbose=True, **options)
    print(f"Serving {model_path} on http://{host}:{port} (page /, API docs /docs, GET /health, "
          "POST /predict); Ctrl+C or SIGTERM stops.", flush=True)
    server.run()


# ------------------------------------------------------------------------------------------------
# A client, for the chapter and the tests


def encode_png(image) -> bytes:
    """uint8 (H, W, 3) array -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_multipart(files: dict) -> tuple[str, bytes]:
    """(content_type, body) of a multipart/form-data upload of {name: (bytes, content_type)}."""
    boundary = "cifar-course-" + os.urandom(12).hex()
    chunks = []
    for name, (content, ctype) in files.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                      f'filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


def post(url: str, body: bytes, content_type: str, timeout: float = 30) -> tuple[int, dict]:
    """POST a body; return (status, JSON answer), for 4xx answers too."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def classify(url: str, images, top_k_only: bool = True, timeout: float = 30) -> dict:
    """Send uint8 images (one (H, W, 3) array, or a list of them as one multipart batch) to a running
    server's /predict and return its JSON answer."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        status, answer = post(f"{url}/predict", encode_png(images), "image/png", timeout)
    else:
        files = {f"image{i}.png": (encode_png(im), "image/png") for i, im in enumerate(images)}
        content_type, body = encode_multipart(files)
        status, answer = post(f"{url}/predict", body, content_type, timeout)
    if status != 200:
        raise RuntimeError(f"The server answered {status}: {answer.get('error')}")
    return answer
