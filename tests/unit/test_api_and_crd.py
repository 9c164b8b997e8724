"""The API models are the single source of truth: the committed CRD matches them,
every field is described (kubectl explain teaches), and the Python-side validation
agrees with the CEL rules for the cross-field constraints."""
from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from hyft_operator import api, crdgen
from tests.helpers import EXAMPLES, ROOT, load_example


def test_committed_crd_matches_the_models():
    committed = (ROOT / "crds" / crdgen.CRD_FILE).read_text()
    assert committed == crdgen.render(), "crds/ drifted from hyft_operator/api.py: run `make crds`"


def test_committed_reference_docs_match_the_models():
    from hyft_operator import docgen

    assert (ROOT / "docs" / "reference.md").read_text() == docgen.render(), "docs drifted: run `make crds`"


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
    for name in ("model", "data", "output", "method", "training", "deepspeed", "nodes", "gpusPerNode"):
        rules = [r["rule"] for r in spec["properties"][name]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, name
    for name in ("runPolicy", "scheduling"):
        assert "x-kubernetes-validations" not in spec["properties"][name], name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path):
    job = api.HunyuanFineTune.model_validate(load_example(path))
    assert job.spec.nodes >= 1


def _minimal():
    return load_example(ROOT / "examples" / "minimal.yaml")["spec"]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["model"].update(volume="nope"), "model.volume"),
    (lambda s: s.update(volumes=s["volumes"] + [s["volumes"][0]]), "unique"),
    (lambda s: s.update(nodes=2, volumes=[s["volumes"][0], {"name": "data", "emptyDir": {}}]), "shared"),
    (lambda s: s.update(gpusPerNode=0), "fp32"),
    (lambda s: s["data"].update(files=[]), "data"),
    (lambda s: s.update(nodes=0), "nodes"),
    (lambda s: s["method"].update(type="qlora") if "method" in s else s.update(method={"type": "qlora"}), "method"),
    (lambda s: s.update(colour="red"), "colour"),
    (lambda s: s.update(training={"warmupRatio": 1.0}), "warmupRatio"),
])
def test_python_validation_names_the_field(mutate, message):
    spec = copy.deepcopy(_minimal())
    mutate(spec)
    with pytest.raises(ValidationError, match=message):
        api.HunyuanFineTuneSpec.model_validate(spec)
