"""Prometheus metrics of the gateway, on a registry of their own (one per server).

Names follow Prometheus conventions (``_seconds``, ``_total``, base units). The ``model``
label only ever holds configured model names, so clients cannot grow its cardinality.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "tfgw_request_duration_seconds", "Time from a request's arrival to its answer.",
            ["model", "method"], buckets=_LATENCY, registry=r)
        self.queue_wait = Histogram(
            "tfgw_queue_wait_seconds", "Time a request waited in the batch queue.",
            ["model"], buckets=_LATENCY, registry=r)
        self.batch_size = Histogram(
            "tfgw_batch_size_rows", "Rows per model call (before padding).",
            ["model"], buckets=_ROWS, registry=r)
        self.model_execution = Histogram(
            "tfgw_model_execution_seconds", "Time of one model call.",
            ["model"], buckets=_LATENCY, registry=r)
        self.queue_depth = Gauge(
            "tfgw_queue_depth_rows", "Rows waiting in batch queues.", ["model"], registry=r)
        self.in_flight = Gauge(
            "tfgw_in_flight_requests", "Requests being handled (queued or running).", registry=r)
        self.requests = Counter(
            "tfgw_requests", "Requests answered, by outcome.", ["model", "method", "code"],
            registry=r)
        self.rejections = Counter(
            "tfgw_rejections", "Requests refused or dropped, by reason.", ["model", "reason"],
            registry=r)

    def for_model(self, model: str) -> ModelBatchMetrics:
        return ModelBatchMetrics(self, model)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ModelBatchMetrics:
    """The batcher's view (``serving.batching.batcher.BatchMetrics``) for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._depth = metrics.queue_depth.labels(model)
        self._wait = metrics.queue_wait.labels(model)
        self._size = metrics.batch_size.labels(model)
        self._execution = metrics.model_execution.labels(model)

    def queued(self, rows: int) -> None:
        self._depth.inc(rows)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self._size.observe(rows)
        self._execution.observe(seconds)
