"""Mandatory reports (NCMEC CyberTipline; UK NCA exports in ``nca``): pure model and XML here,
HTTP client in ``ncmec``, durable state and the reporter in :mod:`bastion.store.reports`."""

from bastion.reports.model import (
    CLASSIFICATIONS,
    INCIDENT_TYPES,
    IpCaptureEvent,
    ReportContent,
    ReportedUser,
    ReporterInfo,
    ReportFile,
    ReportInputError,
    State,
)

__all__ = [
    "CLASSIFICATIONS",
    "INCIDENT_TYPES",
    "IpCaptureEvent",
    "ReportContent",
    "ReportFile",
    "ReportInputError",
    "ReportedUser",
    "ReporterInfo",
    "State",
]
