"""TLS for the gateway's ports, from TF Serving's ``SSLConfig`` (``--ssl_config_file``).

The file holds ``server_key`` and ``server_cert`` (PEM), ``custom_ca`` (PEM certificates a
client certificate must chain to) and ``client_verify`` (require such a certificate: mutual
TLS). The gRPC port uses it as TF Serving does (``grpc.ssl_server_credentials``, in
``serving.grpc.server``); the REST port only with ``--rest_api_ssl``, since TF Serving serves
REST in plaintext whatever the file says. This module builds the REST side's
``ssl.SSLContext``; ``serving.tfs_config`` also builds one at start to check the PEM text, so
a bad key or certificate is refused with a message instead of failing every handshake.
"""
from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from serving.settings import TLSConfig


def server_ssl_context(config: TLSConfig) -> ssl.SSLContext:
    """A server-side context: ``config``'s key and certificate; with ``client_verify``, a
    client certificate signed by ``custom_ca`` is required. ValueError names the part that
    does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # The ssl module loads a key and certificate from files only: write them to a
        # private folder (0700, key file 0600) just long enough to load them.
        with tempfile.TemporaryDirectory(prefix="tfgw-tls-") as folder:
            key, cert = Path(folder, "server.key"), Path(folder, "server.crt")
            _write_private(key, config.server_key.get_secret_value())
            _write_private(cert, config.server_cert)
            context.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError as error:
        raise ValueError(f"server_key and server_cert are not a matching PEM key and "
                         f"certificate: {error}") from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, ValueError) as error:
            raise ValueError(f"custom_ca is not PEM certificates: {error}") from None
    context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
