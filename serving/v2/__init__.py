"""The Open Inference Protocol ("KServe v2"): its datatypes, binary tensor layout, request
parameters and metadata, shared by its REST and gRPC adapters (``serving.rest``,
``serving.grpc``).

Protocol-free like ``serving.core``: nothing here imports TensorFlow, fastapi, starlette or
grpc (``tests/test_package_boundaries.py``), so the rules are tested without a server and
each wire rule is one edit.
"""
