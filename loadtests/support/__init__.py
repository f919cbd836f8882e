"""What every load-test job shares: ``processes`` (the one launcher, ``free_port``,
``wait_until``, pinning), ``probes`` (answers and metrics of a server under test),
``payloads`` (requests with known answers), ``emulator`` (the Pub/Sub emulator) and
``outputs`` (where runs write and where their published tables live)."""
