"""The HTTP service, with real requests on 127.0.0.1 (an ephemeral port): single and batch uploads,
resizing, the page and the OpenAPI docs, and every kind of bad request and bad client of issue 17
(each answered with a 4xx JSON body or dropped after a deadline; /health answers after every one).
Timeouts are set to a second here so the stalling clients cost seconds, not minutes."""

import http.client
import io
import json
import socket
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from tensorflow import keras

from cifar_course import export as E
from cifar_course import serve as S
from cifar_course.models import build_small_cnn

NAMES = [f"class{i}" for i in range(10)]
LIMIT = 200_000  # max_body_bytes of the test server
TIMEOUT = 1.0  # its head, body and keep-alive deadlines (seconds)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_small_cnn(width=4)
    folder = tmp_path_factory.mktemp("served")
    stats = (np.full(3, 0.5), np.full(3, 0.25))
    return E.export_tflite(model, folder / "model.tflite", NAMES, stats), model, stats


@pytest.fixture(scope="module")
def server(model_path):
    with S.running_server(model_path[0], top_k=3, max_body_bytes=LIMIT, max_batch=16,
                          head_timeout=TIMEOUT, body_timeout=TIMEOUT, keep_alive=1) as url:
        yield url


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def encode(array, fmt) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def raw(url, method, path, body=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, payload


def exchange(url, data: bytes, wait: float = 5.0, then: bytes = b"") -> tuple[bytes, float]:
    """Send raw bytes on a fresh connection (and `then` after 0.2 s), read until the server closes it
    or `wait` seconds pass; return what came back and when the connection ended (None: still open)."""
    port = int(url.rsplit(":", 1)[1])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        if then:
            time.sleep(0.2)
            sock.sendall(then)
        answer, closed = read_until_closed(sock)
    return answer, time.monotonic() - start if closed else None


def read_until_closed(sock) -> tuple[bytes, bool]:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (socket.timeout, ConnectionResetError):
        return answer, False
    return answer, True


def responses(answer: bytes) -> list[tuple[int, dict]]:
    """(status, JSON body) of each HTTP response in the bytes a connection received."""
    found = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(headers[b"content-length"])
        found.append((int(head.split()[1]), json.loads(rest[:length])))
        answer = rest[length:]
    return found


def status_and_json(answer: bytes) -> tuple[int, dict]:
    (found,) = responses(answer)
    return found


def alive(url):
    assert raw(url, "GET", "/health")[0] == 200


# ------------------------------------------------------------------------------------------------
# The API


def test_health_runs_the_model(server):
    status, answer = raw(server, "GET", "/health")
    assert status == 200 and answer["status"] == "ok" and answer["classes"] == NAMES
    assert answer["kind"] == "tflite" and answer["max_body_bytes"] == LIMIT


def test_health_fails_when_the_model_does(model_path):
    predictor = S.Predictor(model_path[0])
    predictor.check = lambda: (_ for _ in ()).throw(RuntimeError("broken"))
    with S.running_server(predictor) as url:
        status, answer = raw(url, "GET", "/health")
    assert status == 503 and answer["status"] == "failing" and "broken" in answer["error"]


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
    content_type, body = S.encode_multipart({
        "big.jpg": (encode(image(2, size=64), "JPEG"), "image/jpeg"),
        "grey.png": (encode(image(3)[..., 0], "PNG"), "image/png"),
        "plain.png": (S.encode_png(image(4)), "image/png")})
    status, answer = S.post(f"{server}/predict", body, content_type)
    assert status == 200 and answer["batch_size"] == 3
    big, grey_answer, plain = answer["predictions"]
    assert [p["name"] for p in answer["predictions"]] == ["big.jpg", "grey.png", "plain.png"]
    assert big["resized"] == {"from": [64, 64], "to": [32, 32], "method": "bilinear"}
    assert grey_answer["converted_from_mode"] == "L" and "resized" not in plain


def test_page_and_docs(server):
    host, port = server.removeprefix("http://").split(":")
    for path, needle in (("/", b'id="drop"'), ("/docs", b"swagger"), ("/openapi.json", b"/predict")):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200 and needle in response.read(), path
        conn.close()
    upload = raw(server, "GET", "/openapi.json")[1]["paths"]["/predict"]["post"]["requestBody"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(upload["content"])


# ------------------------------------------------------------------------------------------------
# Bad input: the list, each answered 4xx JSON, the server alive after each


def png_header_only() -> bytes:
    return S.encode_png(image(7))[:40]  # signature and IHDR, no image data


def pixel_bomb() -> bytes:
    """A valid 5000x5000 PNG (25 M pixels) of ~25 KB: small on the wire, 75 MB once decoded."""
    raw_rows = zlib.compress(b"\0" * (5000 * 5001), 9)
    chunk = lambda kind, data: (len(data).to_bytes(4, "big") + kind + data  # noqa: E731
                                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = (5000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw_rows) + chunk(b"IEND", b"")


BAD_UPLOADS = [
    (b"not an image", "image/png", 400),                       # corrupt
    (png_header_only(), "image/png", 400),                     # truncated
    (b"\x89PNG\r\n\x1a\n" + b"\xff" * 200, "image/png", 400),  # a PNG signature, garbage after
    (b"GIF89a" + b"\0" * 30, "image/png", 400),
    (encode(image(5), "GIF"), "image/png", 415),               # a real image, not PNG/JPEG
    (encode(image(5), "BMP"), "image/jpeg", 415),
    (pixel_bomb(), "image/png", 413),
    (b"{}", "application/json", 415),                          # wrong content types
    (b"x", "text/plain", 415),
    (b"--x\r\n\r\n--x--\r\n", "multipart/form-data", 400),     # no boundary parameter
    (b"--x--\r\n", "multipart/form-data; boundary=x", 400),    # no parts
    (b"--x\r\nnonsense", "multipart/form-data; boundary=x", 400),  # malformed
    (b"x" * 300_000, "image/png", 413),                        # over max_body_bytes
]


@pytest.mark.parametrize("body, content_type, status", BAD_UPLOADS,
                         ids=[f"{i}-{status}" for i, (_, _, status) in enumerate(BAD_UPLOADS)])
def test_bad_requests_get_4xx_json(server, body, content_type, status):
    got, answer = raw(server, "POST", "/predict", body, {"Content-Type": content_type})
    assert got == status and answer["error"] and answer["status"] == status
    alive(server)


def test_other_errors(server):
    assert raw(server, "GET", "/nope")[0] == 404
    assert raw(server, "PUT", "/predict", b"x")[0] == 405
    assert raw(server, "POST", "/predict", b"", {"Content-Type": "image/png"})[0] == 400
    for count, status in ((17, 413), (200, 413)):  # over max_batch (16), and far over
        files = {f"{i}.png": (S.encode_png(image(i, size=4)), "image/png") for i in range(count)}
        content_type, body = S.encode_multipart(files)
        assert raw(server, "POST", "/predict", body, {"Content-Type": content_type})[0] == status
    alive(server)


PNG = S.encode_png(image(8))
HEAD = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"


BAD_HTTP = [
    (HEAD + b"\r\n" + PNG, 400),                                          # no Content-Length: empty
    (HEAD + b"Content-Length: abc\r\n\r\n" + PNG, 400),                   # non-numeric
    (HEAD + b"Content-Length: -1\r\n\r\n" + PNG, 400),                    # negative
    (HEAD + b"Content-Length: -100\r\n\r\n", 400),
    (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),    # two disagreeing
    (HEAD + b"Content-Length: 10\r\n\r\n" + PNG, 400),                    # lying: too short, the rest
    (b"GARBAGE\r\n\r\n", 400),                                            # garbage request lines
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64, 400),  # TLS to a plain port
    (b"GET / HTTP/1.1\r\nHost\r\n\r\n", 400),                            # a header without colon
    (b"GET /health HTTP/1.1\r\n" + b"X: " + b"y" * 100_000 + b"\r\n\r\n", 400),  # oversized head
]


@pytest.mark.parametrize("request_bytes, status", BAD_HTTP, ids=[f"{i}" for i in range(len(BAD_HTTP))])
def test_malformed_http_gets_json(server, request_bytes, status):
    answers = responses(exchange(server, request_bytes)[0])
    assert answers and all(got == status and payload["error"] for got, payload in answers), answers
    alive(server)


def test_oversized_body_gets_a_readable_413(server):
    """The client sends all of a 4 MB body (as curl and urllib do) and still reads the 413."""
    status, answer = raw(server, "POST", "/predict", b"\0" * (4 << 20), {"Content-Type": "image/png"})
    assert status == 413 and "200,000" in answer["error"]
    alive(server)


def chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_chunked_uploads(server):
    head = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    status, answer = status_and_json(exchange(server, head + chunked(PNG))[0])
    assert status == 200 and answer["batch_size"] == 1
    status, answer = status_and_json(exchange(server, head + chunked(b"x" * (LIMIT + 10), 50_000))[0])
    assert status == 413
    alive(server)


def test_stalled_and_idle_clients_are_dropped(server):
    # Half a body, then silence: 408 after the body deadline, connection closed.
    answer, closed_after = exchange(server, HEAD + b"Content-Length: 5000\r\n\r\n" + PNG[:100])
    assert status_and_json(answer)[0] == 408 and closed_after is not None
    assert TIMEOUT * 0.9 < closed_after < TIMEOUT + 3
    # Half a request head, then silence (slowloris): 408 after the head deadline.
    answer, closed_after = exchange(server, b"POST /predict HTTP/1.1\r\nHost: te")
    assert status_and_json(answer)[0] == 408 and closed_after < TIMEOUT + 3
    # Connected, never a byte: closed after the head deadline.
    answer, closed_after = exchange(server, b"")
    assert closed_after is not None and closed_after < TIMEOUT + 3
    # One request answered, then idle on keep-alive: closed after the keep-alive timeout.
    answer, closed_after = exchange(server, b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and closed_after is not None and closed_after < 4
    alive(server)


def test_busy_server_answers_503(model_path):
    """With one request allowed in flight, a stalled upload holds it: others get a JSON 503 at once,
    and the server answers again once the stalled client has been dropped."""
    with S.running_server(model_path[0], max_in_flight=1, body_timeout=1.5) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as staller:
            staller.sendall(HEAD + b"Content-Length: 5000\r\n\r\n" + PNG[:100])
            time.sleep(0.3)
            status, answer = raw(url, "GET", "/health")
            assert status == 503 and "retry" in answer["error"]
            assert status_and_json(read_until_closed(staller)[0])[0] == 408
        alive(url)


def test_concurrent_load(server):
    """16 threads x 6 requests, mixed with bad ones: every request answered, the server alive after."""
    png = S.encode_png(image(6))
    results, lock = [], threading.Lock()

    def client(worker):
        for i in range(6):
            bad = (worker + i) % 5 == 0
            status, _ = S.post(f"{server}/predict", b"broken" if bad else png, "image/png")
            with lock:
                results.append((bad, status))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 96
    assert all(status == (400 if bad else 200) for bad, status in results)
    alive(server)


def test_internal_error_is_a_logged_500(model_path, caplog):
    predictor = S.Predictor(model_path[0])
    predictor.predict_images = lambda parts, k: 1 / 0
    with S.running_server(predictor) as url:
        status, answer = S.post(f"{url}/predict", PNG, "image/png")
        assert status == 500 and "ZeroDivisionError" in answer["error"]
        alive(url)
    assert any(record.exc_info and record.exc_info[0] is ZeroDivisionError for record in caplog.records)


def test_cli_rejects_missing_model(capsys):
    from cifar_course.__main__ import main

    assert main(["serve", "/nonexistent/model.tflite", "--port", "0"]) == 2
    assert "No model" in capsys.readouterr().err
