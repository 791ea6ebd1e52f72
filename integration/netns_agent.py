#!/usr/bin/env python3
"""One agent per test namespace: it answers on the scenario's ports and sends the probes.

Started by scenario.py with `ip netns exec <ns> python3 netns_agent.py`, so every socket it opens lives in
that namespace. It speaks JSON lines on stdin/stdout:

  {"op": "listen", "id": 1, "tcp": [22, 80], "udp": [53], "addresses": ["10.0.0.10", "::1"]}
  {"op": "probe", "id": 2, "proto": "tcp", "dst": "10.0.0.10", "port": 80, "src": null, "timeout": 1.0}

(proto: tcp | udp | icmp | tcp-invalid; optional "sport": the source port to bind) and answers each
request with {"id": N, ...}; a probe's answer is {"id": N, "result": "open" | "closed" | "error",
"detail": why}. Why a probe was closed: "timeout", "refused" (a TCP RST), "icmp T/C" or "icmp6 T/C" (the
ICMP error that came back, with type and code) or a socket error. An open TCP probe's detail is
"connected from ADDRESS": the source address the listener saw (changed by SNAT). It exits when stdin
closes (or when it is killed).
"""

import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time

PROBE_PAYLOAD = b"fwengine-probe"
ANSWER_REQUEST = b"fwengine-answer:"

_write_lock = threading.Lock()


def send_reply(message):
    with _write_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def family_of(address):
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class Listeners:
    """TCP ports on the dual-stack wildcard (the reply leaves from the address the SYN went to) and UDP
    ports on each local address, so a UDP echo leaves from the address the request was sent to."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.lock = threading.Lock()
        self.thread = None

    def add(self, tcp_ports, udp_ports, addresses):
        with self.lock:
            for port in tcp_ports:
                self._register(self._bind_tcp(port), self._accept)
            for port in udp_ports:
                for address in addresses:
                    self._register(self._bind_udp(address, port), self._echo)
        if self.thread is None:
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()

    def _register(self, sock, handler):
        sock.setblocking(False)
        self.sockets.append(sock)
        self.selector.register(sock, selectors.EVENT_READ, handler)

    @staticmethod
    def _bind_tcp(port):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            wildcard = "::"
        except OSError:  # IPv6 disabled in this namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            wildcard = "0.0.0.0"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((wildcard, port))
        sock.listen(128)
        return sock

    @staticmethod
    def _bind_udp(address, port):
        sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return sock

    @staticmethod
    def _accept(sock):
        try:
            connection, peer = sock.accept()
            connection.sendall(str(ipaddress.ip_address(peer[0]).ipv4_mapped or peer[0]).encode() + b"\n")
            connection.close()
        except OSError:
            pass

    @staticmethod
    def _echo(sock):
        try:
            data, peer = sock.recvfrom(65535)
            # A request for an answer of a given size (a small query with a large, fragmented answer).
            if data.startswith(ANSWER_REQUEST):
                data = probe_bytes(int(data[len(ANSWER_REQUEST):]))
            sock.sendto(data, peer)
        except (OSError, ValueError):
            pass

    def _serve(self):
        while True:
            for key, _ in self.selector.select(timeout=0.2):
                key.data(key.fileobj)


# <linux/in.h>, <linux/in6.h>, <linux/errqueue.h>: not all are in Python's socket module
IP_RECVERR, IPV6_RECVERR = 11, 25
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3


def bound_socket(family, kind, src, proto=0, sport=0):
    sock = socket.socket(family, kind, proto)
    if sport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if src or sport:
        sock.bind((src or ("::" if family == socket.AF_INET6 else "0.0.0.0"), sport))
    return sock


def transport_socket(dst, kind, src, sport):
    """A TCP/UDP socket that queues the ICMP errors it gets (IP_RECVERR), so a rejection can be told apart
    by its ICMP type and code, and a TCP RST (plain "refused") from an ICMP port-unreachable."""
    v6 = family_of(dst) == socket.AF_INET6
    sock = bound_socket(family_of(dst), kind, src, sport=sport)
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    return sock


def icmp_error(sock):
    """'icmp T/C' or 'icmp6 T/C' for the ICMP error queued on sock, or None."""
    try:
        _, ancillary, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:
        return None
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)) and len(data) >= 8:
            _, origin, icmp_type, icmp_code = struct.unpack("=IBBB", data[:7])
            if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                return f"{'icmp6' if origin == SO_EE_ORIGIN_ICMP6 else 'icmp'} {icmp_type}/{icmp_code}"
    return None


def closed_because(sock, error):
    """Why a probe failed: the ICMP error if one came back, else the socket error."""
    if isinstance(error, socket.timeout):
        return "timeout"
    detail = icmp_error(sock)
    if detail:
        return detail
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    return os.strerror(error.errno) if error.errno else str(error)


def probe_tcp(dst, port, src, timeout, sport=0):
    sock = transport_socket(dst, socket.SOCK_STREAM, src, sport)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        # The listener writes the source address it saw once it accepted: connect() returns after the
        # SYN+ACK, but a connection whose later packets (the ACK, data) are dropped never gets there.
        sock.settimeout(max(timeout, 3.0))
        try:
            seen = sock.recv(64).decode(errors="replace").strip()
        except OSError:
            seen = ""
        if not seen:
            return "closed", "connected, but the listener never got the connection (its later packets dropped)"
        return "open", f"connected from {seen}"
    except OSError as error:
        return "closed", closed_because(sock, error)
    finally:
        sock.close()


def probe_bytes(size):
    return (PROBE_PAYLOAD * (1 + size // len(PROBE_PAYLOAD)))[:size]


def probe_udp(dst, port, src, timeout, sport=0, size=None, answer=None):
    """size: the request's payload in bytes, echoed; answer: a small request for an answer of that many
    bytes. Beyond the link's MTU a datagram goes as fragments."""
    payload = ANSWER_REQUEST + str(answer).encode() if answer else probe_bytes(size) if size else PROBE_PAYLOAD
    expected = probe_bytes(answer) if answer else payload
    sock = transport_socket(dst, socket.SOCK_DGRAM, src, sport)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        sock.send(payload)
        if sock.recv(65535) == expected:
            return "open", "echoed"
        return "closed", "wrong answer"
    except OSError as error:
        return "closed", closed_because(sock, error)
    finally:
        sock.close()


def internet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def raw_replies(sock, dst, v6, timeout, min_length, any_source=False):
    """The transport payloads (IPv4 header stripped) of packets from dst (or from anyone, with any_source)
    on a raw socket, until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sock.settimeout(left)
        try:
            packet, peer = sock.recvfrom(2048)
        except socket.timeout:
            return
        payload = packet if v6 else packet[(packet[0] & 0x0F) * 4:]
        if len(payload) >= min_length and (any_source or ipaddress.ip_address(peer[0]) == ipaddress.ip_address(dst)):
            yield payload


ICMP_ERROR_TYPES = {False: (3, 11, 12), True: (1, 2, 3, 4)}  # destination unreachable, time exceeded, ...


def quoted_echo_ident(icmp, v6):
    """The echo id inside an ICMP error's quoted packet (None if it does not quote an echo request)."""
    quoted = icmp[8:]
    if v6:
        header_length, next_header, request_type = 40, quoted[6] if len(quoted) > 6 else None, 128
        if next_header != socket.IPPROTO_ICMPV6:
            return None
    else:
        if not quoted:
            return None
        header_length, request_type = (quoted[0] & 0x0F) * 4, 8
        if len(quoted) < 10 or quoted[9] != socket.IPPROTO_ICMP:
            return None
    echo = quoted[header_length:header_length + 8]
    if len(echo) < 8 or echo[0] != request_type:
        return None
    return struct.unpack("!H", echo[4:6])[0]


def probe_icmp(dst, src, timeout):
    """Echo request over a raw socket (no ping binary needed); open iff the matching echo reply arrives.
    An ICMP error that quotes the request (from any router on the way) closes it as "icmp T/C"."""
    v6 = family_of(dst) == socket.AF_INET6
    request_type, reply_type = (128, 129) if v6 else (8, 0)
    ident = random.randrange(1, 0xFFFF)
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = bound_socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, src, protocol)
    try:
        header = struct.pack("!BBHHH", request_type, 0, 0, ident, 1)
        checksum = 0 if v6 else internet_checksum(header + PROBE_PAYLOAD)  # the kernel sums ICMPv6 itself
        sock.sendto(struct.pack("!BBHHH", request_type, 0, checksum, ident, 1) + PROBE_PAYLOAD, (dst, 0))
        for icmp in raw_replies(sock, dst, v6, timeout, 8, any_source=True):
            kind, code, _, reply_ident, _ = struct.unpack("!BBHHH", icmp[:8])
            if kind == reply_type and reply_ident == ident:
                return "open", "echo reply"
            if kind in ICMP_ERROR_TYPES[v6] and quoted_echo_ident(icmp, v6) == ident:
                return "closed", f"{'icmp6' if v6 else 'icmp'} {kind}/{code}"
        return "closed", "timeout"
    except OSError as error:
        return "closed", os.strerror(error.errno) if error.errno else str(error)
    finally:
        sock.close()


def local_source_for(dst):
    """The source address the kernel picks for dst (a connected UDP socket sends nothing)."""
    sock = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    try:
        sock.connect((dst, 9))
        return sock.getsockname()[0]
    finally:
        sock.close()


def probe_tcp_invalid(dst, port, src, timeout):
    """A TCP segment with SYN and FIN set, which conntrack classifies INVALID, to a port nobody listens
    on: with nothing in the way the host answers with a RST ("open"); a firewall that drops invalid
    packets leaves it unanswered ("closed")."""
    v6 = family_of(dst) == socket.AF_INET6
    src = src or local_source_for(dst)
    sport = random.randrange(20000, 60000)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        sock.bind((src, 0))
        syn_fin = 0x02 | 0x01
        segment = struct.pack("!HHIIBBHHH", sport, port, random.randrange(1 << 32), 0, 5 << 4, syn_fin,
                              1024, 0, 0)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 16)  # the kernel fills it in
        else:
            pseudo_header = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(segment))
            checksum = internet_checksum(pseudo_header + segment)
            segment = segment[:16] + struct.pack("!H", checksum) + segment[18:]
        sock.sendto(segment, (dst, 0))
        for tcp in raw_replies(sock, dst, v6, timeout, 20):
            reply_sport, reply_dport = struct.unpack("!HH", tcp[:4])
            if reply_sport == port and reply_dport == sport and tcp[13] & 0x04:
                return "open", "reset"
        return "closed", "timeout"
    except OSError as error:
        return "closed", os.strerror(error.errno) if error.errno else str(error)
    finally:
        sock.close()


def run_probe(request):
    try:
        proto, dst, src = request["proto"], request["dst"], request.get("src")
        timeout = float(request.get("timeout", 1.0))
        sport = int(request.get("sport") or 0)
        if proto == "tcp":
            result, detail = probe_tcp(dst, int(request["port"]), src, timeout, sport)
        elif proto == "udp":
            result, detail = probe_udp(dst, int(request["port"]), src, timeout, sport, request.get("size"),
                                       request.get("answer"))
        elif proto == "icmp":
            result, detail = probe_icmp(dst, src, timeout)
        elif proto == "tcp-invalid":
            result, detail = probe_tcp_invalid(dst, int(request["port"]), src, timeout)
        else:
            result, detail = "error", f"unknown protocol {proto}"
    except Exception as error:  # report, never kill the agent: other probes are in flight
        result, detail = "error", f"{type(error).__name__}: {error}"
    send_reply({"id": request["id"], "result": result, "detail": detail})


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the runner, which stops us by pid
    listeners = Listeners()
    send_reply({"id": 0, "ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["op"] == "listen":
            try:
                listeners.add(request.get("tcp", []), request.get("udp", []), request.get("addresses", []))
                send_reply({"id": request["id"], "ok": True})
            except OSError as error:
                send_reply({"id": request["id"], "ok": False, "error": str(error)})
        elif request["op"] == "probe":
            threading.Thread(target=run_probe, args=(request,), daemon=True).start()
        else:
            send_reply({"id": request["id"], "ok": False, "error": f"unknown op {request['op']}"})


if __name__ == "__main__":
    main()
