"""``make loadtest``'s report: markdown tables and the trade-off plot, from its results JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _max_step(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in result["steps"] if s["passed"] and s["rate"] == result["max_qps"]), None)


def search_table(results: list[dict[str, Any]]) -> str:
    lines = ["| setting | max req/s at SLO | p99 ms there | rows per model call | server CPU "
             "| generator CPU | next step failed because | steps |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        best = _max_step(r) or {}
        cpu = best.get("server_cpu") or [None]
        why = r["failed_because"] or "– (never failed)"
        if r["generator_bound"]:
            why += " **(load generator near its limit)**"
        lines.append(
            f"| {r['setting']['name']} | **{_num(r['max_qps'], 0)}** | {_num(r['p99_ms_at_max'])} "
            f"| {_num(best.get('rows_per_model_call'))} | {_pct(cpu[0])} "
            f"| {_pct(best.get('generator_cpu'))} | {why} | {len(r['steps'])} |")
    return "\n".join(lines)


def phases_table(summary: dict[str, Any]) -> str:
    lines = ["| phase | offered req/s | achieved req/s | p50 ms | p99 ms | max ms | errors "
             "| generator CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in summary["phases"]:
        if p["measured"]:
            lat = p["latency_ms"]
            lines.append(f"| {p['phase']} | {_num(p['offered_rate'], 0)} "
                         f"| {_num(p['achieved_rate'], 0)} | {_num(lat['p50'])} | {_num(lat['p99'])} "
                         f"| {_num(lat['max'])} | {p['errors']} | {_pct(p['generator_cpu'])} |")
    return "\n".join(lines)


def shapes_section(shapes: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for label, summary in shapes.items():
        if "error" in summary:
            lines += ["", f"{label.capitalize()}: **FAILED**: {summary['error']}"]
        else:
            lines += ["", f"{label.capitalize()} (base {summary['scenario']['rate']:,.0f} req/s):",
                      "", phases_table(summary)]
    return lines


def plot(results: list[dict[str, Any]], slo_ms: float, title: str, path: Path) -> Path:
    """Left: the highest rate within the SLO per setting. Right: p99 against offered load for
    every step the searches ran (the trade-off curve of each setting)."""
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 5.2))
    names = [r["setting"]["name"] for r in results]
    values = [r["max_qps"] or 0 for r in results]
    colors = ["tab:gray" if r["setting"]["server"] == "naive" else
              "tab:red" if not r["setting"]["max_batch_size"] else "tab:blue" for r in results]
    bars.barh(names, values, color=colors)
    for y, value in enumerate(values):
        bars.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel(f"max requests/s with p99 ≤ {slo_ms:g} ms (open loop)")
    bars.set_title("QPS at SLO")
    for r in results:
        steps = sorted(r["steps"], key=lambda s: s["rate"])
        rates = [s["offered_rate"] for s in steps if s["latency_ms"]["p99"] is not None]
        p99s = [s["latency_ms"]["p99"] for s in steps if s["latency_ms"]["p99"] is not None]
        curves.plot(rates, p99s, marker="o", markersize=3, label=r["setting"]["name"])
    curves.axhline(slo_ms, color="black", linestyle="--", linewidth=1, label=f"SLO {slo_ms:g} ms")
    curves.set_yscale("log")
    curves.set_xlabel("offered requests/s")
    curves.set_ylabel("p99 latency, ms (from when each request was due)")
    curves.set_title("p99 vs offered load")
    curves.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
