"""Streaming enrichment: Pub/Sub messages in, predictions or dead letters out, on Beam."""
