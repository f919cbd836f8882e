"""The app's shape: what ``GatewayApp``'s direct POST path relies on (no server needed)."""
from __future__ import annotations

import pytest

from serving.core.service import InferenceService
from serving.metrics import Metrics
from serving.rest.app import create_app
from serving.rest.cors import CORSHeaders
from serving.settings import ModelConfig, Settings


@pytest.mark.parametrize("cors", [False, True])
def test_the_direct_posts_skip_no_middleware_of_the_app(cors):
    """POSTs to the model routes go to their endpoint ahead of the middleware stack, wrapped
    in CORSHeaders only. A middleware added to the app would silently miss every
    prediction: this test fails first, so whoever adds one wraps the direct path too."""
    settings = Settings(port=0, rest_api_port=8501, rest_api_enable_cors_support=cors,
                        models=(ModelConfig(name="m", base_path="/nonexistent"),))
    app = create_app(settings, InferenceService(settings, Metrics()))
    assert [m.cls for m in app.user_middleware] == ([CORSHeaders] if cors else [])
