"""Model versions served by a TF Serving upstream: what it reports AVAILABLE, with its own
signatures (so validation, REST decoding and metadata match it exactly)."""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving.errors import BadUpstreamAnswer, InvalidArgument, NotFound, Unavailable
from serving.runtime.choice import UPSTREAM, Evidence, RunnerChoice
from serving.runtime.savedmodel import INIT_OP_KEY, spec_from_signature_def
from serving.runtime.signature import STRING, SignatureSpec, find_signature
from serving.runtime.tensors import answer_limits, protos_to_numpy, to_proto
from serving.settings import ModelConfig
from serving.upstream.client import UpstreamClient

_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
_DEFAULT_TIMEOUT_S = 30.0


class UpstreamModel:
    """One upstream model version; ``run`` sends a whole merged batch as one Predict."""

    def __init__(self, client: UpstreamClient, name: str, version: int,
                 metadata: get_model_metadata_pb2.GetModelMetadataResponse) -> None:
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        self._client = client
        self._name = name
        self._version = version
        self.signature_defs = dict(signatures.signature_def)
        self.specs = {key: spec_from_signature_def(key, d)
                      for key, d in self.signature_defs.items() if key != INIT_OP_KEY}
        self.choice = RunnerChoice(UPSTREAM, Evidence.UPSTREAM, f"the upstream {client.target} runs it")

    def signature(self, name: str) -> SignatureSpec:
        return find_signature(self.specs, name)

    def close(self) -> None:
        """Nothing runs here in the background; the channel is the source's."""

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            deadline: float | None = None) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self._name
        request.model_spec.version.value = self._version
        request.model_spec.signature_name = signature_name
        for key, value in inputs.items():
            # numbers in tensor_content, strings in string_val: each the cheaper to decode there
            to_proto(value, into=request.inputs[key], content=value.dtype != STRING)
        deadline = deadline if deadline is not None else time.monotonic() + _DEFAULT_TIMEOUT_S
        try:
            response = self._client.predict(request, deadline)
        except NotFound as error:
            # We mirror this version as AVAILABLE, yet no pod serves it now (the fleet is
            # restarting or rolling back): a transient 503, not a 404 for a model the client
            # rightly asked for.
            raise Unavailable(f"{error.message} (the upstream is not serving it right now)") from None
        try:
            return protos_to_numpy(response.outputs, answer_limits(response), role="Output")
        except InvalidArgument as error:  # the upstream's answer is broken, not the request
            raise BadUpstreamAnswer(f"upstream {self._client.target} answered a malformed tensor: "
                                    f"{error.message}") from None


class UpstreamSource:
    """The versions the upstream reports AVAILABLE for each configured model name: those
    any of its pods serves (during a rollout pods differ; the client routes each call to a
    pod that has the version).

    The upstream applies its own version policy; ours mirrors what it serves.
    """

    def __init__(self, client: UpstreamClient, timeout_s: float = 10.0) -> None:
        self.client = client
        self._timeout = timeout_s

    def versions(self, config: ModelConfig) -> dict[int, str]:
        status = self.client.status(config.name, self._timeout)
        return {s.version: self.client.target for s in status.model_version_status if s.state == _AVAILABLE}

    def load(self, name: str, version: int, location: str) -> UpstreamModel:
        return UpstreamModel(self.client, name, version, self.client.metadata(name, version, self._timeout))

    def healthy(self) -> bool:
        return not self.client.breaker.open

    def where(self, config: ModelConfig) -> str:
        return f"the upstream {self.client.target}"

    def hint(self, config: ModelConfig) -> str:
        return ""  # the error names the upstream; what it serves is its operator's to check
