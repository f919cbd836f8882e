"""Prometheus metrics of the gateway, on a registry of their own (one per server).

Three groups share the registry and the monitoring path:

- the gateway's own (``tfgw_*``), named by Prometheus conventions (``_seconds``,
  ``_total``, base units);
- TF Serving's (``:tensorflow:serving:*``), with TF Serving's names, labels, units
  (microseconds) and bucket boundaries, so dashboards and alerts written for TF Serving
  keep working (``TFServingMetrics``; README "Operations" lists where each comes from);
- prometheus_client's process, GC and platform collectors.

The ``model``/``model_name`` labels only ever hold configured model names (an unknown
name is counted as ""), so clients cannot grow their cardinality.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "tfgw_request_duration_seconds", "Time from a request's arrival to its answer.",
            ["model", "method", "api"], buckets=_LATENCY, registry=r)
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
            "tfgw_requests", "Requests answered, by outcome.", ["model", "method", "code", "api"],
            registry=r)
        self.rejections = Counter(
            "tfgw_rejections", "Requests refused or dropped, by reason.", ["model", "reason"],
            registry=r)
        self.precomputed_rows = Counter(
            "tfgw_precomputed_rows", "Predict rows that carried a key, by how they were "
            "answered: hit (from the prediction store), miss (not in the store: the model), "
            "fallback (the store failed, was too slow or held an unusable entry: the model).",
            ["model", "outcome"], registry=r)
        self.store_lookup = Histogram(
            "tfgw_precomputed_lookup_seconds", "Time of one prediction store lookup (one per "
            "merged batch), answered or not.", ["model"], buckets=_LATENCY, registry=r)
        self.store_failures = Counter(
            "tfgw_precomputed_lookup_failures", "Prediction store lookups that gave no answer, "
            "by reason: error (the store failed), timeout (slower than its time budget), "
            "skipped (not tried: the store failed just before, or the deadline left no time).",
            ["model", "reason"], registry=r)
        self._answered: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._queued: dict[str, _Count] = {}
        self._precomputed: dict[str, tuple[Counter, Counter, Counter]] = {}
        self.tfs = TFServingMetrics()
        r.register(self.tfs)
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)

    def answered(self, model: str, method: str, code: str, seconds: float, api: str = "tfserving") -> None:
        """One request answered: ``tfgw_requests_total`` and ``tfgw_request_duration_seconds``;
        ``api`` is the protocol it came in by: ``tfserving`` or ``v2`` (the Open Inference
        Protocol).

        The labelled children are looked up once per label set (``labels()`` validates and
        locks on every call, a few microseconds a request); model labels are only ever
        configured names, so the cache stays small.
        """
        key = (model, method, code, api)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (self.requests.labels(model, method, code, api),
                                              self.request_duration.labels(model, method, api))
        children[0].inc()
        children[1].observe(seconds)

    def precomputed(self, model: str, hits: int, misses: int, fallbacks: int) -> None:
        """One answered request's keyed rows, by outcome (children cached as in ``answered``)."""
        children = self._precomputed.get(model)
        if children is None:
            rows = self.precomputed_rows
            children = self._precomputed[model] = (
                rows.labels(model, "hit"), rows.labels(model, "miss"), rows.labels(model, "fallback"))
        for child, count in zip(children, (hits, misses, fallbacks)):
            if count:
                child.inc(count)

    def for_store(self, model: str) -> StoreMetrics:
        """What ``serving.precomputed.lookup`` reports for ``model``'s lookups."""
        return StoreMetrics(self, model)

    def for_model(self, model: str, thread_pool_name: str | None = None) -> ModelBatchMetrics:
        """The batcher's metrics for ``model``; with ``thread_pool_name`` (batching on) also
        TF Serving's ``batching_session`` ones, labelled with that pool as TF Serving does."""
        return ModelBatchMetrics(self, model, thread_pool_name)

    def queued_rows(self, model: str) -> _Count:
        """The rows waiting in ``model``'s batch queues (all its versions and signatures),
        a plain count read by ``tfgw_queue_depth_rows`` at scrape time."""
        count = self._queued.get(model)
        if count is None:
            count = self._queued[model] = _Count()
            self.queue_depth.labels(model).set_function(lambda: count.value)
        return count

    def watch_runners(self, labels: Callable[[], Iterable[Sequence[str]]]) -> None:
        """Export ``tfgw_model_runner_info``: ``labels()`` (model, version, runner, evidence,
        state) of each served version, read at each scrape."""
        self.registry.register(_RunnerInfo(labels))

    def exposition(self) -> bytes:
        return self.tfs.fix_counter_names(generate_latest(self.registry))


class _RunnerInfo:
    """An info-style gauge (value 1) per served version: which runner serves it (session,
    functions, upstream), on what evidence (warmup_file, live_requests, synthetic,
    tf1_model, disabled), and whether that is settled or still being compared."""

    NAME = "tfgw_model_runner_info"
    LABELS = ("model", "version", "runner", "evidence", "state")

    def __init__(self, labels: Callable[[], Iterable[Sequence[str]]]) -> None:
        self._labels = labels

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, "Which runner serves each model version, on what evidence "
                                 "(state comparing: its first live calls are being compared with a TF1 "
                                 "Session).", labels=self.LABELS)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels in self._labels():
            family.add_metric(list(labels), 1)
        yield family


class _Count:
    """A number the event loop updates without a lock (a locked gauge costs about a
    microsecond per update, twice per request), read by a gauge's function."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class ModelBatchMetrics:
    """The batcher's view (``serving.batching.batcher.BatchMetrics``) for one model."""

    def __init__(self, metrics: Metrics, model: str, thread_pool_name: str | None) -> None:
        self._depth = metrics.queued_rows(model)
        self._wait = metrics.queue_wait.labels(model)
        self._size = metrics.batch_size.labels(model)
        self._execution = metrics.model_execution.labels(model)
        self._tfs = metrics.tfs if thread_pool_name is not None else None
        self._pool = thread_pool_name or ""

    def queued(self, rows: int) -> None:
        self._depth.value += rows

    def queue_wait(self, seconds: float, rows: int = 1) -> None:
        self._wait.observe(seconds)
        if self._tfs is not None:
            self._tfs.queuing_latency.cell(self._pool).observe(seconds * 1e6)
            self._tfs.input_batch_size.cell().observe(rows)

    def batch(self, rows: int, seconds: float, padded_rows: int | None = None) -> None:
        self._size.observe(rows)
        self._execution.observe(seconds)
        if self._tfs is not None:
            padded_rows = rows if padded_rows is None else padded_rows
            self._tfs.processed_batch_size.cell().observe(padded_rows)
            self._tfs.padding_size.cell(str(padded_rows)).observe(padded_rows - rows)
            self._tfs.wrapped_run_count()


class StoreMetrics:
    """The prediction store lookups' view (``serving.precomputed.lookup.LookupMetrics``) for
    one model; called from the batch threads (prometheus_client's metrics are thread-safe)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._seconds = metrics.store_lookup.labels(model)
        self._failures = metrics.store_failures
        self._model = model

    def lookup(self, seconds: float) -> None:
        self._seconds.observe(seconds)

    def failed(self, reason: str) -> None:
        self._failures.labels(self._model, reason).inc()


# --- TF Serving's metrics ----------------------------------------------------------------

def exponential_buckets(scale: float, growth_factor: float, bucket_count: int) -> tuple[float, ...]:
    """TensorFlow's ``monitoring::Buckets::Exponential``: ``scale · growth^i``, i < count,
    computed by repeated multiplication as TensorFlow does (then +Inf)."""
    bounds = []
    bound = scale
    for _ in range(bucket_count):
        bounds.append(bound)
        bound *= growth_factor
    return tuple(bounds)


#: tensorflow_serving/servables/tensorflow/util.cc: request_latency and runtime_latency,
#: "Scale of 10, power of 1.8 with bucket count 33 (~20 minutes)", in microseconds.
LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)
#: tensorflow_serving/batching/batching_session.cc: queuing_latency, "Scale of 100, power of
#: 1.2 with bucket count 52 (~1 second)", in microseconds.
QUEUING_BUCKETS_US = exponential_buckets(100, 1.2, 52)
#: tensorflow_serving/batching/batching_util.h: input/processed batch size and padding,
#: "Exponential buckets [1*2^0, ..., 1*2^13, DBL_MAX]".
BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)


class _Histogram:
    """One labelled cell: plain counts, no lock (everything runs on the event loop)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus: value <= le
        self.sum += value


class _HistogramFamily:
    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.bounds = bounds
        # TF Serving prints bucket limits with absl::StrCat, i.e. six significant digits (%g).
        self._le = [format(b, "g") for b in bounds] + ["+Inf"]
        self._cells: dict[tuple[str, ...], _Histogram] = {}

    def cell(self, *labels: str) -> _Histogram:
        cell = self._cells.get(labels)
        if cell is None:
            cell = self._cells[labels] = _Histogram(self.bounds)
        return cell

    def collect(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, cell in list(self._cells.items()):
            total = 0
            buckets = []
            for le, count in zip(self._le, list(cell.counts)):
                total += count
                buckets.append((le, total))
            family.add_metric(labels, buckets, cell.sum)
        return family


class _CounterFamily:
    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._values: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self._values[labels] = self._values.get(labels, 0) + 1

    def collect(self) -> Metric:
        # Samples named exactly as TF Serving's (no ``_total``): queries keep matching.
        family = Metric(self.name, self.documentation, "counter")
        for labels, value in list(self._values.items()):
            family.add_sample(self.name, dict(zip(self.labels, labels)), value)
        return family


class TFServingMetrics:
    """TF Serving's own metrics, as its Prometheus exporter names them.

    TF Serving's exporter turns ``/tensorflow/serving/request_count`` into
    ``:tensorflow:serving:request_count`` (every character outside ``[a-zA-Z0-9_]`` becomes
    ``:``; tensorflow_serving/util/prometheus_exporter.cc). A prometheus_client collector:
    observations are plain list and dict updates, cheaper per request than
    prometheus_client's locked metrics.
    """

    def __init__(self) -> None:
        p = ":tensorflow:serving:"
        # tensorflow_serving/servables/tensorflow/util.cc
        self.request_count = _CounterFamily(
            p + "request_count", "The total number of requests.", ("model_name", "status"))
        self.request_latency = _HistogramFamily(
            p + "request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
        self.runtime_latency = _HistogramFamily(
            p + "runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"), LATENCY_BUCKETS_US)
        # tensorflow_serving/batching/batching_session.cc and batching_util.h
        b = p + "batching_session:"
        self.queuing_latency = _HistogramFamily(
            b + "queuing_latency", "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",), QUEUING_BUCKETS_US)
        self.input_batch_size = _HistogramFamily(
            b + "input_batch_size", "Tracks the batch size distribution on the inputs.", (),
            BATCH_SIZE_BUCKETS)
        self.processed_batch_size = _HistogramFamily(
            b + "processed_batch_size", "Tracks the batch size distribution on processing.", (),
            BATCH_SIZE_BUCKETS)
        self.padding_size = _HistogramFamily(
            b + "padding_size", "Tracks the padding size distribution on batches.",
            ("execution_batch_size",), BATCH_SIZE_BUCKETS)
        self._wrapped_runs = _CounterFamily(
            b + "wrapped_run_count", "Total count of run calls on the wrapped session", ())
        self._counters = (self.request_count, self._wrapped_runs)
        self._histograms = (self.request_latency, self.runtime_latency, self.queuing_latency,
                            self.input_batch_size, self.processed_batch_size, self.padding_size)

    # -- recording (hot path) -------------------------------------------------------------

    def request(self, model_name: str, api: str, entrypoint: str, status: str,
                seconds: float) -> None:
        """One PredictionService request answered: counted by status; timed if OK, as TF
        Serving times only successful ones."""
        self.request_count.inc(model_name, status)
        if status == "OK":
            self.request_latency.cell(model_name, api, entrypoint).observe(seconds * 1e6)

    def runtime(self, model_name: str, api: str, runtime: str, seconds: float) -> None:
        self.runtime_latency.cell(model_name, api, runtime).observe(seconds * 1e6)

    def wrapped_run_count(self) -> None:
        self._wrapped_runs.inc()

    # -- exposition -----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for counter in self._counters:
            yield counter.collect()
        for histogram in self._histograms:
            yield histogram.collect()

    def fix_counter_names(self, text: bytes) -> bytes:
        """prometheus_client's text format names every counter family ``NAME_total`` in its
        HELP and TYPE lines; TF Serving's exporter names them ``NAME``, as the samples are."""
        for counter in self._counters:
            name = counter.name.encode()
            text = text.replace(b"# HELP " + name + b"_total ", b"# HELP " + name + b" ", 1)
            text = text.replace(b"# TYPE " + name + b"_total ", b"# TYPE " + name + b" ", 1)
        return text
