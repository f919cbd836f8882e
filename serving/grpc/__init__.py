"""The gRPC adapter: TF Serving's PredictionService and ModelService on grpc.aio."""
