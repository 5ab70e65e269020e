"""Mandatory reports (NCMEC CyberTipline; UK NCA exports in ``nca``): pure model and XML here,
HTTP client in ``ncmec``, durable state in :mod:`bastion.reports.store` (tables in ``rows``),
the CyberTipline reporter in :mod:`bastion.reports.reporter`."""

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
