# syntax=docker/dockerfile:1
# One image for the Beam pipelines on Dataflow, both as the workers' SDK container and as the
# Flex Template launcher (Google's recommended single-image setup):
#   docker build -f deploy/containers/beam-worker.Dockerfile \
#     -t REGION-docker.pkg.dev/PROJECT/tf-gateway/beam-worker:TAG .
# Workers, submitted from a checkout:
#   python batch/run.py ... --runner DataflowRunner --sdk_location=container \
#       --sdk_container_image REGION-docker.pkg.dev/PROJECT/tf-gateway/beam-worker:TAG
# Flex Template: see deploy/README.md (metadata in flex-template-metadata.json).
#
# Beam's own SDK image, with the Beam and Python versions of pyproject.toml and of the
# launcher below (Python 3.11 on both sides: the job is pickled by one, run by the other),
# plus this project, so workers import batch/ and serving/ with TensorFlow and stage nothing.
# Google publishes the launcher under rolling tags: pin its digest for release builds.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher

FROM apache/beam_python3.11_sdk:2.77.0
WORKDIR /opt/tf-gateway
COPY pyproject.toml requirements.lock ./
COPY serving ./serving
COPY batch ./batch
COPY streaming ./streaming
# The lock's versions (`make lock`), the ones CI tests, also for the packages the SDK image
# already holds; `pip check` then catches a clash with one of its own that the lock leaves out.
RUN pip install --no-cache-dir -c requirements.lock '.[batch]' \
    && pip check \
    && python -c "import batch.pipeline, streaming.pipeline, batch.model_handler"

# The launcher runs this file with the template's parameters as --name=value flags. The
# project is installed above, so it needs no requirements or setup file (nothing is fetched
# from PyPI at launch).
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/tf-gateway/batch/run.py

# The SDK harness entry point of the base image stays the container's entry point
# (/opt/apache/beam/boot); Dataflow starts the launcher itself.
