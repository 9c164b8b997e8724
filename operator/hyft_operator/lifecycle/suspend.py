"""runPolicy.suspend: the pods are deleted (the trainer saves a checkpoint on SIGTERM) and the job
waits; clearing it recreates the gang as the same attempt (create.py says Resumed)."""
from __future__ import annotations

from ..status import NodeCounts, Reason
from .gang import Gang


def apply(gang: Gang) -> bool:
    if not gang.spec.runPolicy.suspend:
        return False
    gang.delete(gang.current)
    gang.resize(None)  # resumed at spec.nodes
    gang.st.nodes = NodeCounts(total=gang.total)
    gang.transition("Suspended", Reason.SUSPENDED,
                    "suspended: pods deleted (checkpoint saved on SIGTERM); set spec.runPolicy.suspend to false "
                    "to resume")
    return True
