"""The protocol-free core: model registry and inference service."""
