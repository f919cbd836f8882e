"""The gRPC adapter: TF Serving's PredictionService and ModelService, answered on the core's event loop."""
