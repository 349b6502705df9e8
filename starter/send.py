"""Starting routing workflows from Python: the entry point integrations call.

The operations live in :mod:`routedesk.operations` (used by the CLI and every intake
channel); this module keeps the documented names importable from ``starter.send``.
"""

from __future__ import annotations

from routedesk.operations import Submission, reprocess_email, submit_email, wait_for_case

__all__ = ["Submission", "reprocess_email", "submit_email", "wait_for_case"]
