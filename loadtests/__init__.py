"""Load tests: ``python -m loadtests.bench`` (``make bench``) measures the gateway against
the model's raw in-process throughput, a no-op HTTP endpoint (the HTTP ceiling) and the
naive FastAPI server users write today, under the same wrk load, and writes a markdown
table and JSON to ``bench-results/``. ``baselines/`` holds the two comparison servers;
``wrk/`` the Lua script that replays pre-generated request bodies.
"""
