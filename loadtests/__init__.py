"""Benchmarks and load tests of the gateway against its baselines, one sub-package per job.

``locust_scenarios/``: ``make loadtest`` and ``make soak`` (``python -m
loadtests.locust_scenarios.run``, ``...soak``): Locust scenarios (``locustfile``, ``scenario``,
``schedules``, ``samples``), the SLO search (``slo``), the batching sweep (``sweep``,
``report``), on one machine or spread over Locust workers (``distributed``, ``workers``), and
the soak that holds a rate while versions roll (``soak``).
``benchmarks/``: ``make bench*`` (``python -m loadtests.benchmarks.bench``, ``bench_*``): wrk
against the model's raw throughput, the HTTP ceiling, the naive server and the gateway; gRPC,
large requests, the prediction store's split, the pipelines and the REST codec.
``baselines/``: what the gateway is compared with, each run as its own process.
``support/``: what every job shares: ``processes`` (the one launcher, ``free_port``,
``wait_until``, pinning), ``probes`` (answers and metrics of a server under test),
``payloads`` (requests with known answers), ``emulator`` (Pub/Sub), ``outputs`` (where runs
write: the ignored ``bench-results/``).
``results/``: the committed tables and plots; ``publish`` (``make publish-results``) copies a
run's outputs there.
"""
