"""The TF Serving upstream backend: merged batches sent as one Predict to a TF Serving fleet."""
