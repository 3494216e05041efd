"""Judge families. Each module imports its heavy backend only when a judge is created."""
from .base import CallableJudge, Judge, verdict_from_scores

__all__ = ["Judge", "CallableJudge", "verdict_from_scores"]
