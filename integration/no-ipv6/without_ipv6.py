#!/usr/bin/env python3
"""without_ipv6.py COMMAND [ARG...] - runs COMMAND as on a kernel booted with ipv6.disable=1.

Such a kernel never registers the IPv6 socket family: socket(AF_INET6, ...) fails with EAFNOSUPPORT,
which is how ip6tables ("can't initialize ip6tables table `filter': Address family not supported by
protocol") and fwengine see it. A seccomp filter gives COMMAND and every process it starts that answer,
so the test needs no reboot. Exit 77 where seccomp filters cannot be set.
"""
import ctypes
import errno
import os
import platform
import struct
import sys

# Per machine: (AUDIT_ARCH_*, the socket syscall's number).
ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
AF_INET6 = 10
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K.
LOAD, JEQ, RET = 0x20, 0x15, 0x06
# struct seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low half on a little-endian machine).
NR, ARCH, ARG0 = 0, 4, 16


def program(arch, socket_nr):
    # A syscall of another ABI, any other syscall, any other family: allowed.
    code = [
        (LOAD, 0, 0, ARCH),
        (JEQ, 0, 5, arch),
        (LOAD, 0, 0, NR),
        (JEQ, 0, 3, socket_nr),
        (LOAD, 0, 0, ARG0),
        (JEQ, 0, 1, AF_INET6),
        (RET, 0, 0, SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
        (RET, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in code)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.byteorder != "little" or platform.machine() not in ARCHES:
        print(f"skipped: no seccomp filter for {platform.machine()}")
        sys.exit(77)
    filter_code = program(*ARCHES[platform.machine()])
    buffer = ctypes.create_string_buffer(filter_code, len(filter_code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(filter_code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0 or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0
    ) != 0:
        print(f"skipped: cannot set a seccomp filter: {os.strerror(ctypes.get_errno())}")
        sys.exit(77)
    os.execvp(sys.argv[1], sys.argv[1:])


main()
