"""The model path shared by the gateway, the batch and the streaming pipelines."""
