"""Deterministic example models (built, never downloaded) for tests, benchmarks and demos.

``natality`` is a cheap tabular regressor whose right answer is a known formula;
``image_classifier`` is an expensive MobileNetV2 with seeded weights. Build both with
``python -m serving.examples.build --out models`` (``make models``).
"""
