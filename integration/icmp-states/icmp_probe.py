#!/usr/bin/env python3
"""icmp_probe.py list | listen | send ROUND DST4 DST6 - one ICMP message of each kind the kernel's
conntrack tells apart (PROBES), for test_icmp_states.sh.

list: prints each probe as "NUMBER FAMILY TYPE CODE".
listen: prints "ready", then "ROUND:NUMBER" for each probe that reaches this namespace's raw ICMP and
ICMPv6 sockets (what the firewall delivered to the host), until it is ended.
send: sends every probe to DST4 or DST6, each marked with ROUND and its number; a query carries an
identifier of the round's own, so that no round's probe meets the conntrack entry of another's.
"""
import re
import select
import socket
import struct
import sys

PROBES = [  # (family, type, code): what the kernel's conntrack makes of it with no connection before
    (4, 8, 0),  # echo request: new
    (4, 0, 0),  # echo reply: invalid (no request was seen)
    (4, 13, 0),  # timestamp request: new
    (4, 9, 0),  # router advertisement: invalid (no query type)
    (4, 3, 3),  # port unreachable about a packet the host never sent: invalid
    (6, 128, 0),  # echo request: new
    (6, 129, 0),  # echo reply: invalid
    (6, 133, 0),  # router solicitation: untracked
    (6, 135, 0),  # neighbour solicitation: untracked
    (6, 136, 0),  # neighbour advertisement: untracked
    (6, 130, 0),  # multicast listener query: untracked
    (6, 137, 0),  # redirect: invalid
    (6, 1, 4),  # port unreachable about a packet the host never sent: invalid
]
MARKER = re.compile(rb"fwe-icmp-probe:(\d+):(\d+);")


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def quoted_udp(family, src, dst, marker):
    """The start of a UDP packet from src to dst, as an ICMP error quotes it."""
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(marker), 0) + marker
    if family == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_pton(socket.AF_INET, src), socket.inet_pton(socket.AF_INET, dst))
        return ip + udp
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + udp


def body(family, icmp_type, identifier, marker, source, destination):
    """What follows an ICMP header's first four bytes."""
    zeros16 = bytes(16)
    if (family, icmp_type) in ((4, 8), (4, 0), (6, 128), (6, 129)):
        return struct.pack("!HH", identifier, 1) + marker
    if (family, icmp_type) == (4, 13):
        return struct.pack("!HHIII", identifier, 1, 0, 0, 0) + marker
    if (family, icmp_type) == (4, 9):
        return struct.pack("!BBH", 0, 2, 1800) + marker
    if icmp_type in (3, 1):  # the error quotes a packet from the host to the sender
        return bytes(4) + quoted_udp(family, destination, source, marker)
    if icmp_type in (135, 136):
        return bytes(4) + socket.inet_pton(socket.AF_INET6, destination) + marker
    if icmp_type == 130:
        return bytes(4) + zeros16 + marker
    if icmp_type == 137:
        return bytes(4) + socket.inet_pton(socket.AF_INET6, destination) + zeros16 + marker
    return bytes(4) + marker


def send(round_number, dst4, dst6):
    sockets = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
               6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)}
    for number, (family, icmp_type, code) in enumerate(PROBES):
        destination = dst4 if family == 4 else dst6
        sockets[family].connect((destination, 0))
        source = sockets[family].getsockname()[0]
        marker = b"fwe-icmp-probe:%d:%d;" % (round_number, number)
        rest = body(family, icmp_type, 1000 * round_number + number, marker, source, destination)
        message = struct.pack("!BBH", icmp_type, code, 0) + rest
        if family == 4:  # the kernel computes ICMPv6's checksum itself
            message = struct.pack("!BBH", icmp_type, code, checksum(message)) + rest
        sockets[family].send(message)


def listen():
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
               socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)]
    print("ready", flush=True)
    seen = set()
    while True:
        for sock in select.select(sockets, [], [])[0]:
            found = MARKER.search(sock.recv(65535))
            if found and found.groups() not in seen:
                seen.add(found.groups())
                print(f"{int(found[1])}:{int(found[2])}", flush=True)


def main():
    if sys.argv[1:2] == ["list"]:
        for number, (family, icmp_type, code) in enumerate(PROBES):
            print(number, family, icmp_type, code)
    elif sys.argv[1:2] == ["listen"]:
        listen()
    elif sys.argv[1:2] == ["send"] and len(sys.argv) == 5:
        send(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


main()
