"""Subcommands of the ``isr`` CLI (one module each; see isr_metric.cli)."""
