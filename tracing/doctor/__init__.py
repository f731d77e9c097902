"""``rawsys-trace doctor``: what this kernel lets the tracer do, and which backend it uses.

* :mod:`.bpfcalls` -- raw ``bpf(2)``/``perf_event_open(2)``: load a trivial
  program and try to attach it, as each backend would;
* :mod:`.checks` -- the checks, one row each (:func:`probe_capabilities`);
* :mod:`.choice` -- the backend: the first that attaches, kept per boot;
* :mod:`.report` -- the table (or JSON) ``rawsys-trace doctor`` prints.
"""

from rawsys.trace.doctor.checks import Capabilities, Check, probe_capabilities
from rawsys.trace.doctor.choice import BACKEND_PREFERENCE, cached_choice, choose_backend
from rawsys.trace.doctor.report import format_report, report_json

__all__ = [
    "BACKEND_PREFERENCE",
    "Capabilities",
    "Check",
    "cached_choice",
    "choose_backend",
    "format_report",
    "probe_capabilities",
    "report_json",
]
