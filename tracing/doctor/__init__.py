"""``rawsys-trace doctor``: what this kernel lets the tracer do, and which backend it uses."""

from rawsys.trace.doctor.checks import (
    BACKEND_PREFERENCE,
    Capabilities,
    Check,
    choose_backend,
    format_report,
    probe_capabilities,
)

__all__ = [
    "BACKEND_PREFERENCE",
    "Capabilities",
    "Check",
    "choose_backend",
    "format_report",
    "probe_capabilities",
]
