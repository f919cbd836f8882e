"""The JSON-lines reader: blocks of non-blank lines left in the file's text (``Lines``).

The reader finds lines with numpy instead of splitting each out; these tests hold it to the
plain definition (``text.split(b"\\n")`` without blank lines, cut into blocks) on texts made
to hit its edges: blank and whitespace-only lines, CRLF, no final newline, lines longer than
a read, blocks that straddle reads.
"""
from __future__ import annotations

import io
import pickle
import random

import pytest

from batch import columnar
from batch.columnar import Lines, decode_block, read_blocks
from batch.model_handler import ModelLocation, open_model
from serving.examples import shapes

PIECES = [b'{"a": 1}', b"", b"  ", b"\t\r", b'{"b": [1, 2]}\r', b' {"c": 3}', b"\x0b", b"x" * 50,
          b'{"d": "' + b"y" * 300 + b'"}']


def plain_blocks(text: bytes, per_block: int) -> list[list[bytes]]:
    lines = [line for line in text.split(b"\n") if line.strip()]
    return [lines[i:i + per_block] for i in range(0, len(lines), per_block)]


@pytest.mark.parametrize("read_bytes", [1, 7, 64, 1 << 20])
def test_blocks_are_the_files_non_blank_lines_in_order(monkeypatch, read_bytes):
    monkeypatch.setattr(columnar, "READ_BYTES", read_bytes)
    chances = random.Random(read_bytes)
    for _ in range(300):
        text = b"\n".join(chances.choice(PIECES) for _ in range(chances.randrange(60)))
        text += chances.choice([b"", b"\n", b"\n\n", b"  "])
        per_block = chances.choice([1, 2, 7, 50])
        got = [list(block) for block in read_blocks(io.BytesIO(text), per_block)]
        assert got == plain_blocks(text, per_block), (text, per_block)


def test_lines_index_slice_pickle_and_span():
    block = next(read_blocks(io.BytesIO(b'\n{"a": 1}\n  \n{"a": 2}\r\n{"a": 3}'), 10))
    assert isinstance(block, Lines) and len(block) == 3
    assert block[1] == b'{"a": 2}\r' and block[-1] == b'{"a": 3}'
    assert list(block[1:]) == [b'{"a": 2}\r', b'{"a": 3}'] and isinstance(block[1:], Lines)
    assert block[::2] == [b'{"a": 1}', b'{"a": 3}']
    assert bytes(block.span()) == b'{"a": 1}\n  \n{"a": 2}\r\n{"a": 3}'
    copy = pickle.loads(pickle.dumps(block[1:]))
    assert list(copy) == [b'{"a": 2}\r', b'{"a": 3}'] and len(copy.text) == len(b'{"a": 2}\r\n{"a": 3}')


def test_a_blank_line_pyarrow_refuses_still_leaves_every_row_decoded(shapes_dir):
    """pyarrow skips blank lines of spaces, tabs and CRs inside a block's text, but not one
    of a vertical tab: that block falls back to the slower paths, with the same rows."""
    _, model = open_model(ModelLocation(str(shapes_dir / "scalar")))
    spec = model.signature("serving_default")
    inputs = shapes.sample_inputs("scalar", 40, seed=3)
    name = next(iter(inputs))
    rows = [b'{"id": %d, "%s": %r}' % (i, name.encode(), float(v)) for i, v in enumerate(inputs[name])]
    for blank in (b"  \t\r", b"\x0b"):
        text = b"\n".join(rows[:20] + [blank] + rows[20:]) + b"\n"
        (block,) = read_blocks(io.BytesIO(text), 64)
        chunk, refused = decode_block(block, spec, "id")
        assert refused == [] and chunk.keys.tolist() == list(range(40))
        assert chunk.tensors[name].tolist() == inputs[name].astype(chunk.tensors[name].dtype).tolist()
        assert list(chunk.passthrough) == rows
