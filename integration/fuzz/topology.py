"""The fuzz topology: the protected host `h` and three peers, each peer on its own veth link.

    a (10.1.0.0/28) --eth0-- h (10.9.0.0/28 on dum0) --eth1-- b (10.2.0.0/28)
                             |
                            vx0-- c (10.3.0.0/28)

Every link end has a fixed MAC address (so that policies can match a peer's `src-mac`). Every
namespace owns a pool of 16 IPv4 and 16 IPv6 addresses on a dummy interface, so that probes can
come from and go to both sides of any network edge the generator draws inside a pool. h forwards
between the peers. Built by scenario.py's Topology (static neighbours, agents, cleanup).
"""

import ipaddress

PEERS = ("a", "b", "c")
LINK_IFACES = {"a": "eth0", "b": "eth1", "c": "vx0"}  # h's interface towards each peer
LINK_NETS = {"a": ("10.0.1.{}/24", "fd00:1::{}/64"), "b": ("10.0.2.{}/24", "fd00:2::{}/64"),
             "c": ("10.0.3.{}/24", "fd00:3::{}/64")}
POOLS = {"a": {4: "10.1.0.0/28", 6: "fd00:a::/124"}, "b": {4: "10.2.0.0/28", 6: "fd00:b::/124"},
         "c": {4: "10.3.0.0/28", 6: "fd00:c::/124"}, "h": {4: "10.9.0.0/28", 6: "fd00:9::/124"}}
# Link MACs: each peer's end of its link, and h's end towards each peer (never a source h sees).
PEER_MACS = {"a": "02:fe:00:00:0a:02", "b": "02:fe:00:00:0b:02", "c": "02:fe:00:00:0c:02"}
HOST_MACS = {"a": "02:fe:00:00:0a:01", "b": "02:fe:00:00:0b:01", "c": "02:fe:00:00:0c:01"}
# Port range ends are drawn from these; probes go to them and to their neighbours.
PORT_ANCHORS = [1, 22, 80, 443, 1024, 8080, 65535]
PORTS = sorted({p for a in PORT_ANCHORS for p in (a - 1, a, a + 1) if 1 <= p <= 65535})


def link_address(ns, family, towards="a"):
    """ns's address on its link to h; for h, its address on the link towards that peer."""
    peer, host_part = (towards, 1) if ns == "h" else (ns, 2)
    return str(ipaddress.ip_interface(LINK_NETS[peer][0 if family == 4 else 1].format(host_part)).ip)


def pool_addresses(ns, family):
    return [str(a) for a in ipaddress.ip_network(POOLS[ns][family])]


def spec():
    """The topology as a scenario file writes it (integration/README.md)."""
    host_routes, links = [], []
    namespaces = {"h": {"sysctls": {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"},
                        "routes": host_routes, "dummies": [pool_dummy("h")]}}
    for peer in PEERS:
        v4, v6 = LINK_NETS[peer]
        namespaces[peer] = {"dummies": [pool_dummy(peer)],
                            "routes": [f"default via {v4.format(1).split('/')[0]}",
                                       f"default via {v6.format(1).split('/')[0]}"]}
        host_routes += [f"{POOLS[peer][4]} via {v4.format(2).split('/')[0]}",
                        f"{POOLS[peer][6]} via {v6.format(2).split('/')[0]}"]
        links.append({"h": {"ifname": LINK_IFACES[peer], "addresses": [v4.format(1), v6.format(1)],
                            "mac": HOST_MACS[peer]},
                      peer: {"ifname": "eth0", "addresses": [v4.format(2), v6.format(2)], "mac": PEER_MACS[peer]}})
    return {"namespaces": namespaces, "links": links}


def pool_dummy(ns):
    addresses = [f"{a}/32" for a in pool_addresses(ns, 4)] + [f"{a}/128" for a in pool_addresses(ns, 6)]
    return {"ifname": "dum0", "addresses": addresses}
