"""A batching gateway for TensorFlow SavedModels that speaks TensorFlow Serving's APIs."""
