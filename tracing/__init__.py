"""tracing: watch each fd transfer from the kernel side, live, with bcc.

See tracing/README.md. ``Session`` (tracing.session) is the Python API;
``rawsys-trace`` (tracing.cli) the command line.
"""
