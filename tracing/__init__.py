"""rawsys.trace: watch each fd transfer from the kernel side, live, with bcc.

The repository keeps it in its own top-level folder, ``tracing/``; it is
installed as ``rawsys.trace``.  ``Session`` (``rawsys.trace.session``) is the
Python API; ``rawsys-trace`` (``rawsys.trace.cli``) the command line.
"""
