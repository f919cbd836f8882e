"""``make bench``'s markdown: a table per model for (a)-(d), one for the upstream comparison
(e)/(f), the runs' details and the ratios; errors and failed setups are shown loudly."""
from __future__ import annotations

from loadtests.benchmarks.bench_results import (
    SETUP_LABELS,
    UPSTREAM_LABELS,
    Failure,
    ModelResult,
    RawResult,
    Report,
    ServerRun,
    ThroughRun,
    UpstreamResult,
)
from loadtests.benchmarks.bench_wrk import WrkResult

SERVER_SETUPS = ("noop", "naive", "gateway")


def _fmt_qps(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _fmt_cpu(name: str, value: float | None) -> str:
    return f"{name} CPU ?" if value is None else f"{name} CPU {value:.0%}"


def _first_line(error: str, width: int) -> str:
    return error.splitlines()[0][:width] if error else ""


def _errors_cell(run: WrkResult) -> str:
    if not run.errors:
        return "0"
    parts = [f"non-2xx {run.non_2xx}"] if run.non_2xx else []
    sockets = run.socket_errors
    parts += [f"{name} {count}" for name, count in (
        ("connect", sockets.connect), ("read", sockets.read), ("write", sockets.write),
        ("timeout", sockets.timeout)) if count]
    return f"**⚠ {run.errors} ({', '.join(parts)})**"


def _sentence(label: str, parts: list[str]) -> list[str]:
    """``Label: a; b; c.`` as a line, or no line when there is nothing to say."""
    return [f"{label}: " + "; ".join(parts) + "."] if parts else []


def _measured_cells(run: WrkResult) -> str:
    """QPS, p50, p99 and errors cells."""
    return (f"{_fmt_qps(run.qps)} | {_fmt_ms(run.latency_ms.p50)} | "
            f"{_fmt_ms(run.latency_ms.p99)} | {_errors_cell(run)}")


def render_model(model: str, result: ModelResult, connections: int) -> str:
    """The (a)-(d) table if any of them ran, then the upstream table if that ran."""
    parts = []
    if result.raw is not None or result.setups:
        parts.append(_render_main(model, result, connections))
    if result.upstream is not None:
        parts.append(render_upstream(model, result.upstream))
    return "\n".join(parts)


def _render_main(model: str, result: ModelResult, connections: int) -> str:
    lines = [f"### {model}: 1 row per request, {connections} connections", "",
             "| setup | QPS | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---|"]
    raw = result.raw
    if isinstance(raw, RawResult):
        lines.append(f"| {SETUP_LABELS['raw']} ({raw.best_batch_size}) | "
                     f"{_fmt_qps(raw.best_rows_per_s)} rows/s | – | – | – |")
    elif isinstance(raw, Failure):
        lines.append(f"| {SETUP_LABELS['raw']} | **FAILED** | – | – | {raw.error[:80]} |")
    servers = {name: result.setups[name] for name in SERVER_SETUPS if name in result.setups}
    for name, run in servers.items():
        if isinstance(run, Failure):
            lines.append(f"| {SETUP_LABELS[name]} | **FAILED** | – | – | "
                         f"{_first_line(run.error, 100)} |")
        else:
            lines.append(f"| {SETUP_LABELS[name]} | {_measured_cells(run.wrk)} |")
    lines.append("")
    if isinstance(raw, RawResult):
        lines.append("Model alone, rows/s by batch size: " + ", ".join(
            f"{t.batch_size}: {_fmt_qps(t.rows_per_s)} ({t.ms_per_call:.2f} ms/call)"
            for t in raw.by_batch) + ".")
    details = [f"{name}: {run.wrk.requests} requests in {run.wrk.duration_s:.1f} s, "
               f"p75 {_fmt_ms(run.wrk.latency_ms.p75)} / p90 {_fmt_ms(run.wrk.latency_ms.p90)} ms, "
               f"{_fmt_cpu('server', run.server_cpu)}, {_fmt_cpu('wrk', run.wrk.loadgen_cpu)}"
               for name, run in servers.items() if isinstance(run, ServerRun)]
    lines += _sentence("Runs", details)
    r = result.ratios
    parts = []
    if r.gateway_vs_naive_qps is not None:
        parts.append(f"d/c QPS **{r.gateway_vs_naive_qps:.2f}×**")
    if r.gateway_vs_noop_qps is not None:
        parts.append(f"d/b QPS {r.gateway_vs_noop_qps:.2f}×")
    if r.gateway_vs_noop_cpu_per_request is not None:
        parts.append(f"d/b server CPU per request {r.gateway_vs_noop_cpu_per_request:.2f}× "
                     f"(QPS d/b if both were CPU-bound: {1 / r.gateway_vs_noop_cpu_per_request:.2f}×)")
    if r.gateway_vs_raw_best is not None:
        parts.append(f"d/a {r.gateway_vs_raw_best:.2%} of the model's best rows/s")
    gateway, naive = servers.get("gateway"), servers.get("naive")
    if (r.gateway_vs_naive_p99 is not None and isinstance(gateway, ServerRun)
            and isinstance(naive, ServerRun)):
        parts.append(f"p99 d vs c {_fmt_ms(gateway.wrk.latency_ms.p99)} vs "
                     f"{_fmt_ms(naive.wrk.latency_ms.p99)} ms ({r.gateway_vs_naive_p99:.2f}×)")
    lines += _sentence("Ratios", parts)
    for name in r.invalid_because_of_errors:
        run = servers[name]
        errors = run.wrk.errors if isinstance(run, ServerRun) else "?"
        lines.append(f"**WARNING: {name} had errors ({errors}); its QPS is not comparable.**")
    for judged in (result.goal, result.ceiling_goal):
        if judged is not None:
            verdict = "MET" if judged.met else "NOT MET"
            measured = "" if judged.qps_ratio is None else f" (QPS ratio {judged.qps_ratio:.2f}×)"
            lines.append(f"Goal ({judged.needs}): **{verdict}**{measured}.")
    return "\n".join(lines) + "\n"


def _merging_cell(setup: str, run: ThroughRun) -> str:
    """Upstream Predict calls / client requests (as the server that answered them counted)."""
    calls, clients = run.upstream_predicts, run.client_requests(setup)
    rows = f" ({clients / calls:.1f} rows/call)" if calls else ""
    return f"{calls} / {clients}{rows}"


def _through_details(setup: str, connections: int, run: ThroughRun) -> str:
    usage = ", ".join(
        f"{name} CPU {value:.0%} ({value / run.wrk.qps * 1e3:.2f} ms/request)"
        if value is not None and run.wrk.qps else f"{name} CPU ?"
        for name, value in run.server_cpu.items())
    extra = ""
    if setup == "gateway" and run.front_mean_batch_rows is not None:
        extra = f", front's mean batch {run.front_mean_batch_rows:.1f} rows"
        if run.front_mean_queue_wait_ms is not None:
            extra += f" after {_fmt_ms(run.front_mean_queue_wait_ms)} ms in its queue"
    return (f"{setup} -c{connections}: {run.wrk.requests} requests in {run.wrk.duration_s:.1f} s, "
            f"{usage}, {_fmt_cpu('wrk', run.wrk.loadgen_cpu)}{extra}")


def render_upstream(model: str, upstream: UpstreamResult) -> str:
    n = upstream.connections
    lines = [f"### {model}, upstream: gateway → upstream vs clients calling the upstream "
             "directly, 1 row per request", ""]
    if upstream.error is not None:
        lines += [f"**FAILED**: {_first_line(upstream.error, 200)} (log tails in the "
                  "JSON report)", ""]
    if not upstream.runs:
        return "\n".join(lines) + "\n"
    lines += ["| setup | connections | QPS | p50 ms | p99 ms | errors | upstream Predicts / "
              "client requests |", "|---|---:|---:|---:|---:|---|---:|"]
    details = []
    for run in upstream.runs:
        label = UPSTREAM_LABELS[run.setup]
        if isinstance(run.outcome, Failure):
            lines.append(f"| {label} | {run.connections} | **FAILED** | – | – | "
                         f"{_first_line(run.outcome.error, 100)} | – |")
            continue
        lines.append(f"| {label} | {run.connections} | {_measured_cells(run.outcome.wrk)} | "
                     f"{_merging_cell(run.setup, run.outcome)} |")
        details.append(_through_details(run.setup, run.connections, run.outcome))
    lines.append("")
    lines += _sentence("Runs", details)
    r = upstream.ratios
    parts = []
    if r.gateway_vs_direct_qps is not None:
        parts.append(f"f/e QPS at {n} connections **{r.gateway_vs_direct_qps:.2f}×**")
    direct_1, gateway_1 = upstream.measured("direct", 1), upstream.measured("gateway", 1)
    if r.added_p50_ms_at_1 is not None and r.added_p99_ms_at_1 is not None and direct_1 and gateway_1:
        direct_ms, gateway_ms = direct_1.wrk.latency_ms, gateway_1.wrk.latency_ms
        parts.append(
            f"the gateway adds **{r.added_p50_ms_at_1:+.2f} ms** p50 at 1 connection "
            f"({_fmt_ms(gateway_ms.p50)} vs {_fmt_ms(direct_ms.p50)} ms; "
            f"p99 {r.added_p99_ms_at_1:+.2f} ms: {_fmt_ms(gateway_ms.p99)} vs "
            f"{_fmt_ms(direct_ms.p99)} ms)")
    gateway = upstream.measured("gateway", n)
    if r.rows_per_upstream_predict is not None and gateway:
        parts.append(f"at {n} connections the front merged {gateway.front_requests} requests "
                     f"into {gateway.upstream_predicts} upstream Predicts "
                     f"({r.rows_per_upstream_predict:.1f} rows each)")
    lines += _sentence("Ratios", parts)
    for name in r.invalid_because_of_errors:
        lines.append(f"**WARNING: {name} connections had errors; its figures are not comparable.**")
    lines.append("Upstream Predicts: the upstream's `tfgw_requests_total{method=\"predict\","
                 "code=\"OK\"}` over the run (REST calls in (e), the front's gRPC calls in (f)); "
                 "client requests: as counted by the server the clients called (wrk's count, in "
                 "Runs, omits those still in flight when it stopped).")
    lines.append(f"Pinning: {upstream.note}")
    return "\n".join(lines) + "\n"


def render(report: Report) -> str:
    meta = report.meta
    head = (f"## make bench ({meta.started})\n\n{meta.cpus} CPUs; {meta.pinning}; "
            f"{meta.wrk}; wrk -t1, timeout {meta.wrk_timeout}; measured {meta.duration} s after "
            f"{meta.warmup} s warm-up (image model: 2/3 of both); "
            f"Python {meta.python}, TensorFlow {meta.tensorflow or '?'}; "
            f"commit {meta.commit}.\n")
    return head + "\n" + "\n".join(render_model(model, result, meta.connections)
                                   for model, result in report.models.items())
