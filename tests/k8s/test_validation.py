"""The API server's half of the one invalid table (tests/invalid_specs.py), and a fuzz of
generated invalid resources against the real API server with the operator running: every
resource gets its verdict, once, and never a pod, a silent loop or a traceback."""
from __future__ import annotations

import collections
import json
import logging
import random

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from hyft_operator import api, builders
from hyft_trainer.problems import describe
from tests.helpers import wait_for
from tests.invalid_specs import CASES
from tests.jobs import cpu_job, create, get, pods

API_CASES = [c for c in CASES if c.verdict == "api"]
OPERATOR_CASES = [c for c in CASES if c.verdict != "api"]


def _refusal(api_client, namespace, body) -> str:
    with pytest.raises(ApiException) as err:
        create(api_client, namespace, body)
    assert err.value.status == 422, err.value.body
    return json.loads(err.value.body)["message"]


def _invalid_verdict(api_client, namespace, name):
    status = get(api_client, namespace, name).get("status") or {}
    failed = next((c for c in status.get("conditions", []) if c["type"] == "Failed"), None)
    if status.get("phase") == "Failed" and failed and failed["reason"] == "InvalidSpec":
        return status
    return None


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_server_refuses_each_invalid_case_naming_the_field(crds, api_client, namespace, case):
    body = cpu_job("invalid")
    case.mutate(body)
    assert case.field in _refusal(api_client, namespace, body)


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=[c.id for c in OPERATOR_CASES])
def test_operator_fails_what_only_it_can_see_once_without_pods(api_client, op_namespace, case):
    body = cpu_job("invalid")
    case.mutate(body)
    create(api_client, op_namespace, body)
    status = wait_for(lambda: _invalid_verdict(api_client, op_namespace, "invalid"), what="InvalidSpec")
    assert case.field in status["message"], status["message"]
    assert not pods(api_client, op_namespace, "invalid")
    events = client.CoreV1Api(api_client).list_namespaced_event(
        op_namespace, field_selector="involvedObject.name=invalid,reason=InvalidSpec").items
    assert len(events) == 1


# ------------------------------------------------------------------ fuzz
def _valid_variant(rng: random.Random, index: int) -> dict:
    """A valid job that differs from the others in fields no invalid case touches."""
    middle = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-", k=rng.randint(0, 30)))
    body = cpu_job(f"fuzz-{index}-{middle}x")
    spec = body["spec"]
    spec["training"].update(learningRate=rng.choice([1e-5, 2e-4, 0.5]), loggingSteps=rng.randint(1, 100),
                            maxSteps=rng.choice([None, 10, 10**6]), seed=rng.randint(0, 2**32 - 1))
    spec["data"]["cutoffLen"] = rng.choice([16, 512, 8192])
    spec["method"] = {"type": "lora", "lora": {"rank": rng.randint(1, 64)}}
    spec["runPolicy"] = {"backoffLimit": rng.randint(0, 5), "activeDeadlineSeconds": rng.choice([None, 3600])}
    spec["masterPort"] = rng.randint(20000, 29999)
    spec["image"] = rng.choice(["hyft-trainer:dev", "registry.example:5000/ml/hyft-trainer:0.1.0",
                                "hyft-trainer@sha256:" + "a" * 64])
    spec["env"] = [{"name": rng.choice(["HF_HOME", "my.setting", "NCCL_DEBUG"]), "value": "1"}]
    spec["scheduling"]["nodeSelector"] = {"example.com/pool": rng.choice(["a", "gpu-1", "A_b.c"])}
    return body


def _fuzz_cases(count: int, seed: int = 7) -> list[tuple[dict, list]]:
    """Every case on several valid variants, and random pairs of cases on one."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        index = len(out)
        body = _valid_variant(rng, index)
        api.HunyuanFineTune.model_validate(body)  # the variant alone is valid
        cases = [CASES[index % len(CASES)]] if index < 3 * len(CASES) else rng.sample(CASES, 2)
        for case in cases:
            case.mutate(body)
        out.append((body, cases))
    return out


def _python_verdict(body) -> tuple[str, list[str]]:
    """What `hyft render` says: refused by the models ("api", the fields), by the trainer-config
    check ("operator"), or accepted ("pod": only the API server's pod validation can tell)."""
    try:
        job = api.HunyuanFineTune.model_validate(body)
    except ValidationError as err:
        return "api", [line.split(": ")[0] for line in describe(err)]
    try:
        builders.check(job)
    except builders.InvalidSpec as err:
        return "operator", [str(err).split(": ")[0]]
    return "pod", []


@pytest.fixture
def operator_log():
    """Log records of the in-process operator that carry a traceback or an error."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.exc_info or record.levelno >= logging.ERROR:
                records.append(record)

    handler = Keep()
    logging.getLogger().addHandler(handler)
    yield records
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def reconciled(monkeypatch):
    """How many reconciles of each (namespace, name) the in-process operator has finished."""
    from hyft_operator.reconciler import Reconciler

    done: collections.Counter = collections.Counter()
    original = Reconciler.reconcile

    def counted(self, namespace, name, *args, **kwargs):
        try:
            return original(self, namespace, name, *args, **kwargs)
        finally:
            done[(namespace, name)] += 1

    monkeypatch.setattr(Reconciler, "reconcile", counted)
    return done


def test_fuzz_every_invalid_resource_gets_one_verdict(api_client, op_namespace, operator_log, reconciled):
    fuzz = _fuzz_cases(3 * len(CASES) + 40)
    assert len(fuzz) >= 200
    accepted = {}
    for body, cases in fuzz:
        verdict, fields = _python_verdict(body)
        if verdict == "api":  # the API server agrees with `hyft render`, naming one of its fields
            message = _refusal(api_client, op_namespace, body)
            assert any(f in message for f in fields), (fields, message)
            continue
        if verdict == "pod":  # a later case repaired what an earlier one broke, but not the pod's object
            fields = [c.field for c in cases if c.verdict == "pod"]
            if not fields:  # ... or the pair undid itself (one override replacing the other): a valid resource
                assert len(cases) == 2, [c.id for c in cases]
                continue
        accepted[create(api_client, op_namespace, body)["metadata"]["name"]] = fields

    def all_judged():
        waiting = [n for n in accepted if not _invalid_verdict(api_client, op_namespace, n)]
        return not waiting or None

    wait_for(all_judged, timeout=120, what=f"InvalidSpec for {len(accepted)} accepted invalid resources")
    for name, fields in accepted.items():
        message = get(api_client, op_namespace, name)["status"]["message"]
        assert any(f in message for f in fields), (name, fields, message)
    core = client.CoreV1Api(api_client)
    assert not core.list_namespaced_pod(op_namespace).items  # no pods for invalid specs, not even briefly kept

    # once: nothing is rewritten while nothing changes, through two more reconciles of each
    versions = {n: get(api_client, op_namespace, n)["metadata"]["resourceVersion"] for n in accepted}
    start = {n: reconciled[(op_namespace, n)] for n in accepted}
    wait_for(lambda: all(reconciled[(op_namespace, n)] >= start[n] + 2 for n in accepted) or None, timeout=120,
             what="two more reconciles of every judged resource")
    assert versions == {n: get(api_client, op_namespace, n)["metadata"]["resourceVersion"] for n in accepted}
    events = core.list_namespaced_event(op_namespace, field_selector="reason=InvalidSpec").items
    assert sorted(e.involved_object.name for e in events) == sorted(accepted)
    assert not [r.getMessage() for r in operator_log]


def test_edge_of_every_bound_is_accepted_and_runs(crds, api_client, op_namespace):
    """The bounds are not tighter than they must be: the longest name, images with a registry port
    and a digest, dotted env names, a node-selector with a prefix."""
    name = "a" * api.MAX_NAME_LENGTH
    body = cpu_job(name, image="registry.example:5000/ml/hyft-trainer@sha256:" + "0" * 64,
                   env=[{"name": "my.setting", "value": "1"}])
    body["spec"]["scheduling"]["nodeSelector"] = {"hyft.io/pool": "cpu_1.a"}  # unschedulable here, still created
    create(api_client, op_namespace, body)
    found = wait_for(lambda: (p := pods(api_client, op_namespace, name)) and len(p) == 2 and p, what="2 pods")
    assert max(len(p.spec.hostname) for p in found) == len(name) + len("-worker-0")
    assert client.CoreV1Api(api_client).read_namespaced_service(name, op_namespace)



@pytest.mark.parametrize("engine", ["deepspeed", "fsdp"])
def test_a_resource_written_by_hyft_recipe_is_accepted_by_the_api_server(crds, api_client, namespace, tmp_path,
                                                                         engine):
    """kubectl apply --dry-run=server of the guide recipe's resource (its DeepSpeed JSON, or its fsdp keys), its
    claims filled in."""
    import yaml

    from hyft_operator.recipe import FILL_IN, from_llamafactory
    from tests.llamafactory_corpus import DS_Z3_FP16, GUIDE_RECIPE, GUIDE_RECIPE_FSDP

    (tmp_path / "ds.json").write_text(json.dumps(DS_Z3_FP16))
    recipe = yaml.safe_load((GUIDE_RECIPE if engine == "deepspeed" else GUIDE_RECIPE_FSDP).format(
        model="/models/Hunyuan-1.8B-Instruct", dataset_dir="/data/lf", deepspeed="ds.json", output="saves/run"))
    body, _ = from_llamafactory(recipe, "from-recipe", nodes=2, base=tmp_path)
    for volume in body["spec"]["volumes"]:
        assert volume["persistentVolumeClaim"]["claimName"] == FILL_IN
        volume["persistentVolumeClaim"]["claimName"] = f"claim-{volume['name']}"
    accepted = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, body, dry_run="All")
    assert accepted["spec"]["training"]["arguments"]["optim"] == "adamw_torch"
    assert accepted["spec"]["training"]["engine"] == engine
