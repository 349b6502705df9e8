"""Workflows: deterministic orchestration only; all I/O lives in activities."""

from workflows.email_routing import EmailRoutingWorkflow

WORKFLOWS: list[type] = [EmailRoutingWorkflow]

__all__ = ["WORKFLOWS", "EmailRoutingWorkflow"]
