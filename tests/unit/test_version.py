"""hyft's version is declared once, in pyproject.toml; what must repeat it as a literal (the chart,
the README's commands) is checked against it."""
from __future__ import annotations

import re
import tomllib

import yaml

from hyft_operator.settings import OperatorSettings
from hyft_trainer.contract import VERSION
from tests.helpers import ROOT

DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE_TAG = re.compile(r"hyft-(?:trainer|operator):([0-9][\w.+-]*)")


def test_the_code_reads_the_declared_version():
    assert VERSION == DECLARED
    assert OperatorSettings().trainer_image.endswith(f"hyft-trainer:{DECLARED}")


def test_the_chart_and_the_readme_say_the_declared_version():
    chart = yaml.safe_load((ROOT / "charts" / "hyft-operator" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "hyft-operator" / "values.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (DECLARED, DECLARED)
    tags = IMAGE_TAG.findall(values["trainer"]["image"]) + IMAGE_TAG.findall((ROOT / "README.md").read_text())
    assert tags and set(tags) == {DECLARED}, tags
