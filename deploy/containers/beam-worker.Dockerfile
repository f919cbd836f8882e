# Worker image for the batch (and streaming) pipelines on Dataflow:
#   docker build -f deploy/containers/beam-worker.Dockerfile -t REGION-docker.pkg.dev/P/tf-gateway/beam-worker .
#   python batch/run.py ... --runner DataflowRunner --sdk_location=container \
#       --sdk_container_image REGION-docker.pkg.dev/P/tf-gateway/beam-worker
# Beam's own SDK image (same Beam and Python versions as the launcher) plus this project,
# so workers import batch/ and serving/ and find TensorFlow without staging anything.
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/tf-gateway
COPY pyproject.toml README.md ./
COPY serving ./serving
COPY batch ./batch
COPY streaming ./streaming
COPY loadtests ./loadtests
RUN pip install --no-cache-dir . && python -c "import batch.pipeline, serving.runtime.beam_handler"

# The SDK harness entry point of the base image stays the container's entry point.
