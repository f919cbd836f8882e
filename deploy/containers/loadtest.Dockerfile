# syntax=docker/dockerfile:1
# The load generator image: Locust scenarios (`python -m loadtests.locust_scenarios.run cluster ...`) run from a
# pod against the cluster's gateway (deploy/README.md, "Load test against the cluster"). Kept
# apart from the gateway image, which installs the gateway alone.
#   docker build -f deploy/containers/loadtest.Dockerfile \
#     -t REGION-docker.pkg.dev/PROJECT/tf-gateway/loadtest:TAG .
ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 HOME=/tmp
WORKDIR /opt/tf-gateway
COPY pyproject.toml requirements.lock ./
COPY serving ./serving
COPY loadtests ./loadtests
# The lock's versions (`make lock`), the ones CI tests.
RUN pip install -c requirements.lock '.[loadtest]' && python -c "import loadtests.locust_scenarios.run"
RUN useradd --uid 10002 --user-group --no-create-home --shell /usr/sbin/nologin loadtest
USER 10002:10002
ENTRYPOINT ["python", "-m", "loadtests.locust_scenarios.run"]
