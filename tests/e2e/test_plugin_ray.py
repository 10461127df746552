"""The plugin's Ray client against a REAL local Ray head (tests/e2e/conftest.py): submit from the job
manager with the bearer token from QgsAuthManager, follow the event stream from the logs, load the output."""

from __future__ import annotations

import pytest
from test_plugin_prediction import run_scenario


@pytest.mark.slow
def test_plugin_job_on_a_real_ray_head(ray_head, tmp_path):
    run_scenario("test_job_on_a_real_ray_cluster", ray_head.env(), tmp_path, timeout=600)
