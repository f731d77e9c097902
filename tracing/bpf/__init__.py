"""The programs that run in the kernel: BPF C (``*.bpf.c``, ``*.bpf.h``) and their rendering.

:mod:`.program` puts a backend's program together from its C sources and
the prelude :mod:`.prelude` generates (``#define``s, structs, filters).
"""
