"""``python -m loadtests.benchmarks.bench_codec --paths``: every decoding path it times gives
the same natality tensors (``decoders`` refuses to time one that does not) and the table is
printed. No timing is asserted."""
from __future__ import annotations

import pytest

from loadtests.benchmarks import bench_codec


@pytest.mark.parametrize("rows", [1, 3])
def test_every_path_decodes_the_same_tensors(rows):
    paths = bench_codec.decoders(rows)
    assert set(paths) == set(bench_codec.PATHS)
    for parse, decode in paths.values():
        parse()
        assert all(len(array) == rows for array in decode().values())


def test_paths_table(capsys, monkeypatch):
    def once(call, repeat):
        call()
        return 1e-6

    monkeypatch.setattr(bench_codec, "seconds_per_call", once)
    bench_codec.main(["--paths", "--rows", "2", "--repeat", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[2:]] == list(bench_codec.PATHS)
