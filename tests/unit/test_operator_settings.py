"""The operator's settings are read from HYFT_<NAME> variables once; a bad value stops it naming the variable."""
from __future__ import annotations

import pytest

from hyft_operator.settings import OperatorSettings


def test_variables_set_the_fields_and_the_rest_keep_their_defaults():
    settings = OperatorSettings.from_env({"HYFT_RESYNC_SECONDS": "1", "HYFT_SCRAPE_PROGRESS": "0",
                                          "HYFT_TRAINER_IMAGE": "registry.example/t:1", "HYFT_CACHE": "/elsewhere"})
    assert (settings.resync_seconds, settings.scrape_progress, settings.trainer_image) == (1.0, False,
                                                                                            "registry.example/t:1")
    assert settings.reconcile_workers == OperatorSettings().reconcile_workers


@pytest.mark.parametrize("variable, value", [("HYFT_RECONCILE_WORKERS", "0"), ("HYFT_METRICS_PORT", "http"),
                                             ("HYFT_TRAINER_IMAGE_PULL_POLICY", "Sometimes")])
def test_a_bad_value_stops_the_operator_naming_the_variable(variable, value):
    with pytest.raises(SystemExit, match=rf"hyft operator settings: {variable}: "):
        OperatorSettings.from_env({variable: value})
