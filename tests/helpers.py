"""Helpers shared by the test tiers."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load_example(path: Path, namespace: str = "default", uid: str = "uid-0000") -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["metadata"].setdefault("namespace", namespace)
    doc["metadata"].setdefault("uid", uid)
    return doc


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
