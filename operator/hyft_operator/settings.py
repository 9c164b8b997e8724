"""The operator's own settings: one typed model, read once at start-up from HYFT_<NAME>
variables (the chart sets them from values.yaml; tests/k8s/test_chart.py holds the two together)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hyft_trainer.contract import VERSION
from hyft_trainer.problems import describe

PREFIX = "HYFT_"


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer_image: str = Field(f"ghcr.io/hyft-io/hyft-trainer:{VERSION}", min_length=1,
                               description="Trainer image for resources that name none (spec.image).")
    trainer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Its pull policy, unless spec.imagePullPolicy says otherwise.")
    metrics_port: int = Field(0, ge=0, le=65535, description="The operator's own Prometheus port (0: off).")
    resync_seconds: float = Field(10.0, gt=0, le=3600, description="Longest wait between two reconciles of a job.")
    reconcile_workers: int = Field(32, ge=1, le=1024, description="Reconciles running at once (threads).")
    scrape_progress: bool = Field(True, description="Read each master trainer's metrics into the status.")
    # Each status write costs the API server a validation of the whole resource and every watcher a copy;
    # training progress alone goes out at most this often (the trainer's metrics have every step).
    progress_seconds: float = Field(30.0, ge=0, le=3600,
                                    description="Least time between two status writes that only carry progress.")
    peering_lifetime: int = Field(60, ge=1, le=3600,
                                  description="Seconds after which a standby replica replaces a dead active one.")

    @classmethod
    def env_name(cls, field: str) -> str:
        return PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OperatorSettings:
        """The settings the environment gives; a bad value stops the operator naming the variable."""
        values = {name: environ[cls.env_name(name)] for name in cls.model_fields if cls.env_name(name) in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise SystemExit("hyft operator settings: " + "; ".join(
                cls.env_name(line) for line in describe(err))) from None
