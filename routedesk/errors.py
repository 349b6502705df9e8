"""The refusals an operation answers with: one line a person can act on, and the HTTP status
the API maps it to. Kept apart from routedesk.operations so that the read-only views
(routedesk.views) and the CLI's error handling need nothing heavier than this module."""

from __future__ import annotations


class OperationError(Exception):
    """A request the operation refuses, with one line the person can act on."""

    status = 400


class NotFound(OperationError):
    status = 404


class Invalid(OperationError):
    """Wrong input: an unknown filter value, a malformed argument."""

    status = 422


class Refused(OperationError):
    """The workflow or the store refused (no live offer, already assigned, ...)."""

    status = 409
