"""Workflows: deterministic orchestration only; all I/O lives in activities."""

from workflows.email_routing import EmailRoutingWorkflow
from workflows.queue_dispatcher import QueueDispatcherWorkflow
from workflows.replies import SendReplyWorkflow

WORKFLOWS: list[type] = [EmailRoutingWorkflow, QueueDispatcherWorkflow, SendReplyWorkflow]

__all__ = ["WORKFLOWS", "EmailRoutingWorkflow", "QueueDispatcherWorkflow", "SendReplyWorkflow"]
