"""The HTTP service, with real requests on 127.0.0.1 (an ephemeral port): single and batch uploads,
resizing, every kind of bad request answered 4xx, a bounded concurrent load, and the CLI's arguments."""

import http.client
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image
from tensorflow import keras

from cifar_course import export as E
from cifar_course import serve as S
from cifar_course.models import build_small_cnn

NAMES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_small_cnn(width=4)
    folder = tmp_path_factory.mktemp("served")
    stats = (np.full(3, 0.5), np.full(3, 0.25))
    return E.export_tflite(model, folder / "model.tflite", NAMES, stats), model, stats


@pytest.fixture(scope="module")
def server(model_path):
    with S.running_server(model_path[0], top_k=3, max_body_bytes=200_000, max_batch=16) as url:
        yield url


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def raw(url, method, path, body=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, payload


def test_health(server):
    status, answer = raw(server, "GET", "/health")
    assert status == 200 and answer["status"] == "ok" and answer["classes"] == NAMES


def test_single_png_matches_the_model(server, model_path):
    _, model, (mean, std) = model_path
    img = image(1)
    answer = S.classify(server, img)
    top = answer["predictions"][0]["top_k"]
    expected = model.predict(((img / 255.0 - mean) / std)[None].astype("float32"), verbose=0)[0]
    assert len(top) == 3 and top[0]["class"] == NAMES[int(expected.argmax())]
    assert abs(top[0]["probability"] - float(expected.max())) < 1e-4
    assert "resized" not in answer["predictions"][0]


def test_jpeg_batch_and_resize(server):
    buffer = io.BytesIO()
    Image.fromarray(image(2, size=64)).save(buffer, format="JPEG")
    grey = io.BytesIO()
    Image.fromarray(image(3)[..., 0]).save(grey, format="PNG")
    content_type, body = S.encode_multipart({
        "big.jpg": (buffer.getvalue(), "image/jpeg"), "grey.png": (grey.getvalue(), "image/png"),
        "plain.png": (S.encode_png(image(4)), "image/png")})
    status, answer = S.post(f"{server}/predict", body, content_type)
    assert status == 200 and answer["batch_size"] == 3
    big, grey_answer, plain = answer["predictions"]
    assert big["resized"] == {"from": [64, 64], "to": [32, 32], "method": "bilinear"}
    assert grey_answer["converted_from_mode"] == "L" and "resized" not in plain


@pytest.mark.parametrize("body, content_type, status", [
    (b"not an image", "image/png", 400),
    (b"{}", "application/json", 415),
    (b"--x\r\n\r\n--x--\r\n", "multipart/form-data", 400),  # no boundary parameter
    (b"--x--\r\n", "multipart/form-data; boundary=x", 400),  # no parts
    (b"GIF89a" + b"\0" * 30, "image/png", 400),
    (b"x" * 300_000, "image/png", 413),  # over max_body_bytes
])
def test_bad_requests_get_4xx_json(server, body, content_type, status):
    got, answer = raw(server, "POST", "/predict", body, {"Content-Type": content_type})
    assert got == status and answer["error"]
    assert raw(server, "GET", "/health")[0] == 200  # still serving


def test_other_errors(server):
    assert raw(server, "GET", "/nope")[0] == 404
    assert raw(server, "PUT", "/predict", b"x")[0] == 405
    assert raw(server, "POST", "/predict", b"", {"Content-Type": "image/png"})[0] == 400
    gif = io.BytesIO()
    Image.fromarray(image(5)).save(gif, format="GIF")
    assert raw(server, "POST", "/predict", gif.getvalue(), {"Content-Type": "image/png"})[0] == 415
    files = {f"{i}.png": (S.encode_png(image(i)), "image/png") for i in range(17)}
    content_type, body = S.encode_multipart(files)
    assert raw(server, "POST", "/predict", body, {"Content-Type": content_type})[0] == 413  # > max_batch


def test_concurrent_load(server):
    """8 threads x 10 requests, mixed with bad ones: every request answered, the server alive after."""
    png = S.encode_png(image(6))
    results, lock = [], threading.Lock()

    def client(worker):
        for i in range(10):
            bad = (worker + i) % 5 == 0
            status, _ = S.post(f"{server}/predict", b"broken" if bad else png, "image/png")
            with lock:
                results.append((bad, status))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 80
    assert all(status == (400 if bad else 200) for bad, status in results)
    assert raw(server, "GET", "/health")[0] == 200


def test_cli_rejects_missing_model(capsys):
    from cifar_course.__main__ import main

    assert main(["serve", "/nonexistent/model.tflite", "--port", "0"]) == 2
    assert "No model" in capsys.readouterr().err
