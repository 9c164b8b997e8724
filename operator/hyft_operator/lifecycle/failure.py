"""Failures and backoff. Any pod failing (or vanishing once the gang ran) restarts the WHOLE gang as
attempt+1 (an all-reduce job cannot take one new member) while restarts < runPolicy.backoffLimit,
unless the failure is permanent:

  * exit codes in runPolicy.permanentExitCodes (default 2: invalid config or data; the permanent
    preflight codes 4 and 5; 126/127: command not runnable) -> Failed at once;
  * any other exit code (signals 128+N: 137 SIGKILL/OOM-kill, 143 SIGTERM; 1: torchrun's failed
    worker, e.g. an NCCL timeout), OOMKilled, and pod failures with no exit code (Evicted, node lost,
    deleted) -> gang restart;
  * a master that stopped early on SIGTERM with a checkpoint, or a pod with a DisruptionTarget
    condition (preempted, evicted, drained) -> gang restart from the checkpoint, a disruption: not
    counted against backoffLimit (status.disruptions counts them).
"""
from __future__ import annotations

import posixpath
import signal

from hyft_trainer.contract import EXIT_MEANINGS, STOPPED_EARLY, log_file

from ..builders import pod_name
from ..status import ConditionType, FailureInfo, NodeCounts, Reason
from .conditions import set_condition
from .gang import STALE_REQUEUE, Gang
from .observe import PodView


def describe_exit(code: int | None, reason: str) -> str:
    if code is None:
        return reason or "failed"
    text = f"exit code {code}"
    if code in EXIT_MEANINGS:
        text += f" ({EXIT_MEANINGS[code].text})"
    if code > 128:
        try:
            text += f" ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    if reason and reason not in ("Error", "Completed"):
        text += f", {reason}"
    return text


def classify(pod: PodView, permanent_exit_codes: list[int]) -> FailureInfo:
    retryable = pod.exit_code is None or pod.exit_code not in permanent_exit_codes
    return FailureInfo(pod=pod.name, exitCode=pod.exit_code, reason=pod.reason, message=pod.message,
                       retryable=retryable)


def first_failure(gang: Gang) -> FailureInfo | None:
    for p in gang.current:
        if p.disrupted:  # the eviction deletes it: seen while it terminates, or as the reason it went
            return FailureInfo(pod=p.name, exitCode=p.exit_code, reason=Reason.DISRUPTED, message=p.disrupted,
                               retryable=True)
    for p in gang.current:
        if p.phase == "Failed" and not p.deleting:  # pods we deleted (suspend) fail on SIGTERM
            return classify(p, gang.spec.runPolicy.permanentExitCodes)
        if p.phase == "Succeeded" and p.message.startswith(STOPPED_EARLY) and not p.deleting:
            return FailureInfo(pod=p.name, exitCode=0, reason=Reason.DISRUPTED, message=p.message, retryable=True)
    if gang.old.phase == "Running":  # once the whole gang ran, a missing pod was deleted, preempted or lost
        present = {p.rank for p in gang.current}
        lost = [r for r in range(gang.total) if r not in present]
        if lost:
            return FailureInfo(pod=pod_name(gang.job.metadata["name"], lost[0]), reason=Reason.POD_DELETED,
                               message="the pod disappeared (deleted, preempted or its node was lost)",
                               retryable=True)
    return None


def apply(gang: Gang) -> bool:
    """Handle the first failed or vanished pod of the current gang; True if one was found."""
    failure = first_failure(gang)
    if failure is None:
        return False
    what = f"pod {failure.pod} failed ({describe_exit(failure.exitCode, failure.reason)})"
    if failure.message:
        what += f": {failure.message.splitlines()[-1][:200]}"
    if (meaning := EXIT_MEANINGS.get(failure.exitCode)) and meaning.preflight_reason:
        set_condition(gang.st.conditions, ConditionType.PREFLIGHT_PASSED, "False", meaning.preflight_reason,
                      f"attempt {gang.st.attempt}: {what}", gang.now, gang.st.observedGeneration)
    restart_or_fail(gang, failure, what)
    return True


def restart_or_fail(gang: Gang, failure: FailureInfo, what: str, restart_reason: str = Reason.GANG_RESTART) -> None:
    st = gang.st
    st.lastFailure = failure
    output = gang.spec.output  # the pod's log outlives it there (the trainer's launcher writes it)
    what += f"; its log: {posixpath.join(output.path, log_file(st.attempt, failure.pod))} on volume {output.volume}"
    limit = gang.spec.runPolicy.backoffLimit
    gang.delete(gang.current, only_active=True)
    if not failure.retryable:
        gang.finish("Failed", Reason.PERMANENT_ERROR, f"{what}; exit code {failure.exitCode} is permanent "
                    "(runPolicy.permanentExitCodes), not restarting", "Warning")
    elif st.restarts >= limit and failure.reason != Reason.DISRUPTED:
        gang.finish("Failed", Reason.BACKOFF_LIMIT_EXCEEDED,
                    f"{what}; backoff limit {limit} reached after {st.restarts} gang restarts", "Warning")
    else:
        gang.delete(gang.current)
        st.attempt += 1
        gang.resize(None)  # a shrunk gang (runPolicy.resize) tries its full size again
        st.nodes = NodeCounts(total=gang.total)
        if failure.reason == Reason.DISRUPTED:
            st.disruptions += 1
            gang.transition("Restarting", Reason.DISRUPTED,
                            f"{what}; a disruption, not counted against the backoff limit: restarting all "
                            f"{gang.total} pods as attempt {st.attempt}, resuming from the last checkpoint", "Normal")
        else:
            st.restarts += 1
            gang.transition("Restarting", restart_reason,
                            f"{what}; restarting all {gang.total} pods as attempt {st.attempt} "
                            f"(restart {st.restarts}/{limit}), resuming from the last checkpoint", "Warning")
        gang.plan.requeue_after = STALE_REQUEUE
