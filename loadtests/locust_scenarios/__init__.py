"""Open-loop Locust load against TF Serving's APIs: ``make loadtest`` (``run local``), the
cluster runs (``run cluster``, ``run worker``) and ``make soak`` (``soak``).

``locustfile`` holds the users and load shape Locust runs; ``scenario`` starts one headless
Locust run as a pinned subprocess; ``schedules`` are the rates over time, ``samples`` the raw
per-request records; ``distributed`` and ``workers`` spread a run over Locust workers;
``slo`` searches the highest rate within a p99 SLO, ``sweep`` does it per batching setting on
servers started here and ``report`` renders the tables and the plot; ``run`` is the command
line.
"""
