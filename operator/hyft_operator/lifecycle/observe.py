"""What the lifecycle knows about one pod, read from the API object."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..builders import CONTAINER, LABEL_ATTEMPT, LABEL_RANK


@dataclass(frozen=True)
class PodView:
    name: str
    rank: int
    attempt: int
    phase: str = "Pending"
    uid: str = ""  # deletes carry it as a precondition: pod names repeat across attempts
    ready: bool = False
    deleting: bool = False
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    unschedulable: str = ""
    unschedulable_since: float | None = None  # when the scheduler first said so (unix time)
    scheduled: bool = False
    started_at: float | None = None  # when its trainer container started running (unix time)
    disrupted: str = ""  # its DisruptionTarget condition: "<reason>: <message>" (preempted, evicted, drained)

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting


def _unix(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pod_view(pod: dict[str, Any]) -> PodView:
    meta, status = pod.get("metadata", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    terminated, running = {}, {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            running = (cs.get("state") or {}).get("running") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    unschedulable = scheduled.get("message", "") if scheduled.get("reason") == "Unschedulable" else ""
    since = scheduled.get("lastTransitionTime") if unschedulable else None
    started = running.get("startedAt")
    disruption = conditions.get("DisruptionTarget", {})
    return PodView(
        name=meta["name"],
        uid=meta.get("uid", ""),
        rank=int(labels.get(LABEL_RANK, -1)),
        attempt=int(labels.get(LABEL_ATTEMPT, -1)),
        phase=status.get("phase") or "Pending",
        ready=conditions.get("Ready", {}).get("status") == "True",
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason") or "",
        message=(terminated.get("message") or status.get("message") or "").strip()[-500:],
        unschedulable=unschedulable,
        unschedulable_since=_unix(since) if since else None,
        scheduled=bool((pod.get("spec") or {}).get("nodeName")) or scheduled.get("status") == "True",
        started_at=_unix(started) if started else None,
        disrupted=(f"{disruption.get('reason', '')}: {disruption.get('message', '')}".strip(": ")
                   if disruption.get("status") == "True" else ""),
    )
