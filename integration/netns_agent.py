#!/usr/bin/env python3
"""One agent per test namespace: it answers on the scenario's ports and sends the probes.

Started by scenario.py with `ip netns exec <ns> python3 netns_agent.py`, so every socket it opens lives in
that namespace. It speaks JSON lines on stdin/stdout:

  {"op": "listen", "id": 1, "tcp": [22, 80], "udp": [53], "addresses": ["10.0.0.10", "::1"]}
  {"op": "probe", "id": 2, "proto": "tcp", "dst": "10.0.0.10", "port": 80, "src": null, "timeout": 1.0}

(proto: tcp | udp | icmp | tcp-invalid) and answers each request with {"id": N, ...}; a probe's answer
is {"id": N, "result": "open" | "closed" | "error", "detail": why}. It exits when stdin closes (or when
it is killed).
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
            connection, _ = sock.accept()
            connection.close()
        except OSError:
            pass

    @staticmethod
    def _echo(sock):
        try:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
        except OSError:
            pass

    def _serve(self):
        while True:
            for key, _ in self.selector.select(timeout=0.2):
                key.data(key.fileobj)


def bound_socket(family, kind, src, proto=0):
    sock = socket.socket(family, kind, proto)
    if src:
        sock.bind((src, 0))
    return sock


def probe_tcp(dst, port, src, timeout):
    sock = bound_socket(family_of(dst), socket.SOCK_STREAM, src)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        return "open", "connected"
    except ConnectionRefusedError:
        return "closed", "refused"
    except socket.timeout:
        return "closed", "timeout"
    except OSError as error:
        return "closed", os.strerror(error.errno) if error.errno else str(error)
    finally:
        sock.close()


def probe_udp(dst, port, src, timeout):
    sock = bound_socket(family_of(dst), socket.SOCK_DGRAM, src)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        sock.send(PROBE_PAYLOAD)
        if sock.recv(2048) == PROBE_PAYLOAD:
            return "open", "echoed"
        return "closed", "wrong answer"
    except ConnectionRefusedError:
        return "closed", "refused"
    except socket.timeout:
        return "closed", "timeout"
    except OSError as error:
        return "closed", os.strerror(error.errno) if error.errno else str(error)
    finally:
        sock.close()


def internet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def raw_replies(sock, dst, v6, timeout, min_length):
    """The transport payloads (IPv4 header stripped) of packets from dst on a raw socket, until timeout."""
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
        if len(payload) >= min_length and ipaddress.ip_address(peer[0]) == ipaddress.ip_address(dst):
            yield payload


def probe_icmp(dst, src, timeout):
    """Echo request over a raw socket (no ping binary needed); open iff the matching echo reply arrives."""
    v6 = family_of(dst) == socket.AF_INET6
    request_type, reply_type = (128, 129) if v6 else (8, 0)
    ident = random.randrange(1, 0xFFFF)
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = bound_socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, src, protocol)
    try:
        header = struct.pack("!BBHHH", request_type, 0, 0, ident, 1)
        checksum = 0 if v6 else internet_checksum(header + PROBE_PAYLOAD)  # the kernel sums ICMPv6 itself
        sock.sendto(struct.pack("!BBHHH", request_type, 0, checksum, ident, 1) + PROBE_PAYLOAD, (dst, 0))
        for icmp in raw_replies(sock, dst, v6, timeout, 8):
            kind, _, _, reply_ident, _ = struct.unpack("!BBHHH", icmp[:8])
            if kind == reply_type and reply_ident == ident:
                return "open", "echo reply"
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
        if proto == "tcp":
            result, detail = probe_tcp(dst, int(request["port"]), src, timeout)
        elif proto == "udp":
            result, detail = probe_udp(dst, int(request["port"]), src, timeout)
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
