"""Benchmarks and load tests of the gateway against its baselines.

``make bench`` (``python -m loadtests.bench``): wrk against the model's raw throughput, a
no-op endpoint (the HTTP ceiling), the naive server and the gateway, also in front of an
upstream. ``bench`` orchestrates, ``bench_wrk`` runs wrk and reads its report (Lua script in
``wrk/``), ``bench_results`` types the results, ``bench_report`` writes the markdown.
``bench_batch``, ``bench_streaming`` and ``bench_codec`` measure the pipelines and the REST
codec; ``bench_grpc`` gRPC against REST, ``bench_large`` large requests, ``bench_precomputed``
the prediction store's split. ``make loadtest`` (``python -m loadtests.run``): Locust scenarios (``locustfile``,
``scenario``, ``schedules``, ``samples``), the SLO search (``slo``) and the batching sweep
(``sweep``, ``report``), on one machine or spread over Locust workers (``distributed``,
``workers``); ``soak`` holds a rate while versions roll. Shared: ``processes`` (the one launcher, ``free_port``,
``wait_until``, pinning), ``probes`` (answers and metrics of a server under test),
``payloads`` (requests with known answers), ``emulator`` (Pub/Sub), ``baselines/`` (what
the gateway is compared with).
"""
