#!/bin/bash
# TF Serving readiness: every model named in the config has a version AVAILABLE.
#   tf-serving-ready.sh MODEL_CONFIG_FILE REST_PORT
# GET /v1/models/NAME answers 200 while a version is still LOADING, so the state is read, not
# the status code. The tensorflow/serving image has bash but no curl: HTTP goes through bash's
# /dev/tcp, and no temporary files are written (the root filesystem is read-only).
set -uo pipefail
config=$1
port=$2

names=$(sed -En "s/^[[:space:]]*name:[[:space:]]*[\"']([^\"']+)[\"'].*/\1/p" "$config")
[[ -n $names ]] || { echo "no model names in $config"; exit 1; }

for name in $names; do
  if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    echo "REST port $port is not open"
    exit 1
  fi
  printf 'GET /v1/models/%s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$name" >&3
  answer=$(timeout 3 cat <&3)
  exec 3<&-
  if [[ ! $answer =~ \"state\":[[:space:]]*\"AVAILABLE\" ]]; then
    echo "model $name has no AVAILABLE version"
    exit 1
  fi
done
