# The cifar-course inference service (cifar_course/serve.py) in a container, built from a fresh clone:
#   docker build -t cifar-course-serve .
#   docker run --rm -p 8000:8000 cifar-course-serve      # then open http://localhost:8000/
# Stage 1 trains and exports the deployment chapter's small CNN (`cifar-course export-demo`, also
# `make serve-model`) with the full locked environment; stage 2, the image, has only the serving install
# (requirements-serve.txt: tflite-runtime, onnxruntime, FastAPI, uvicorn; no TensorFlow).
# Another model: mount it and pass its path, e.g.
#   docker run -p 8000:8000 -v $PWD/deploy:/models cifar-course-serve /models/model.onnx

FROM python:3.11-slim AS model
WORKDIR /src
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY cifar_course/ cifar_course/
# PROFILE=quick trains on real CIFAR-10 (downloaded; the synthetic stand-in if that fails, with a warning).
ARG PROFILE=quick
RUN uv sync --locked --no-dev && CIFAR_COURSE_PROFILE=$PROFILE .venv/bin/cifar-course export-demo /models

FROM python:3.11-slim
WORKDIR /app
COPY requirements-serve.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements-serve.txt
COPY pyproject.toml README.md ./
COPY cifar_course/ cifar_course/
RUN pip install --no-cache-dir --no-deps . && rm -rf cifar_course
COPY --from=model /models/ /models/

# Unprivileged user; listen on all interfaces inside the container (the CLI's default is 127.0.0.1).
RUN useradd --create-home serve
USER serve
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# SIGTERM (docker stop) finishes requests in flight before the server exits.
ENTRYPOINT ["cifar-course", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["/models/model.tflite"]
