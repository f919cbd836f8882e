# syntax=docker/dockerfile:1
# The gateway image (deploy/base/gateway.yaml runs it):
#   docker build -f deploy/containers/gateway.Dockerfile \
#     -t REGION-docker.pkg.dev/PROJECT/tf-gateway/gateway:TAG .
# Slim Debian Python, the project's base install (the gateway alone: no Beam, Locust or
# matplotlib) in a venv built in a first stage (no compilers or pip cache in the result), a
# non-root user, and tensorflow/serving's entry point: tf_serving_entrypoint.sh runs
# `python -m serving` (the entry point of `make serve`) with --model_name=$MODEL_NAME
# --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME on ports 8500/8501, then the arguments:
#   docker run -p 8501:8501 -e MODEL_NAME=natality -v "$PWD/models/natality:/models/natality" IMAGE
ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY serving ./serving
# The lock's versions (`make lock`), the ones CI tests: the base install's share of them.
RUN /opt/venv/bin/pip install -c requirements.lock . && /opt/venv/bin/python -c "import serving.server"

FROM python:${PYTHON}-slim-bookworm
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/containers/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model
USER 10001:10001
EXPOSE 8500 8501
# One process (the script execs it), one uvicorn worker (serving.server runs exactly one):
# Prometheus gauges stay exact and Kubernetes scales with replicas. TF Serving's flags follow
# as arguments.
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
