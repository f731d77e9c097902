"""What the running kernel is: its BTF (:mod:`.btf`), the facts the probes read (:mod:`.facts`)."""
