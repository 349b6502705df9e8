"""The ``intake`` config section as stored in the case store, for activities to read."""

from __future__ import annotations

from collections.abc import Mapping

from sqlmodel import Session

from routedesk.config import IntakeSettings
from routedesk.models import SettingRow


def intake_settings(s: Session) -> IntakeSettings:
    """The loaded config's ``intake`` section; defaults when none was loaded yet."""
    row = s.get(SettingRow, "intake")
    return IntakeSettings.model_validate(row.value) if row is not None else IntakeSettings()


def content_type_of(headers: Mapping[str, str]) -> str:
    """Top-level content type from stored (lowercased-name) headers; RFC 2045 default."""
    value = headers.get("content-type", "")
    ctype = value.split(";", 1)[0].strip().lower()
    return ctype if "/" in ctype else "text/plain"
