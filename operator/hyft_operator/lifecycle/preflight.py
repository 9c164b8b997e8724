"""PreflightPassed: True once the master trainer reports that every rank passed (from the scrape),
False with the check's reason when a pod exits with a preflight code (failure.py), Unknown while a
new gang has not reported yet."""
from __future__ import annotations

from ..status import ConditionType, Reason
from .conditions import set_condition
from .gang import Gang


def condition(gang: Gang) -> None:
    st = gang.st
    before = next((c for c in st.conditions if c.type == ConditionType.PREFLIGHT_PASSED), None)
    scrape = gang.current_scrape()
    if scrape and scrape.preflight_seconds is not None:
        message = (f"attempt {st.attempt}: every rank passed in {scrape.preflight_seconds:.1f}s (/dev/shm, output "
                   "volume writable, shared and with room for a checkpoint, master reachable, an all-reduce "
                   "across all ranks)")
        set_condition(st.conditions, ConditionType.PREFLIGHT_PASSED, "True", Reason.PASSED, message, gang.now,
                      st.observedGeneration)
    elif gang.watching and st.phase in ("Pending", "Running", "Restarting") and (
            before is None or before.status == "True" and st.attempt != gang.old.attempt):
        set_condition(st.conditions, ConditionType.PREFLIGHT_PASSED, "Unknown", Reason.CHECKING,
                      f"attempt {st.attempt}: the master trainer has not reported a passed preflight yet",
                      gang.now, st.observedGeneration)
