"""pi-check: edge-fer's device path on the Raspberry Pi OS software stack under qemu, compared with x86.

Split by concern: ``common`` (paths, the target stack, progress lines), ``root`` (tools and the cached
aarch64 root), ``runner`` (processes on each side), ``checks`` (each check and the comparisons),
``verdict`` (the printed summary) and ``cli`` (arguments and the order of the checks). ``probe.py``
is not imported here: it runs as a script inside the emulated root, with only the device stack.
"""
