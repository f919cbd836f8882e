"""The ``make bench*`` benchmarks, each a ``python -m loadtests.benchmarks.NAME`` command.

``bench`` (``make bench``): wrk against the model's raw throughput, a no-op endpoint (the
HTTP ceiling), the naive server and the gateway, also in front of an upstream; ``bench_wrk``
runs wrk and reads its report (Lua script in ``wrk/``), ``bench_results`` types the results,
``bench_report`` writes the markdown. ``bench_ceiling`` puts the gateway and the ceiling side
by side on one core, ``bench_grpc`` gRPC against REST (``bench_answers``: the answer forms),
``bench_large`` large requests, ``bench_precomputed`` the prediction store's split (Locust,
through ``locust_scenarios``), ``bench_batch`` and ``bench_streaming`` the pipelines,
``bench_codec`` the REST codec, ``bench_runners`` the model runners.
"""
