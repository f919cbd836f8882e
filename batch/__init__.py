"""Batch prediction: files in, the same files enriched with predictions out, on Apache Beam."""
