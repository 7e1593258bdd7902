# The cifar-course inference service (cifar_course/serve.py) in a container.
#   make the model first, e.g. in the deployment chapter:
#     cc.export_tflite(model, "deploy/model.tflite", class_names, stats)  -> model.tflite + model.json
#   docker build -t cifar-course-serve .
#   docker run --rm -p 8000:8000 cifar-course-serve
#   curl -s localhost:8000/health
# Another model: mount it and pass its path, e.g.
#   docker run -p 8000:8000 -v $PWD/deploy:/models cifar-course-serve /models/model.onnx
FROM python:3.11-slim

WORKDIR /app
# The same locked versions as the book (uv.lock); no dev or book extras.
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY cifar_course/ cifar_course/
RUN uv sync --locked --no-dev

# The exported model and its preprocessing JSON (class names, mean/std) side by side.
COPY deploy/ /models/

# Unprivileged user; listen on all interfaces inside the container (the CLI's default is 127.0.0.1).
RUN useradd --create-home serve
USER serve
ENV TF_CPP_MIN_LOG_LEVEL=3
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
ENTRYPOINT ["/app/.venv/bin/cifar-course", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["/models/model.tflite"]
