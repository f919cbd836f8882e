"""Smoke test of ``python -m loadtests.benchmarks.bench_grpc``'s load driver and reports,
against tiny real servers (a gRPC server answering the Predict method with fixed bytes, an
asyncio HTTP/1.1 server): no TensorFlow, no gateway, so it runs in about a second. No timing is
asserted.
"""
from __future__ import annotations

import asyncio
import concurrent.futures

import grpc
import pytest

from loadtests.benchmarks.bench_grpc import PREDICT_METHOD, Drive, Run, _drive, parse_args, render
from loadtests.support.processes import free_port


def _grpc_server() -> tuple[grpc.Server, str]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    service, method = PREDICT_METHOD.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"answer")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_grpc_closed_loop_counts_every_answer():
    server, target = _grpc_server()
    try:
        result = asyncio.run(_drive(Drive("grpc", target, [b"request"], 4, 0.3, None)))
    finally:
        server.stop(None)
    assert result["ok"] > 0 and result["errors"] == 0
    assert len(result["latencies_us"]) == result["ok"]


def drive_http_at_40_per_s(concurrency: int, answer_after_s: float) -> dict:
    """0.29 s of sends due every 25 ms (12 of them) to an HTTP server that answers each
    request ``answer_after_s`` after reading it."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            if answer_after_s:
                await asyncio.sleep(answer_after_s)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    async def run() -> dict:
        port = free_port()
        server = await asyncio.start_server(answer, "127.0.0.1", port)
        request = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        async with server:
            return await _drive(Drive("rest", f"127.0.0.1:{port}", [request], concurrency, 0.29, 40.0))

    return asyncio.run(run())


def test_http_fixed_rate_sends_on_schedule():
    result = drive_http_at_40_per_s(concurrency=2, answer_after_s=0.0)
    assert result["ok"] + result["errors"] + result["skipped"] == 12  # sends due at 0, 25, ..., 275 ms
    assert result["errors"] == result["skipped"] == 0


def test_fixed_rate_sends_skipped_at_the_cap_are_not_errors():
    result = drive_http_at_40_per_s(concurrency=1, answer_after_s=0.2)
    # One call in flight at a time, each answered 200 ms after it was sent: of the 12 sends
    # due within 275 ms at most two are made.
    assert result["errors"] == 0 and result["ok"] <= 2
    assert result["ok"] + result["skipped"] == 12


def test_report_gives_the_cpu_ratio():
    def run(transport: str, cpu_s: float) -> Run:
        return Run(transport, "closed 64", qps=100.0, p50_ms=1.0, p99_ms=2.0, errors=0, skipped=0,
                   answered=1000, server_cpu_s=cpu_s, loop_cpu_s=cpu_s / 2, mean_batch_rows=8.0,
                   loadgen_cpu=0.5, seconds=10.0)

    text = render([run("rest", 0.5), run("grpc", 0.6)], "test")
    assert "| grpc | closed 64 | 100 |" in text and "| 0.600 | 0.300 | 8.0 |" in text
    assert "gRPC/REST server CPU per request: 1.20" in text


def test_floor_report_gives_a_ratio_per_grpc_server():
    def run(transport: str, cpu_s: float) -> Run:
        return Run(transport, "closed 64", qps=100.0, p50_ms=1.0, p99_ms=2.0, errors=0, skipped=0,
                   answered=1000, server_cpu_s=cpu_s, loop_cpu_s=cpu_s / 2, mean_batch_rows=None,
                   loadgen_cpu=None, seconds=10.0)

    text = render([run("rest", 0.1), run("grpc-loop", 0.15), run("grpc-threads", 0.4)], "floor")
    assert "gRPC-loop/REST server CPU per request: 1.50" in text
    assert "gRPC-threads/REST server CPU per request: 4.00" in text
    assert "| grpc-loop | closed 64 | 100 | 1.00 | 2.00 | 0 | 0 | 0.150 | 0.075 | ? |" in text


def test_gateway_report_compares_each_grpc_server_with_its_own_gateways_rest():
    def run(transport: str, cpu_s: float) -> Run:
        return Run(transport, "closed 64", qps=100.0, p50_ms=1.0, p99_ms=2.0, errors=0, skipped=0,
                   answered=1000, server_cpu_s=cpu_s, loop_cpu_s=cpu_s / 2, mean_batch_rows=8.0,
                   loadgen_cpu=0.5, seconds=10.0)

    text = render([run("rest-loop", 0.5), run("grpc-loop", 0.7), run("rest-aio", 0.4), run("grpc-aio", 1.4)],
                  "gateways")
    assert "gRPC-loop/REST server CPU per request: 1.40" in text
    assert "gRPC-aio/REST server CPU per request: 3.50" in text  # against rest-aio, not rest-loop
    assert "grpc-aio/grpc-loop server CPU per request: 2.00" in text


def test_grpc_servers_to_measure_are_checked():
    assert parse_args(["--grpc-servers", "aio"]).grpc_servers == ("aio",)
    assert parse_args([]).grpc_servers == ("loop", "aio")
    with pytest.raises(SystemExit):
        parse_args(["--grpc-servers", "threads"])
