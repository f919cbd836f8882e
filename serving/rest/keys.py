"""The prediction store's key of each instance of a REST :predict body (``--prediction_key_field``).

Taken out of the parsed JSON before the codec decodes the rest, so the model never sees it
(unless the signature has an input of that name: then it stays one of the inputs too).
Only presence is checked here; ``InferenceService.predict`` checks the keys themselves.
"""
from __future__ import annotations

from typing import Any

from serving.errors import InvalidArgument
from serving.runtime.signature import SignatureSpec


def take_keys(doc: dict[str, Any], field: str, signature: SignatureSpec) -> list[Any] | None:
    """The key of each instance, in order: from every object of ``instances`` (row format)
    or the list ``inputs[field]`` (columnar); None when no instance has one, and the
    request goes to the model as it is. A key on some instances only is ``InvalidArgument``.

    What is not an object or a list is left for the codec to refuse in its own words.
    """
    keep = field in signature.inputs
    instances = doc.get("instances")
    if type(instances) is list:
        keyed = [type(row) is dict and field in row for row in instances]
        if not any(keyed):
            return None
        if not all(keyed):
            missing = keyed.index(False)
            raise InvalidArgument(f"Key field '{field}' is missing from instance {missing} of "
                                  f"'instances' (present in {sum(keyed)} of {len(keyed)}): every "
                                  "instance carries it, or none does")
        return [row[field] if keep else row.pop(field) for row in instances]
    inputs = doc.get("inputs")
    if type(inputs) is not dict or field not in inputs or "instances" in doc:
        return None
    keys = inputs[field] if keep else inputs.pop(field)
    if type(keys) is not list:
        raise InvalidArgument(f"Key field '{field}' of 'inputs' must be a list of one key per "
                              f"instance, got {type(keys).__name__}")
    return keys
