"""Every `hyft` subcommand explains itself."""
from __future__ import annotations

import pytest

from hyft_operator.cli import build_parser

COMMANDS = [["crd"], ["render"], ["run"], ["operator"], ["train"], ["data", "check"], ["data", "convert"],
            ["estimate"], ["tiny-model"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_reads_well(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: hyft {' '.join(command)}" in text
    assert len(text.split()) > 25  # a description, not just the usage line


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for name in ("crd", "render", "run", "operator", "train", "data", "estimate", "tiny-model"):
        assert f"    {name}" in text
    assert "kubectl get hft" in text


def test_render_prints_the_objects_of_an_example(capsys):
    from hyft_operator.cli import main
    from tests.helpers import ROOT

    main(["render", str(ROOT / "examples" / "minimal.yaml")])
    out = capsys.readouterr().out
    assert "kind: Service" in out and "name: minimal-master-0" in out and "train.yaml" in out
