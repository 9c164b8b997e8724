"""What the CRD accepts, the operator can use: strings drawn from the CRD's own patterns go
through the operator's parsers and name builders without an error, and a value the operator
cannot read after all is an InvalidSpec naming the field (a verdict, never a reconcile error)."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity

from hyft_operator import api, builders, crdgen
from tests.jobs import cpu_job

SPEC = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
QUANTITY_FIELDS = {"cpu": SPEC["cpu"], "memory": SPEC["memory"], "shmSize": SPEC["shmSize"],
                   "network.resources": SPEC["network"]["properties"]["resources"]["additionalProperties"]}
DRAWS = settings(max_examples=400, derandomize=True, suppress_health_check=list(HealthCheck), deadline=None)
DNS_LABEL = re.compile(api.DNS_LABEL)


@pytest.mark.parametrize("field", QUANTITY_FIELDS)
def test_every_quantity_the_crd_accepts_is_one_the_operator_reads(field):
    @DRAWS
    @given(st.from_regex(QUANTITY_FIELDS[field]["pattern"], fullmatch=True))
    def parses(text):
        parse_quantity(text)

    parses()


@DRAWS
@given(st.from_regex(api.DNS_1035_LABEL, fullmatch=True).filter(lambda name: len(name) <= api.MAX_NAME_LENGTH))
def test_every_job_name_the_crd_accepts_names_valid_pods_and_hostnames(name):
    assert api.NAME_RULE.holds(name)
    last = api.HunyuanFineTuneSpec.model_fields["nodes"].metadata  # the largest gang: its last worker
    nodes = next(m.le for m in last if hasattr(m, "le"))
    for derived in (builders.pod_name(name, 0), builders.pod_name(name, nodes - 1), builders.config_map_name(name)):
        assert len(derived) <= 63 and DNS_LABEL.match(derived), derived


@pytest.mark.parametrize("field, text", [("memory", "1.2.3"), ("shmSize", ".4e5670145909305020005505")])
def test_a_quantity_the_operator_cannot_read_is_an_invalid_spec_naming_the_field(field, text):
    job = api.HunyuanFineTune.model_validate(cpu_job())
    setattr(job.spec, field, text)  # past the pattern, as an older CRD's would let it
    with pytest.raises(builders.InvalidSpec, match=rf"spec\.{field}: {re.escape(repr(text))} is not a quantity"):
        builders.check(job)
