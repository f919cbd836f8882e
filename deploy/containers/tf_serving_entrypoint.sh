#!/bin/sh
# The gateway image's entry point, with tensorflow/serving's conventions: its image runs
# /usr/bin/tf_serving_entrypoint.sh, which serves the model MODEL_NAME (default: model) from
# MODEL_BASE_PATH/MODEL_NAME (default base: /models) on gRPC 8500 and REST 8501 and appends
# the container's arguments, so `docker run -e MODEL_NAME=x -v HOST_DIR:/models/x IMAGE`
# and any extra flags work here as there. A flag given as an argument wins over the same
# flag set here (the last one counts), and --model_config_file wins over the model name and
# base path, as in TF Serving. GRPC_PORT and PORT (or REST_API_PORT) move the gRPC and REST
# ports; PORT is the HTTP port, as Cloud Run and Knative set it.
set -eu
MODEL_NAME="${MODEL_NAME:-model}"
exec python -m serving \
  --port="${GRPC_PORT:-8500}" \
  --rest_api_port="${REST_API_PORT:-${PORT:-8501}}" \
  --model_name="${MODEL_NAME}" \
  --model_base_path="${MODEL_BASE_PATH:-/models}/${MODEL_NAME}" \
  "$@"
