"""A small HTTP inference service for an exported model, on the standard library's ThreadingHTTPServer.

    cifar-course serve model.tflite --port 8000 --top-k 3

Introduced in the deployment chapter (10). Endpoints:
    GET  /health    {"status": "ok", ...}: the model is loaded and answering
    POST /predict   one image as the body (Content-Type image/png or image/jpeg), or a batch as
                    multipart/form-data (one part per image); answers JSON top-k classes per image

The model is a `.tflite` file, a `.onnx` file or a SavedModel folder, with its preprocessing file beside
it (see `export.write_preprocessing`). Images of another size are resized (bilinear) to the model's input
and the answer says so; grey or RGBA images are converted to RGB. Bad requests get a 4xx JSON error
{"error": ...} and the server carries on.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .export import read_preprocessing

IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of 64 CIFAR-sized PNGs is ~200 KB; 8 MB leaves room for photos
MAX_BATCH = 64
MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding


class RequestError(Exception):
    """A problem with the request, answered with `status` and a message telling the client what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------
# The model behind the endpoint


class Predictor:
    """An exported model plus its preprocessing: bytes of PNG/JPEG in, top-k classes out.

    `predict_array` is safe to call from several threads (the TFLite interpreter is used under a lock).
    """

    def __init__(self, path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"No model at {self.path}: pass a .tflite or .onnx file or a "
                                    "SavedModel folder written by cc.export_*.")
        info = read_preprocessing(self.path)
        self.class_names = info["class_names"]
        self.input_shape = tuple(info["input_shape"])
        self.mean = np.asarray(info["mean"], np.float32)
        self.std = np.asarray(info["std"], np.float32)
        self._lock = threading.Lock()
        suffix = self.path.suffix.lower()
        if self.path.is_dir():
            self.kind = "savedmodel"
            import tensorflow as tf

            loaded = tf.saved_model.load(str(self.path))
            signature = loaded.signatures["serving_default"]
            self._keep = loaded  # the signature needs its object alive
            self._run = lambda x: next(iter(signature(tf.constant(x)).values())).numpy()
        elif suffix == ".tflite":
            self.kind = "tflite"
            from .compress import TFLiteModel

            runner = TFLiteModel(self.path, num_threads=num_threads)

            def run(x):
                with self._lock:  # one interpreter, one caller at a time
                    return runner.predict(x, batch_size=MAX_BATCH)

            self._run = run
        elif suffix == ".onnx":
            self.kind = "onnx"
            from .export import load_onnx, predict_onnx

            session = load_onnx(self.path)
            self._run = lambda x: predict_onnx(session, x)
        else:
            raise ValueError(f"Cannot serve {self.path}: expected a .tflite or .onnx file or a SavedModel "
                             "folder.")

    def predict_array(self, x) -> np.ndarray:
        """Probabilities for standardized float32 images (N, H, W, C)."""
        return np.asarray(self._run(np.asarray(x, np.float32)))

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
        x = np.asarray(image, np.float32) / 255.0
        return (x - self.mean) / self.std, notes

    def top_k(self, probabilities, k: int) -> list[dict]:
        order = np.argsort(-probabilities)[:k]
        return [{"class": self.class_names[i], "index": int(i), "probability": float(probabilities[i])}
                for i in order]


def load_predictor(path, num_threads: int | None = None) -> Predictor:
    return Predictor(path, num_threads)


# ------------------------------------------------------------------------------------------------
# Requests


def split_upload(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The images of a request as (name, bytes): the body itself for image/png or image/jpeg, every
    file part for multipart/form-data."""
    media = content_type.split(";")[0].strip().lower()
    if media in IMAGE_TYPES:
        return [("image", body)]
    if media != "multipart/form-data":
        raise RequestError(415, f"Content-Type {media or '(none)'} is not accepted: send image/png, "
                                "image/jpeg, or multipart/form-data with one file part per image.")
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart/form-data without a boundary parameter.")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RequestError(400, "Malformed multipart body.")
    parts = []
    for i, part in enumerate(message.iter_parts()):
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        name = part.get_filename() or part.get_param("name", header="content-disposition") or f"part{i}"
        parts.append((str(name), payload))
    if not parts:
        raise RequestError(400, "The multipart body holds no file parts: add one part per image.")
    return parts


def predict_upload(predictor: Predictor, content_type: str, body: bytes, top_k: int,
                   max_batch: int = MAX_BATCH) -> dict:
    """The JSON answer for one request (raises RequestError for the client's mistakes)."""
    parts = split_upload(content_type, body)
    if len(parts) > max_batch:
        raise RequestError(413, f"{len(parts)} images in one request; send at most {max_batch}.")
    images, notes = [], []
    for name, content in parts:
        try:
            x, note = predictor.prepare(content)
        except RequestError as err:
            raise RequestError(err.status, f"{name}: {err}") from None
        images.append(x)
        notes.append(note)
    start = time.perf_counter()
    probabilities = predictor.predict_array(np.stack(images))
    elapsed = time.perf_counter() - start
    predictions = []
    for (name, _), note, probs in zip(parts, notes, probabilities):
        predictions.append({"name": name, "top_k": predictor.top_k(probs, top_k), **note})
    return {"model": predictor.path.name, "kind": predictor.kind, "batch_size": len(predictions),
            "inference_ms": round(1000 * elapsed, 3), "predictions": predictions}


class Handler(BaseHTTPRequestHandler):
    """GET /health and POST /predict; every error is a JSON body with a 4xx (or 500) status."""

    server_version = "cifar-course"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, payload: dict):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True  # the rest of a refused body may still be on the wire
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.split("?")[0] != "/health":
            return self._send(404, {"error": f"No such endpoint {self.path}: use GET /health or "
                                             "POST /predict."})
        p = self.server.predictor
        self._send(200, {"status": "ok", "model": p.path.name, "kind": p.kind,
                         "input_shape": list(p.input_shape), "classes": p.class_names,
                         "top_k": self.server.top_k, "max_batch": self.server.max_batch,
                         "max_body_bytes": self.server.max_body_bytes})

    def do_POST(self):  # noqa: N802
        try:
            if self.path.split("?")[0] not in ("/predict", "/"):
                raise RequestError(404, f"No such endpoint {self.path}: POST images to /predict.")
            length = self.headers.get("Content-Length")
            if length is None:
                raise RequestError(411, "Send a Content-Length header (chunked uploads are not accepted).")
            try:
                length = int(length)
            except ValueError:
                raise RequestError(400, f"Content-Length {length!r} is not a number.") from None
            if length > self.server.max_body_bytes:
                raise RequestError(413, f"Body of {length:,} bytes is larger than the "
                                        f"{self.server.max_body_bytes:,} accepted; send fewer or smaller "
                                        "images per request.")
            if length == 0:
                raise RequestError(400, "Empty body: send an image.")
            body = self.rfile.read(length)
            if len(body) < length:
                raise RequestError(400, "The body ended before Content-Length bytes arrived.")
            answer = predict_upload(self.server.predictor, self.headers.get("Content-Type", ""), body,
                                    self.server.top_k, self.server.max_batch)
            self._send(200, answer)
        except RequestError as err:
            self._send(err.status, {"error": str(err), "status": err.status})
        except Exception as err:  # a bug of ours: answer 500, keep serving
            self._send(500, {"error": f"Internal error ({err.__class__.__name__}); the server is still up.",
                             "status": 500})

    def do_PUT(self):  # noqa: N802
        self._send(405, {"error": "Use GET /health or POST /predict."})

    do_DELETE = do_PATCH = do_PUT


def make_server(model_path, host: str = "127.0.0.1", port: int = 8000, top_k: int = 3,
                max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH, verbose: bool = False,
                num_threads: int | None = None) -> ThreadingHTTPServer:
    """A ready (not yet serving) ThreadingHTTPServer for the model; port 0 picks a free port."""
    predictor = model_path if isinstance(model_path, Predictor) else Predictor(model_path, num_threads)
    if not 1 <= top_k <= len(predictor.class_names):
        raise ValueError(f"top_k must be between 1 and {len(predictor.class_names)}, got {top_k}.")
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.predictor, server.top_k, server.verbose = predictor, top_k, verbose
    server.max_body_bytes, server.max_batch = max_body_bytes, max_batch
    return server


def server_url(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def start_server(model_path, **options):
    """Serve from a background thread of this process (port 0: a free port); returns the server, whose
    `url` attribute is its base URL. Stop it with `stop_server`."""
    server = make_server(model_path, **{"port": 0, **options})
    server.thread = threading.Thread(target=server.serve_forever, daemon=True, name="cifar-course-serve")
    server.thread.start()
    server.url = server_url(server)
    return server


def stop_server(server) -> None:
    """Stop serving, close the socket and wait for the thread to end."""
    server.shutdown()
    server.server_close()
    server.thread.join(timeout=10)


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
    """Serve until interrupted (what `cifar-course serve` runs)."""
    server = make_server(model_path, host, port, top_k, verbose=True, **options)
    print(f"Serving {model_path} on {server_url(server)} (GET /health, POST /predict); Ctrl+C stops.",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


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
    boundary = "cifar-course-" + "".join(f"{b:02x}" for b in np.random.bytes(12))
    chunks = []
    for name, (content, ctype) in files.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
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
