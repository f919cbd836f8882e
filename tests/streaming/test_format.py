"""An answer message's body (streaming/pipeline.py FormatMessage), without Pub/Sub."""
from __future__ import annotations

import json

import numpy as np
from apache_beam.io.gcp.pubsub import PubsubMessage

from batch.chunks import Chunk, ChunkResult
from streaming.pipeline import FormatMessage, Origin


def test_string_outputs_are_written_as_text():
    """String tensors come back as bytes (1-D) or object arrays of bytes (per row): the
    answer holds them as UTF-8 text, as the batch pipeline writes them."""
    message = PubsubMessage(b"[]", {"origin": "test"}, message_id="7")
    origin = Origin(message, listed=True)
    outputs = {"known": np.array([b"cat+", b"\xc3\xa9t\xc3\xa9-"], dtype=object),
               "tokens": np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object),
               "id": np.array([3, -1], np.int64)}
    result = ChunkResult(Chunk({}, [origin, origin]), outputs, [0, 1], [], 1)
    (answer,) = FormatMessage().process(result)
    assert json.loads(answer.data) == {"model_version": 1, "predictions": [
        {"known": "cat+", "tokens": ["a", "b"], "id": 3}, {"known": "été-", "tokens": ["c", "d"], "id": -1}]}
    assert answer.attributes == {"origin": "test", "input_message_id": "7", "model_version": "1"}
