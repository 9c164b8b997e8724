"""runPolicy.memoryCheck: the MemoryRisk condition (Warn, the default) from the estimate of what
each pod holds, and with Enforce a job whose pods would not hold it never starts."""
from __future__ import annotations

from ..status import ConditionType, Reason
from .conditions import set_condition
from .gang import Event, Gang


def refuse(gang: Gang) -> bool:
    """Enforce: fail a job that has not started yet and is at risk."""
    if gang.spec.runPolicy.memoryCheck != "Enforce" or gang.st.startTime or gang.current:
        return False
    check = gang.memory
    if check is None or not check.at_risk:
        return False
    gang.finish("Failed", Reason.MEMORY_RISK, f"not started: {check.message} (runPolicy.memoryCheck: Enforce)",
                "Warning")
    return True


def condition(gang: Gang) -> None:
    if gang.spec.runPolicy.memoryCheck == "Off":
        return
    check = gang.memory
    if check is None:
        status, reason = "Unknown", Reason.MODEL_SIZE_UNKNOWN
        message = "the model's size is neither in spec.model.parameters nor in its path's name"
    else:
        status, reason = ("True", Reason.NEEDS_MORE_MEMORY) if check.at_risk else ("False", Reason.FITS)
        message = check.message
    before = next((c.status for c in gang.st.conditions if c.type == ConditionType.MEMORY_RISK), None)
    if status == "True" and before != "True" and gang.st.phase != "Failed":
        gang.plan.events.append(Event("Warning", Reason.MEMORY_RISK, message))
    set_condition(gang.st.conditions, ConditionType.MEMORY_RISK, status, reason, message, gang.now,
                  gang.st.observedGeneration)
