"""An inference request's parameters and requested outputs, read the same way from REST
JSON and from gRPC messages.

Parameters are a map of string to bool, number or string (REST ``parameters``, gRPC
``InferParameter``; the adapter turns gRPC's into plain Python values). The ones we use:
``signature_name`` (which signature of the model; ours), ``binary_data_output`` (every
output binary unless it says otherwise) and ``timeout`` (microseconds, as Triton and
tritonclient; 0: none). Extensions we do not implement are refused by name rather than
silently ignored: sequence batching, classification, shared memory. ``priority`` and every
other key are accepted and ignored (the spec leaves parameters to each server).

Outputs: none requested (or an empty list) means every output of the signature, sorted by
name; otherwise exactly those, in the request's order; an unknown one is Triton's
INVALID_ARGUMENT "unexpected inference output 'x' for model 'm'" (as TF Serving's
``output_filter`` is INVALID_ARGUMENT too, not NOT_FOUND).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serving.errors import InvalidArgument
from serving.runtime.shapes import label, what
from serving.runtime.signature import SignatureSpec
from serving.v2.datatypes import Datatype, for_spec

_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_SEQUENCE = "sequence batching is not supported"


@dataclass(frozen=True)
class Parameters:
    """What a request's parameters ask of us."""

    signature_name: str | None = None
    """The signature to run; None: the model's default (``serving_default``)."""
    binary_data_output: bool = False
    """Outputs that do not say otherwise are answered in binary."""
    timeout_us: int | None = None
    """The client's time budget in microseconds; None: none given (or 0, Triton's "none")."""


@dataclass(frozen=True)
class Wanted:
    """One requested output, as the request names it."""

    name: str
    binary: bool | None = None
    """Its ``binary_data`` parameter; None: not given."""


@dataclass(frozen=True)
class Output:
    """One output to answer with, and how."""

    name: str
    datatype: Datatype
    binary: bool


def version_choice(version: str) -> tuple[int | None, str | None]:
    """A v2 model version (a string; empty: none) as TF Serving's choice of a version:
    (number, None) for digits, (None, label) for anything else (a version label, as
    ``stable``), (None, None) for the newest."""
    if not version:
        return None, None
    if version.isascii() and version.isdigit():
        return int(version), None
    return None, version


def parameters(params: object) -> Parameters:
    """A request's ``parameters`` (None: absent) read, or InvalidArgument naming the one at
    fault."""
    values = _scalars(params)
    signature = values.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidArgument(_typed("signature_name", "a string"))
    binary = values.get("binary_data_output", False)
    if type(binary) is not bool:
        raise InvalidArgument(_typed("binary_data_output", "a boolean"))
    timeout = values.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise InvalidArgument(_typed("timeout", "a non-negative integer (microseconds)"))
    if values.get("sequence_id", 0) not in (0, ""):
        raise InvalidArgument(f"Parameter 'sequence_id': {_SEQUENCE}")
    for flag in ("sequence_start", "sequence_end"):
        if values.get(flag, False) is not False:
            raise InvalidArgument(f"Parameter '{flag}': {_SEQUENCE}")
    _refuse_extensions(values)
    return Parameters(signature or None, binary, timeout or None)


def binary_data_size(params: object, name: str) -> int | None:
    """An input's ``binary_data_size`` parameter (its data is that many bytes after the JSON;
    None: not given), with the input's parameters checked."""
    if params is None:  # most inputs: nothing to check
        return None
    if type(params) is dict and len(params) == 1:  # the usual binary input: this one, nothing to refuse
        size = params.get("binary_data_size")
        if type(size) is int and size >= 0:
            return size
    values = _scalars(params, "Input", name)
    _refuse_extensions(values, "Input", name)
    size = values.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidArgument(f"{what('Input', name)}: parameter 'binary_data_size' must be a "
                              "non-negative integer")
    return size


def wanted(name: object, params: object) -> Wanted:
    """One entry of a request's ``outputs``: its name and ``binary_data`` parameter."""
    if not isinstance(name, str):
        raise InvalidArgument(f"A requested output's name must be a string, got {type(name).__name__}")
    values = _scalars(params, "Output", name)
    _refuse_extensions(values, "Output", name)
    binary = values.get("binary_data")
    if binary is not None and type(binary) is not bool:
        raise InvalidArgument(f"{what('Output', name)}: parameter 'binary_data' must be a boolean")
    return Wanted(name, binary)


def select_outputs(spec: SignatureSpec, requested: Sequence[Wanted] | None, model: str,
                   binary_data_output: bool = False) -> list[Output]:
    """The outputs to answer with, in order, each binary if it asked to be (else if the
    request's ``binary_data_output`` says so). InvalidArgument for an output the signature
    lacks or one asked for twice, and for one whose dtype no v2 datatype carries."""
    if not requested:
        requested = [Wanted(name) for name in sorted(spec.outputs)]
        asked = False
    else:
        asked = True
        seen: set[str] = set()
        for output in requested:
            if output.name not in spec.outputs:
                raise InvalidArgument(f"unexpected inference output {label(output.name)} for model "
                                      f"{label(model)}")
            if output.name in seen:
                raise InvalidArgument(f"{what('Output', output.name)} is requested twice")
            seen.add(output.name)
    selected = []
    for output in requested:
        tensor = spec.outputs[output.name]
        datatype = for_spec(tensor)
        if datatype is None:
            hint = "" if asked else "; request the other outputs by name in 'outputs'"
            raise InvalidArgument(f"{what('Output', output.name)} of model {label(model)} is "
                                  f"{tensor.dtype_name or tensor.dtype}, which no Open Inference Protocol "
                                  f"datatype carries{hint}")
        binary = binary_data_output if output.binary is None else output.binary
        selected.append(Output(output.name, datatype, binary))
    return selected


def _whose(role: str | None, name: str) -> str:
    """Whose parameters an error message is about: the request's (no ``role``) or a tensor's.
    Made only when a message is: ``_scalars`` and ``_refuse_extensions`` run per tensor."""
    return "The request" if role is None else what(role, name)


def _scalars(params: object, role: str | None = None, name: str = "") -> Mapping[str, object]:
    if params is None:
        return {}
    if type(params) is not dict and not isinstance(params, Mapping):
        raise InvalidArgument(f"{_whose(role, name)}'s parameters must be an object, got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(value, (bool, int, float, str)):
            raise InvalidArgument(f"{_whose(role, name)}'s parameters: parameter {label(str(key))} must be a "
                                  f"boolean, number or string, got {type(value).__name__}")
    return params


def _refuse_extensions(values: Mapping[str, object], role: str | None = None, name: str = "") -> None:
    if not values:
        return
    if "classification" in values:
        raise InvalidArgument(f"{_whose(role, name)}: the classification extension is not supported")
    for key in _SHARED_MEMORY:
        if key in values:
            raise InvalidArgument(f"{_whose(role, name)}: parameter '{key}': the shared memory extension "
                                  "is not supported")


def _typed(key: str, kind: str) -> str:
    return f"Parameter '{key}' must be {kind}"
