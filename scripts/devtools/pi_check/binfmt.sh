#!/bin/sh
# binfmt.sh QEMU COMMAND...: run COMMAND (an aarch64 program) where aarch64 programs it starts run too.
#
# pi-check calls this inside `unshare --user --map-root-user --mount`: the new user namespace gets its
# own binfmt_misc (Linux 6.7 and later), where qemu is registered for aarch64 ELF files with the F flag
# (the kernel opens QEMU now, so it need not be visible later). Nothing outside the namespace changes.
# qemu finds the root in QEMU_LD_PREFIX and the CPU model in QEMU_CPU, which children inherit.
set -e
qemu=$1
shift
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu"':F' \
    > /proc/sys/fs/binfmt_misc/register
exec "$@"
