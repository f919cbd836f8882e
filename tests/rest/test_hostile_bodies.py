"""Bodies a hostile or broken client sends: every one is answered 400 with ``{"error"}``
naming what is wrong (never a plain-text 500), and the server answers a good request after."""
from __future__ import annotations

import httpx
import pytest

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port

ROW = b'"is_male":"True","plurality":"Single(1)","gestation_weeks":39.0'


def natality(age: bytes, **extra: bytes) -> bytes:
    fields = b",".join([ROW, b'"mother_age":' + age] + [b'"%s":%s' % (k.encode(), v) for k, v in extra.items()])
    return b'{"instances":[{' + fields + b"}]}"


BODIES = [
    # numbers
    ("100,000-digit integer", natality(b"9" * 100_000), "Number too big to be stored in double"),
    ("negative 100,000-digit integer", natality(b"-" + b"9" * 100_000), "Number too big to be stored in double"),
    ("400-digit integer for a float", natality(b"9" * 400), "Number too big to be stored in double"),
    ("1e400 for a float", natality(b"1e400"), "Number too big to be stored in double"),
    ("integer as a string input", b'{"instances":[{"is_male":7,"mother_age":1.0,'
                                  b'"plurality":"Single(1)","gestation_weeks":39.0}]}', "is_male"),
    # nesting
    ("100,000 nested arrays", b'{"instances":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested too deeply"),
    ("50,000 nested objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
    ("rank 2,000 instance", b'{"instances":' + b"[" * 2_000 + b"1" + b"]" * 2_000 + b"}", "nested too deeply"),
    # encodings
    ("invalid UTF-8 in a string", b'{"instances":[{"is_male":"\xff\xfe","mother_age":1.0}]}',
     "Invalid encoding in string"),
    ("invalid UTF-8 in a key", b'{"instances":[{"\xff":"x"}]}', "Invalid encoding in string"),
    ("lone surrogate in a string input", natality(b"1.0").replace(b'"True"', b'"\\ud800"'),
     "is not valid Unicode"),
    ("lone surrogate as an input name", b'{"instances":[{"\\udfff":"a"}]}', "Unknown input(s)"),
    ("NUL byte", b'{"instances":[\x00]}', "JSON Parse error"),
    ("trailing garbage", b'{"instances":[]} x', "JSON Parse error"),
    # NaN and Infinity tokens where no number belongs
    ("NaN as the document", b"NaN", "Is not object"),
    ("NaN as instances", b'{"instances":NaN}', "Expecting 'instances' to be a list"),
    ("NaN as a string input", natality(b"1.0").replace(b'"True"', b"NaN"), "is_male"),
    ("-Infinity as signature_name", b'{"signature_name":-Infinity,"instances":[1]}',
     "'signature_name' must be a string"),
    ("NaN as a b64 value", natality(b"1.0").replace(b'"True"', b'{"b64":NaN}'), "b64"),
    ("Infinity as inputs", b'{"inputs":Infinity}', "expecting an object as multiple input tensors"),
    # shapes of documents
    ("empty body", b"", "The document is empty"),
    ("a number", b"12", "Is not object"),
    ("no instances", b"{}", "Missing 'inputs' or 'instances' key"),
    ("both forms", b'{"instances":[],"inputs":[]}', "only one of 'inputs' or 'instances'"),
    # large requests: the bulk decoders hand anything odd to the checked path
    ("bad row last of 5,000", b'{"instances":[' + b",".join(
        [natality(b"1.0")[14:-2]] * 4_999 + [natality(b'"old"')[14:-2]]) + b"]}",
     "element: 4999 key: mother_age"),
    ("string input 70 lists deep", natality(b"1.0").replace(b'"True"', b"[" * 70 + b'"True"' + b"]" * 70),
     "is_male"),
    ("ragged string column", b'{"inputs":{"is_male":["True",["True"]],"plurality":["Single(1)","Twins(2)"],'
                             b'"mother_age":[1.0,2.0],"gestation_weeks":[39.0,39.0]}}', "input: is_male"),
]


@pytest.fixture(scope="module")
def gateway(models_dir) -> Gateway:
    settings = Settings(port=0, rest_api_port=free_port(), max_request_bytes=4 << 20,
                        models=(ModelConfig(name="natality", base_path=str(models_dir / "natality")),))
    with Gateway(settings) as running:
        yield running


@pytest.mark.parametrize("name, body, fragment", BODIES, ids=[b[0] for b in BODIES])
def test_hostile_body_is_a_400_with_an_error(gateway, name, body, fragment):
    response = httpx.post(gateway.url + "/v1/models/natality:predict", content=body, timeout=60)
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"], response.json()


def test_server_answers_after_the_hostile_bodies(gateway):
    for _, body, _ in BODIES:
        httpx.post(gateway.url + "/v1/models/natality:predict", content=body, timeout=60)
    response = httpx.post(gateway.url + "/v1/models/natality:predict", content=natality(b"25.0"), timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1
