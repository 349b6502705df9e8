"""Workflows: deterministic orchestration only; all I/O lives in activities."""

from workflows.email_routing import EmailRoutingWorkflow
from workflows.queue_dispatcher import QueueDispatcherWorkflow

WORKFLOWS: list[type] = [EmailRoutingWorkflow, QueueDispatcherWorkflow]

__all__ = ["WORKFLOWS", "EmailRoutingWorkflow", "QueueDispatcherWorkflow"]
