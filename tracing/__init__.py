"""rawsys.trace: watch each fd transfer from the kernel side, live, with bcc.

The repository keeps it in its own top-level folder, ``tracing/``; it is
installed as ``rawsys.trace``.  The parts, from the user inwards:

* ``cli.py``, ``cli_admin.py`` -- the ``rawsys-trace`` command, its
  ``doctor`` and ``setup`` subcommands;
* ``session.py`` -- :class:`~rawsys.trace.session.Session`, the Python API:
  load the probes, read events, detach;
* ``events.py`` -- the events the probes write and their decoding;
  ``matcher.py`` -- linking each send to its receive;
* ``bpf/`` -- the programs that run in the kernel, and their rendering;
* ``kernel/`` -- the running kernel's BTF and the facts the probes read;
* ``doctor/`` -- what this kernel allows, and which backend to use;
* ``system/`` -- this machine: the distribution's bcc, kernel headers,
  ``rawsys-trace setup``, the cache.
"""
