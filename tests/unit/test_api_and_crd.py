"""The API models are the single source of truth: the committed CRD matches them,
every field is described (kubectl explain teaches), and the Python-side validation
agrees with the CEL rules for the cross-field constraints."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from hyft_operator import api, cli, crdgen
from hyft_trainer.problems import describe
from hyft_trainer.rules import CEL
from tests.helpers import EXAMPLES, ROOT, load_example
from tests.invalid_specs import CASES
from tests.jobs import cpu_job


def test_committed_crd_matches_the_models():
    committed = (ROOT / "crds" / crdgen.CRD_FILE).read_text()
    assert committed == crdgen.render(), "crds/ drifted from hyft_operator/api.py: run `make regen`"


def test_committed_reference_docs_match_the_models():
    from hyft_operator import docgen

    assert (ROOT / "docs" / "reference.md").read_text() == docgen.render(), "docs drifted: run `make regen`"


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_every_spec_and_status_field_has_a_description():
    version = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for root in ("spec", "status"):
        missing = [path for path, node in _walk(version["properties"][root], root)
                   if not path.endswith("[]") and not node.get("description")]
        assert missing == []


def test_schema_is_structural():
    """No $ref, no pydantic titles, every property typed (or explicitly preserving unknown fields)."""
    text = yaml.safe_dump(crdgen.crd())
    assert "$ref" not in text and "title:" not in text
    version = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(version["properties"]["spec"]):
        assert "type" in node or "anyOf" in node, path


def test_nested_settings_default_to_empty_objects_so_the_server_fills_them():
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in ("method", "training", "deepspeed", "scheduling", "runPolicy", "metrics"):
        assert spec["properties"][name]["default"] == {}, name
    assert spec["properties"]["training"]["properties"]["precision"]["default"] == "bf16"


def test_immutable_fields_carry_a_transition_rule():
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in ("model", "data", "output", "method", "training", "deepspeed"):
        rules = [r["rule"] for r in spec["properties"][name]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, name
    for name in ("runPolicy", "scheduling", "nodes", "gpusPerNode"):
        assert "x-kubernetes-validations" not in spec["properties"][name], name
    # the size changes while suspended, queued or restarting: a rule on the whole resource, which sees the
    # stored status (tests/k8s: the API server's verdict on updates)
    root = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert api.RESIZE_BETWEEN_ATTEMPTS in root["x-kubernetes-validations"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path):
    job = api.HunyuanFineTune.model_validate(load_example(path))
    assert job.spec.nodes >= 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_render_refuses_each_invalid_case_naming_the_field(case, tmp_path):
    """The Python half of the one invalid table (the API server's half: tests/k8s/test_validation.py)."""
    body = cpu_job("invalid")
    case.mutate(body)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    if case.verdict == "pod":  # only the API server's pod validation knows these pass-through objects
        assert cli._load_resource(str(path), "default").spec
        return
    with pytest.raises(SystemExit) as refused:
        cli._load_resource(str(path), "default")
    assert case.field in str(refused.value), str(refused.value)


def test_the_invalid_table_covers_every_rule():
    """Each CEL rule of the CRD has a case in the table that breaks it."""
    rules = [r["message"] for r in _all_rules(crdgen.crd()) if "oldSelf" not in r["rule"]]  # updates: tests/k8s
    refusals = []
    for case in CASES:
        body = cpu_job("invalid")
        case.mutate(body)
        try:
            api.HunyuanFineTune.model_validate(body)
        except ValidationError as err:
            refusals.append(" ".join(describe(err)))
    untested = [rule for rule in rules if not any(rule in refusal for refusal in refusals)]
    assert not untested


def _all_rules(node):
    if isinstance(node, dict):
        yield from node.get(CEL, [])
        for value in node.values():
            yield from _all_rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_rules(value)
