"""Judge families. Each module imports its heavy backend only when a judge is created."""
from .base import CallableJudge, Judge, threshold_decision, verdict_from_scores

__all__ = ["Judge", "CallableJudge", "threshold_decision", "verdict_from_scores"]
