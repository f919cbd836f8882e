"""TLS from TF Serving's ``--ssl_config_file``: the file, gRPC (mutual) TLS, REST over TLS.

Certificates are made here with ``openssl``: a CA, a server certificate for
``DNS:localhost,IP:127.0.0.1`` and a client certificate signed by it, and a second CA with
its own client certificate, which the server must not accept.
"""
from __future__ import annotations

import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from loadtests.support.processes import Job
from serving.cli import build_settings
from serving.settings import ModelConfig, Settings, TLSConfig
from serving.tfs_config import ConfigError, SSLConfig, read_ssl_config_file
from tests.conftest import REPO, Gateway, free_port, require_tool, wait_until

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"


@dataclass(frozen=True)
class Pki:
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name

    def pem(self, name: str) -> str:
        return self.path(name).read_text()

    def tls(self, client_verify: bool = False) -> TLSConfig:
        return TLSConfig(server_key=self.pem("server.key"), server_cert=self.pem("server.crt"),
                         custom_ca=self.pem("ca.crt"), client_verify=client_verify)


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, ca: str, subject: str, extensions: str) -> None:
    """``name``.key and ``name``.crt, signed by the CA ``ca``."""
    (folder / f"{name}.ext").write_text(extensions + "\n")
    _openssl(folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")


def _ca(folder: Path, name: str) -> None:
    _openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """ca, server (localhost, 127.0.0.1), client (signed by ca); rogue_ca and rogue_client."""
    require_tool("openssl", install="apt-get install openssl")
    folder = tmp_path_factory.mktemp("pki")
    _ca(folder, "ca")
    _issue(folder, "server", "ca", "/CN=localhost",
           "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _issue(folder, "client", "ca", "/CN=client", "extendedKeyUsage=clientAuth")
    _ca(folder, "rogue_ca")
    _issue(folder, "rogue_client", "rogue_ca", "/CN=rogue", "extendedKeyUsage=clientAuth")
    return Pki(folder)


def ssl_config_file(path: Path, **fields: object) -> Path:
    """TF Serving's SSLConfig text proto, written by protobuf (PEM text escaped as TF Serving's are)."""
    path.write_text(text_format.MessageToString(SSLConfig(**fields)))
    return path


def inline_fields(pki: Pki, client_verify: bool = False) -> dict[str, object]:
    return {"server_key": pki.pem("server.key"), "server_cert": pki.pem("server.crt"),
            "custom_ca": pki.pem("ca.crt"), "client_verify": client_verify}


# --- the file ----------------------------------------------------------------------------

def test_tf_serving_ssl_config_with_inline_pem(pki, tmp_path):
    config = ssl_config_file(tmp_path / "ssl.config", **inline_fields(pki, client_verify=True))
    assert "-----BEGIN" in config.read_text() and "\\n" in config.read_text()  # TF Serving's form
    settings = build_settings(["--model_base_path=/m", f"--ssl_config_file={config}"], {})
    tls = settings.ssl_config
    assert tls is not None and tls.client_verify
    assert tls.server_key.get_secret_value().strip() == pki.pem("server.key").strip()
    assert tls.server_cert.strip() == pki.pem("server.crt").strip()
    assert tls.custom_ca.strip() == pki.pem("ca.crt").strip()
    assert pki.pem("server.key").strip() not in repr(settings)  # the key never shows in logs
    assert settings.rest_api_ssl is False  # REST stays plaintext unless asked, as in TF Serving


def test_ssl_config_may_name_pem_files(pki, tmp_path):
    config = ssl_config_file(tmp_path / "ssl.config", server_key=str(pki.path("server.key")),
                             server_cert=str(pki.path("server.crt")))
    tls = read_ssl_config_file(config)
    assert tls.server_cert == pki.pem("server.crt") and tls.custom_ca == "" and not tls.client_verify


@pytest.mark.parametrize(("fields", "problem"), [
    ({"server_cert": "server.crt"}, "server_key is empty"),
    ({"server_key": "server.key"}, "server_cert is empty"),
    ({"server_key": "missing.key", "server_cert": "server.crt"},
     "server_key is neither PEM text nor a readable PEM file: .*missing.key.*No such file"),
    ({"server_key": "server.ext", "server_cert": "server.crt"}, "server_key file .* holds no PEM block"),
    ({"server_key": "client.key", "server_cert": "server.crt"},
     "server_key and server_cert are not a matching PEM key and certificate: .*KEY_VALUES_MISMATCH"),
    ({"server_key": "server.key", "server_cert": "server.crt", "custom_ca": "server.csr"},
     "custom_ca is not PEM certificates"),
    ({"server_key": "server.key", "server_cert": "server.crt", "client_verify": True},
     "client_verify needs custom_ca"),
])
def test_bad_ssl_configs_are_refused(pki, tmp_path, fields, problem):
    resolved = {name: str(pki.path(value)) if isinstance(value, str) else value
                for name, value in fields.items()}
    config = ssl_config_file(tmp_path / "ssl.config", **resolved)
    with pytest.raises(ConfigError, match=f"SSL config file '{config}': {problem}"):
        read_ssl_config_file(config)


def test_unreadable_or_unparsable_ssl_config_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it: No such file"):
        read_ssl_config_file(tmp_path / "missing.config")
    config = tmp_path / "ssl.config"
    config.write_text('server_key: "x"\nno_such_field: 1\n')
    with pytest.raises(ConfigError, match="not a valid tensorflow.serving.SSLConfig text proto"):
        read_ssl_config_file(config)


def test_process_refuses_a_bad_ssl_config_with_exit_1(tmp_path):
    config = tmp_path / "ssl.config"
    config.write_text('server_key: "not pem"')
    done = subprocess.run([sys.executable, "-m", "serving", "--model_base_path=/m",
                           f"--ssl_config_file={config}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: SSL config file '{config}': server_key is neither PEM")
    assert "Traceback" not in done.stderr


def test_rest_api_ssl_needs_an_ssl_config():
    with pytest.raises(ConfigError, match="rest_api_ssl needs an SSL config"):
        build_settings(["--model_base_path=/m", "--rest_api_ssl"], {})


def test_ssl_config_message_matches_tf_serving():
    assert SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    assert [(f.name, f.number) for f in SSLConfig.DESCRIPTOR.fields] == [
        ("server_key", 1), ("server_cert", 2), ("custom_ca", 3), ("client_verify", 4)]


# --- gRPC ------------------------------------------------------------------------------

def predict(channel: grpc.Channel) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 2
    request.inputs["x"].float_val.extend([1.0, 2.0])
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    y = response.outputs["y"]
    return np.frombuffer(y.tensor_content, np.float32).tolist() if y.tensor_content else list(y.float_val)


def status(channel: grpc.Channel) -> int:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    return response.model_version_status[0].version


def credentials(pki: Pki, client: str | None = None, ca: str = "ca") -> grpc.ChannelCredentials:
    key = pki.path(f"{client}.key").read_bytes() if client else None
    cert = pki.path(f"{client}.crt").read_bytes() if client else None
    return grpc.ssl_channel_credentials(pki.path(f"{ca}.crt").read_bytes(), key, cert)


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture(scope="module")
def grpc_gateways(pki, tfserving_dir, grpc_server):
    """Two gateways with the same certificates, on each gRPC server: TLS, and mutual TLS
    (client_verify)."""
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / HALF_PLUS_TWO)),)
    tls = Settings(port=free_port(), rest_api_port=free_port(), host="127.0.0.1", models=models,
                   grpc_server=grpc_server, ssl_config=pki.tls(client_verify=False))
    mutual = Settings(port=free_port(), rest_api_port=free_port(), host="127.0.0.1", models=models,
                      grpc_server=grpc_server, ssl_config=pki.tls(client_verify=True))
    with Gateway(tls) as one, Gateway(mutual) as two:
        yield one, two


def test_grpc_over_tls_answers_and_refuses_plaintext(grpc_gateways, pki):
    gateway, _ = grpc_gateways
    with grpc.secure_channel(gateway.grpc_target, credentials(pki)) as channel:
        assert predict(channel) == [2.5, 3.0]
        assert status(channel) == 123
    with grpc.insecure_channel(gateway.grpc_target) as plaintext:
        assert refused(lambda: status(plaintext)) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(gateway.grpc_target, credentials(pki, ca="rogue_ca")) as untrusted:
        assert refused(lambda: status(untrusted)) == grpc.StatusCode.UNAVAILABLE  # server cert checked


def test_grpc_mutual_tls_needs_a_client_certificate_signed_by_the_ca(grpc_gateways, pki):
    _, gateway = grpc_gateways
    with grpc.secure_channel(gateway.grpc_target, credentials(pki, client="client")) as channel:
        assert predict(channel) == [2.5, 3.0]
    with grpc.secure_channel(gateway.grpc_target, credentials(pki)) as anonymous:
        assert refused(lambda: status(anonymous)) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(gateway.grpc_target, credentials(pki, client="rogue_client")) as rogue:
        assert refused(lambda: status(rogue)) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(gateway.grpc_target) as plaintext:
        assert refused(lambda: status(plaintext)) == grpc.StatusCode.UNAVAILABLE


# --- the process: REST plaintext by default, over TLS with --rest_api_ssl ------------------

def https_context(pki: Pki, client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.path("ca.crt"))
    if client:
        context.load_cert_chain(pki.path(f"{client}.crt"), pki.path(f"{client}.key"))
    return context


def start(tmp_path: Path, config: Path, tfserving_dir: Path, *flags: str) -> tuple[Job, int, int]:
    rest, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "serving", f"--rest_api_port={rest}", f"--port={grpc_port}",
            "--host=127.0.0.1", f"--model_base_path={tfserving_dir / HALF_PLUS_TWO}",
            f"--ssl_config_file={config}", *flags]
    return Job("gateway", argv, tmp_path / "gateway.log"), rest, grpc_port


def wait_ready(job: Job, url: str, verify: ssl.SSLContext | bool) -> None:
    def ready() -> bool:
        job.check_alive("before it was ready")
        try:
            return httpx.get(url + "/readyz", verify=verify, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=180, what=f"{url}/readyz")


@pytest.mark.slow
def test_process_serves_grpc_over_tls_and_rest_in_plaintext_by_default(pki, tmp_path, tfserving_dir,
                                                                      grpc_server):
    config = ssl_config_file(tmp_path / "ssl.config", **inline_fields(pki))
    job, rest, grpc_port = start(tmp_path, config, tfserving_dir, f"--grpc_server={grpc_server}")
    with job:
        wait_ready(job, f"http://127.0.0.1:{rest}", verify=False)
        answer = httpx.post(f"http://127.0.0.1:{rest}/v1/models/default:predict",
                            json={"instances": [1.0]}, timeout=30)
        assert answer.json() == {"predictions": [2.5]}
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials(pki)) as channel:
            assert predict(channel) == [2.5, 3.0]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plaintext:
            assert refused(lambda: status(plaintext)) == grpc.StatusCode.UNAVAILABLE
    assert "REST is plaintext, as in TF Serving" in job.log_path.read_text()


@pytest.mark.slow
def test_process_serves_rest_over_mutual_tls_with_rest_api_ssl(pki, tmp_path, tfserving_dir):
    config = ssl_config_file(tmp_path / "ssl.config", **inline_fields(pki, client_verify=True))
    job, rest, grpc_port = start(tmp_path, config, tfserving_dir, "--rest_api_ssl")
    url = f"https://localhost:{rest}"
    with job:
        wait_ready(job, url, verify=https_context(pki, client="client"))
        answer = httpx.post(url + "/v1/models/default:predict", json={"instances": [1.0]},
                            verify=https_context(pki, client="client"), timeout=30)
        assert answer.json() == {"predictions": [2.5]}
        for verify in (https_context(pki), https_context(pki, client="rogue_client")):
            with pytest.raises(httpx.TransportError):  # the handshake fails: no or a foreign cert
                httpx.get(url + "/v1/models/default", verify=verify, timeout=30)
        with pytest.raises(httpx.TransportError):  # plaintext HTTP to the TLS port
            httpx.get(f"http://127.0.0.1:{rest}/v1/models/default", timeout=30)
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials(pki, client="client")) as channel:
            assert status(channel) == 123
    assert job.proc.returncode == 0, job.log_tail()
