"""Seeded generator of random but valid policies in fwengine's YAML format (docs/yaml-format.md) and of
probes aimed at their edges, for the fixed topology of topology.py.

Everything is drawn from one random.Random, so (seed, profile) gives the same case on every machine.
A profile says what the backend under test accepts (stages, and where it refuses drop/reject), so that
most cases are not refused as a whole; what the backend still refuses at render is recorded as such.
"""

import copy
import ipaddress

from topology import HOST_MACS, LINK_IFACES, PEER_MACS, PEERS, POOLS, PORT_ANCHORS, PORTS, link_address, \
    pool_addresses

STAGES = ("untracked-in", "untracked-out", "prednat", "dnat", "input", "forward", "dnat-out", "output", "snat")
# Which interface a stage may match on: before routing there is no oif, on the output path no iif, and
# iptables cannot see iif in nat POSTROUTING (documented in backends/iptables/README.md).
STAGE_IIF = {"untracked-in", "prednat", "dnat", "input", "forward"}
STAGE_OIF = {"untracked-out", "forward", "dnat-out", "output", "snat"}
STAGE_CONNTRACK = {"prednat", "input", "forward", "output"}  # nat sees only a connection's first packet
STAGE_FAILSAFE = {"untracked-in", "untracked-out", "prednat", "input", "output"}
UNTRACKED = {"untracked-in", "untracked-out"}
# Where a packet has a source MAC that trace knows (`--src-mac`, the sending peer's): arriving from a peer.
# Not on the output path (no link-layer header yet).
STAGE_MAC = {"untracked-in", "prednat", "dnat", "input", "forward"}
# MACs no packet ever comes from (h's own link ends, and unused ones): for matches that never hold, or
# always hold when negated.
OTHER_MACS = list(HOST_MACS.values()) + ["02:fe:00:00:0d:02", "00:00:5e:00:53:01"]
# Mark bits drawn from: the low 28 only (iptables keeps the top nibble for itself, nft 0x60000000).
MARK_BITS = [0x1, 0x2, 0x4, 0x10, 0x80, 0x100, 0x10000, 0x8000000]
# Backend capabilities beyond stages and verdicts, asked from the backend (fuzz.py backend_profile): match
# kinds and actions, and forms of a match some backends refuse (`{not: [eth0, eth1]}`, `{not: [tcp,
# icmp]}`, `[eth0, vx+]`).
FEATURES = ("src-mac", "mark", "set-mark", "rate-limit", "pkt-type", "ct-status", "dnat", "redirect", "snat",
            "masquerade", "ct-helper", "tcp-mss-clamp", "not-iface-list", "not-protocol-list", "iface-prefix-list",
            "rpf", "rpf-after-routing", "ct-helper-tracked", "ct-orig-dport", "dnat-out")
# The host's own packets are DNATed only to another address of the namespace they go to (nat_rewrite), so
# their route stays; a redirect would send them to the loopback address, a route trace is not told.
NAT_ACTIONS = {"dnat": ["dnat", "redirect"], "dnat-out": ["dnat-out"], "snat": ["snat", "masquerade"]}
# Where ct-status may be matched (docs/ir.md): not before conntrack, not in dnat; in snat only with dnat.
STAGE_CT_STATUS = {"prednat", "input", "forward", "output", "snat"}
# Where rpf may be matched: before routing (feature "rpf"; iptables' rpfilter works only there) and after
# it ("rpf-after-routing"). Every probe's source is routed back out of the interface it comes in on, so a
# positive match always holds and a negated one never: the backends must agree on that for every path.
STAGE_RPF = {"untracked-in": "rpf", "prednat": "rpf", "input": "rpf-after-routing",
             "forward": "rpf-after-routing"}
# Conntrack helpers and their protocol. iptables assigns helpers only before conntrack (raw), nft only
# after it, so the generator asks the backend (fuzz.py FEATURE_RULES) for both: "ct-helper" in the
# untracked stages, "ct-helper-tracked" in the others.
HELPERS = {"ftp": "tcp", "tftp": "udp", "sip": "udp"}  # both families (irc is IPv4 only)

IIF_VALUES = ["eth0", "eth1", "vx0", "lo", "eth+", "vx+", "e+", "dum0", "nope0"]
CT_STATES = ["new", "established", "related", "invalid", "untracked"]
ICMP4_TYPES = ["echo-request", "echo-reply", "destination-unreachable", "time-exceeded"]
ICMP6_TYPES = ["echo-request", "echo-reply", "destination-unreachable", "packet-too-big"]
REJECT4 = ["icmp-port-unreachable", "icmp-host-unreachable", "icmp-net-prohibited", "icmp-admin-prohibited"]
REJECT6 = ["icmp6-port-unreachable", "icmp6-adm-prohibited", "icmp6-no-route", "icmp6-addr-unreachable"]
# Source ports the kernel picks (32768-60999) and trace's default (40000) are on the same side of each of
# these, so a sport match decides the same for the real probe and for trace.
SPORT_VALUES = ["1024-65535", "0-1023", {"not": ["0-1023"]}, "!22", [22, 80], "32768-65535", "0-32767"]


class Profile:
    """What a backend accepts: stages, the stages where drop / reject are refused, and which FEATURES
    (match kinds and actions) it renders; `avoid` names features left out because of a known failure
    (known_failures.yaml): `nat-verdicts` (drop, reject and allow in dnat/snat), `ct-state-untracked`
    (ct-state matches in the untracked stages), `loopback-icmp` (ICMP probes from the host to itself), or
    any of FEATURES."""

    def __init__(self, stages, no_drop=(), no_reject=(), avoid=(), features=FEATURES):
        self.stages = [s for s in STAGES if s in stages]
        self.no_drop, self.no_reject, self.avoid = set(no_drop), set(no_reject), set(avoid)
        self.features = set(features) - self.avoid
        # No verdict in the nat stages (drop, reject, allow), only rewrites.
        self.no_allow = {"dnat", "dnat-out", "snat"} if "nat-verdicts" in self.avoid else set()
        if self.no_allow:
            self.no_drop |= self.no_allow
            self.no_reject |= self.no_allow


def cidr_around(rng, family, ns=None, wide=True):
    """A network that cuts through one of the address pools (that of `ns` if given), so its edges are
    probe-able, or (if `wide`) a wide one that holds several pools."""
    ns = ns or rng.choice(list(POOLS))
    pool = ipaddress.ip_network(POOLS[ns][family])
    if wide and rng.random() < 0.15:
        prefixes = {4: [8, 16, 0], 6: [16, 32, 0]}[family]
        return str(pool.supernet(new_prefix=rng.choice(prefixes)))
    extra = pool.max_prefixlen - pool.prefixlen
    prefix = pool.prefixlen + rng.randint(0, extra)
    size = 1 << (pool.max_prefixlen - prefix)
    start = int(pool.network_address) + size * rng.randrange(pool.num_addresses // size)
    return str(ipaddress.ip_network((start, prefix)))


def inline_networks(value):
    """The networks written inline in a src/dst value (set names are not)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in inline_networks(v)]
    if isinstance(value, list):
        return [n for v in value for n in inline_networks(v)]
    text = value.lstrip("!")
    try:
        ipaddress.ip_network(text)
    except ValueError:
        return []
    return [text]


class Generator:
    def __init__(self, rng, profile):
        self.rng = rng
        self.profile = profile
        self.sets = {}
        self.cidrs = []  # every network the policy names, for the probes' edges
        self.ports = set()  # every port or range end the policy names
        self.mac_peers = rng.sample(PEERS, rng.choice([1, 2]))  # whose MACs src-mac matches may name
        self.named_mac_peers = set()  # those whose MAC the policy does name
        self.mark_bits = rng.sample(MARK_BITS, 3)  # few bits, so that set-mark and mark matches meet

    def chance(self, p):
        return self.rng.random() < p

    def has(self, feature):
        return feature in self.profile.features

    # ---- values ------------------------------------------------------------------------------------

    def networks(self, family=None):
        count = self.rng.choice([1, 1, 2, 3])
        nets = []
        for _ in range(count):
            fam = family or self.rng.choice([4, 6])
            nets.append(cidr_around(self.rng, fam))
        self.cidrs += nets
        return nets

    def new_set(self):
        nets = [] if self.chance(0.05) else self.networks()
        if self.chance(0.3):
            nets += self.networks()  # overlaps and both families
        return self.named_set(nets)

    def named_set(self, nets):
        name = f"s{len(self.sets)}"
        self.sets[name] = nets
        return name

    def address_value(self, family, negatable=True):
        """A src/dst match: set name, inline networks, negated, or an {all: [...]} of two."""
        if self.sets and self.chance(0.5):
            value = self.rng.choice(list(self.sets))
        elif self.chance(0.4):
            value = self.new_set()
        else:
            nets = self.networks(family)
            value = nets[0] if len(nets) == 1 else nets
        if negatable and self.chance(0.25):
            if isinstance(value, list):
                return {"not": value}
            return "!" + value
        if negatable and self.chance(0.1):
            other = self.new_set()
            return {"all": [value if isinstance(value, str) else self.new_set(), "!" + other]}
        return value

    def port_item(self):
        low = self.rng.choice(PORT_ANCHORS)
        if self.chance(0.5):
            self.ports.add(low)
            return low
        high = self.rng.choice([p for p in PORT_ANCHORS if p >= low])
        self.ports.update((low, high))
        return f"{low}-{high}" if high != low else low

    def port_value(self):
        items = [self.port_item() for _ in range(self.rng.choice([1, 1, 2, 3]))]
        value = items[0] if len(items) == 1 else items
        roll = self.rng.random()
        if roll < 0.15:
            return {"not": items}
        if roll < 0.25 and len(items) == 1:
            return f"!{items[0]}"
        if roll < 0.3:
            return {"all": [self.port_item(), f"!{self.port_item()}"]}
        return value

    def iface_value(self):
        if self.chance(0.2):
            names = self.rng.sample(IIF_VALUES, 2)
            if self.chance(0.5):
                return {"not": names} if self.has("not-iface-list") else "!" + names[0]
            if not self.has("iface-prefix-list"):
                names = [n for n in names if not n.endswith("+")] or ["eth0"]
            return names
        name = self.rng.choice(IIF_VALUES)
        return "!" + name if self.chance(0.2) else name

    def mac_list(self):
        """One to three MACs: of the peers this case names (never more than two of the three, so that
        probes can avoid them, see probe()) or of no one."""
        macs = []
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            if self.chance(0.7):
                peer = self.rng.choice(self.mac_peers)
                self.named_mac_peers.add(peer)
                macs.append(PEER_MACS[peer])
            else:
                macs.append(self.rng.choice(OTHER_MACS))
        return sorted(set(macs))

    def mac_value(self):
        macs = self.mac_list()
        value = macs[0] if len(macs) == 1 else macs
        if self.chance(0.3):
            return {"not": macs} if len(macs) > 1 or self.chance(0.5) else "!" + macs[0]
        return value

    def mark_bits_value(self, within=None):
        bits = [b for b in self.mark_bits if within is None or b & within]
        return sum(self.rng.sample(bits, self.rng.randint(0, len(bits))))

    def mark_match(self):
        """mark & mask == value; value 0 matches unmarked packets."""
        if self.chance(0.4):
            value = self.mark_bits_value()
        else:
            mask = self.mark_bits_value() or self.mark_bits[0]
            value = {"value": self.mark_bits_value(within=mask), "mask": mask}
        if self.chance(0.25):
            return {"not": value} if isinstance(value, dict) or self.chance(0.5) else f"!{value}"
        return value

    def set_mark(self):
        if self.chance(0.3):
            return self.mark_bits_value() or self.mark_bits[0]
        mask = self.mark_bits_value() or self.mark_bits[0]
        return {"value": self.mark_bits_value(within=mask), "mask": mask}

    def rate_limit(self):
        """A limit no probe reaches: trace holds a rate limit as matching, and a case sends far fewer
        packets through one rule (12 probes, a few packets each, resent once at most) than the burst."""
        burst = self.rng.choice([1000, 4000, 10000])  # 10000: iptables' largest burst
        rate, per = self.rng.choice([(2000, "second"), (10000, "second"), (300000, "minute"), (9000000, "hour")])
        return {"rate": rate, "per": per, "burst": burst}

    def nat_rewrite(self, stage, rule, action):
        """Completes a dnat / redirect / snat / masquerade rule so that trace's walk stays right: the rewrite keeps
        the packet on its path (trace takes the path from the original packet), the address has the
        rule's family, and a port mapping has a protocol with ports."""
        protocol = rule.get("protocol")
        names = protocol if isinstance(protocol, list) else [protocol]  # a negated one allows any family
        icmp = [f for key, f in (("icmp", 4), ("icmpv6", 6)) if key in rule or key in names]
        family = {"ipv4": 4, "ipv6": 6}.get(rule.get("family")) or (icmp or [self.rng.choice([4, 6])])[0]
        rule["family"] = f"ipv{family}"
        for key in ("src", "dst"):  # inline networks of another family would contradict it
            if key in rule and any(ipaddress.ip_network(n).version != family for n in inline_networks(rule[key])):
                rule.pop(key)
        result = {"action": action}
        if action == "dnat":
            # To another address of the namespace the packet already goes to: a forwarded packet stays
            # forwarded (to the same peer), one to the host stays local.
            ns = self.rng.choice(["h", *PEERS])
            net = cidr_around(self.rng, family, ns, wide=False)
            self.cidrs.append(net)
            rule["dst"] = net
            result["to"] = self.rng.choice(pool_addresses(ns, family))
        elif action == "redirect":
            # Only packets to h: they go to the address of the interface they came in on, still local.
            net = cidr_around(self.rng, family, "h", wide=False)
            self.cidrs.append(net)
            rule["dst"] = net
        elif action == "snat":
            # To one of h's addresses, so that the reply comes back to h to be un-NATed.
            result["to"] = self.rng.choice(pool_addresses("h", family) +
                                           [link_address("h", family, peer) for peer in PEERS])
        else:
            # Not on lo: trace does not know the address masquerade picks, which the packet would carry
            # through the input path when it comes in again.
            rule["oif"] = self.rng.choice(["eth+", "vx0", *LINK_IFACES.values()])
        # A port that has a listener; trace takes the lowest port of a range, so one port. Not on snat or
        # masquerade: all connections to one destination would share one source port, and a probe's
        # connection could not be NATed while an earlier one's conntrack entry lives.
        if action in ("dnat", "redirect") and self.chance(0.4):
            result["to-port"] = self.rng.choice(PORTS)
            rule["protocol"] = self.rng.choice(["tcp", "udp", ["tcp", "udp"]])
            for key in ("icmp", "icmpv6"):
                rule.pop(key, None)
        return result

    # ---- rules -------------------------------------------------------------------------------------

    def rule(self, stage, chain_index, chain_names, reject_ok, drop_ok):
        rng = self.rng
        rule = {}
        family = rng.choice([None, None, 4, 6])
        if family:
            rule["family"] = f"ipv{family}"
        protocol = None
        roll = rng.random()
        if roll < 0.35:
            protocol = rng.choice(["tcp", "udp"])
            rule["protocol"] = protocol
        elif roll < 0.45:
            protocol = "icmp" if family == 4 or (family is None and self.chance(0.5)) else "icmpv6"
            rule["protocol"] = protocol
        elif roll < 0.55:
            rule["protocol"] = rng.choice([["tcp", "udp"], "!tcp", "!udp", {"not": ["tcp", "icmp"]}, ["udp", "icmpv6"]])
            if rule["protocol"] == {"not": ["tcp", "icmp"]} and not self.has("not-protocol-list"):
                rule["protocol"] = "!icmp"
        if protocol in ("tcp", "udp") or (protocol is None and "protocol" not in rule and self.chance(0.3)):
            if self.chance(0.7):
                rule["dport"] = self.port_value()
            if self.chance(0.15):
                rule["sport"] = rng.choice(SPORT_VALUES)
            # The port before any DNAT; no connection (so no match) before conntrack.
            if stage not in UNTRACKED and self.has("ct-orig-dport") and self.chance(0.1):
                rule["ct-orig-dport"] = self.port_value()
        if protocol in ("icmp", "icmpv6") and self.chance(0.7):
            types = ICMP4_TYPES if protocol == "icmp" else ICMP6_TYPES
            kind = rng.choice(types)
            value = rng.choice([kind, "!" + kind, {"type": kind, "code": rng.choice([0, 1])}, "any"])
            rule[protocol] = value
        if self.chance(0.35):
            rule["src"] = self.address_value(family)
        if self.chance(0.3):
            rule["dst"] = self.address_value(family)
        if stage in STAGE_IIF and self.chance(0.2):
            rule["iif"] = self.iface_value()
        if stage in STAGE_OIF and self.chance(0.2):
            rule["oif"] = self.iface_value()
        if self.chance(0.15) and not (stage in UNTRACKED and "ct-state-untracked" in self.profile.avoid):
            states = rng.sample(CT_STATES, rng.choice([1, 1, 2]))
            value = states[0] if len(states) == 1 else states
            rule["ct-state"] = ("!" + value) if isinstance(value, str) and self.chance(0.3) else value
        if stage in STAGE_MAC and self.has("src-mac") and self.chance(0.12):
            rule["src-mac"] = self.mac_value()
        if self.has("mark") and self.chance(0.15):
            rule["mark"] = self.mark_match()
        if self.has("rate-limit") and self.chance(0.08):
            rule["rate-limit"] = self.rate_limit()
        if self.has("pkt-type") and self.chance(0.06):
            # Every probe is unicast: the others never match.
            rule["pkt-type"] = rng.choice(["unicast", "unicast", "broadcast", "multicast"])
        if stage in STAGE_RPF and self.has(STAGE_RPF[stage]) and self.chance(0.06):
            rule["rpf"] = rng.choice(["strict", "loose", "!strict", "!loose"])
        if stage in STAGE_CT_STATUS and self.has("ct-status") and self.chance(0.08):
            rule["ct-status"] = ["dnat", rng.choice(["snat", "dnat"])] if stage == "snat" else \
                rng.choice(["dnat", "snat", ["dnat", "snat"]])
        rule.update(self.action(stage, chain_index, chain_names, rule, reject_ok, drop_ok))
        return rule

    def action(self, stage, chain_index, chain_names, rule, reject_ok, drop_ok):
        rng = self.rng
        choices = ["accept"] * 4 + ["log", "pass", "return"]
        if stage not in self.profile.no_allow:
            choices += ["allow"] * 2
        if drop_ok:
            choices += ["drop"] * 4
        if reject_ok:
            choices += ["reject"] * 2
        if chain_index + 1 < len(chain_names):
            choices += ["jump"] * 2
        if stage in UNTRACKED:
            choices += ["notrack"] * 2
        if self.has("set-mark"):
            choices += ["set-mark"] * 2
        if self.has("ct-helper" if stage in UNTRACKED else "ct-helper-tracked"):
            choices.append("ct-helper")
        if stage in ("forward", "output") and self.has("tcp-mss-clamp"):
            choices.append("tcp-mss-clamp")
        choices += [nat for nat in NAT_ACTIONS.get(stage, []) for _ in range(3) if self.has(nat)]
        action = rng.choice(choices)
        if action == "dnat-out":  # the feature's name; the action is a dnat
            action = "dnat"
        if action == "set-mark":
            return {"action": "set-mark", "set-mark": self.set_mark()}
        if action in ("dnat", "redirect", "snat", "masquerade"):
            return self.nat_rewrite(stage, rule, action)
        if action == "tcp-mss-clamp":  # rewrites SYNs' MSS option, decides nothing
            return {"action": action, "mss": rng.choice(["pmtu", 536, 1400])}
        if action == "ct-helper":
            # The helper's protocol (iptables' CT target needs one that is not negated).
            helper = rng.choice(sorted(HELPERS))
            rule["protocol"] = HELPERS[helper]
            for key in ("icmp", "icmpv6"):
                rule.pop(key, None)
            return {"action": "ct-helper", "helper": helper}
        if action == "jump":
            return {"action": "jump", "target": rng.choice(chain_names[chain_index + 1:])}
        if action == "log":
            return {"action": "log", "prefix": f"fz{chain_index} ", "level": rng.choice(["info", "warn", 6])}
        if action == "reject" and self.chance(0.5):
            if rule.get("protocol") == "tcp" and self.chance(0.4):
                return {"action": "reject", "reject-with": "tcp-reset"}
            family = rule.get("family")
            if family == "ipv4":
                return {"action": "reject", "reject-with": rng.choice(REJECT4)}
            if family == "ipv6":
                return {"action": "reject", "reject-with": rng.choice(REJECT6)}
        return {"action": action}

    def run_stretch(self, stage, drop_ok):
        """Four to nine rules with one verdict that differ only in one address (always src, or always
        dst) and in their protocols and port, or protocols alone, or nothing else: what the backends
        merge into one lookup (nft's sets, iptables' hash:net,port, ebpf's address runs). Half the
        stretches give every network of a family one prefix length (ebpf looks those up in a hash); the
        networks may overlap, which must end a merge where first match would tell them apart. The
        lengths include the 32-bit word boundaries of an IPv6 address (/32, /64, /96), where ebpf masks
        a whole word or none of it."""
        rng = self.rng
        side = rng.choice(["src", "dst"])
        keyed = rng.choice(["port", "port", "protocol", "address"])
        verdicts = ["accept", "accept"] + ([] if stage in self.profile.no_allow else ["allow"])
        action = rng.choice(verdicts + (["drop", "drop"] if drop_ok else []))
        prefixes = ({4: rng.choice([16, 24, 29, 30, 32]), 6: rng.choice([32, 64, 96, 125, 126, 128])}
                    if self.chance(0.5) else None)
        common = {}
        if stage in STAGE_IIF and self.chance(0.2):
            common["iif"] = self.iface_value()
        if stage not in UNTRACKED and self.chance(0.15):
            common["ct-state"] = "new"
        stretch = []
        for _ in range(rng.randint(4, 9)):
            nets = []
            for _ in range(rng.choice([1, 1, 1, 2])):
                family = rng.choice([4, 6])
                net = ipaddress.ip_network(cidr_around(rng, family, wide=False))
                if prefixes and net.prefixlen > prefixes[family]:
                    net = net.supernet(new_prefix=prefixes[family])
                elif prefixes:
                    net = ipaddress.ip_network((net.network_address, prefixes[family]), strict=False)
                nets.append(str(net))
            self.cidrs += nets
            rule = copy.deepcopy(common)  # no object shared between rules: their YAML gets no anchors
            if keyed == "port":
                rule["protocol"] = rng.choice(["tcp", "tcp", "udp", ["tcp", "udp"]])
                low = rng.choice(PORT_ANCHORS)
                high = low if self.chance(0.7) else min(65535, low + rng.choice([1, 2]))
                self.ports.update((low, high))
                rule["dport"] = low if high == low else f"{low}-{high}"
            elif keyed == "protocol":
                rule["protocol"] = rng.choice(["tcp", "udp", ["tcp", "udp"], "icmp", "icmpv6"])
            rule[side] = self.named_set(nets) if len(nets) > 1 or self.chance(0.3) else nets[0]
            rule["action"] = action
            stretch.append(rule)
        return stretch

    # ---- stages ------------------------------------------------------------------------------------

    def verdict(self, stage):
        choices = ["accept", "continue", "continue"]
        if stage not in self.profile.no_allow:
            choices.append("allow")
        if stage not in self.profile.no_drop:
            choices += ["drop"] * 2
        if stage not in self.profile.no_reject:
            choices += ["reject", "reject:icmp-admin-prohibited" if self.chance(0.5) else "reject"]
        return self.rng.choice(choices)

    def endpoint(self, stage, index, chain_names):
        rng = self.rng
        endpoint = {"name": f"e{index}"}
        roll = rng.random()
        if stage in STAGE_IIF and roll < 0.5:
            endpoint["iif"] = rng.choice(["eth0", "eth1", "vx0", "lo", "eth+", "vx+"])
        elif stage in STAGE_OIF and roll < 0.6 and stage != "snat":
            endpoint["oif"] = rng.choice(["eth0", "eth1", "vx0", "lo", "eth+", "vx+"])
        if self.chance(0.2):
            endpoint["src"] = self.address_value(None, negatable=False) if not self.chance(0.5) else self.new_set()
        if self.chance(0.15):
            endpoint["dst"] = self.new_set()
        if stage in STAGE_MAC and self.has("src-mac") and self.chance(0.15):
            macs = self.mac_list()
            endpoint["src-mac"] = macs[0] if len(macs) == 1 else macs
        if stage in STAGE_CONNTRACK and self.chance(0.4):
            endpoint["conntrack"] = rng.choice(["none", "accept-established", "accept-established-drop-invalid"])
        if stage in STAGE_FAILSAFE and self.chance(0.3):
            endpoint["failsafe"] = True
        if chain_names:
            if self.chance(0.4):
                endpoint["chains"] = rng.sample(chain_names, rng.randint(1, min(2, len(chain_names))))
            else:
                groups = []
                for g in range(rng.randint(1, 2)):
                    group = {"name": f"g{g}", "chains": rng.sample(chain_names, rng.randint(1, min(2, len(chain_names))))}
                    if self.chance(0.4):
                        group["on-end"] = self.verdict(stage)
                    groups.append(group)
                endpoint["groups"] = groups
        if self.chance(0.8):
            endpoint["default"] = self.verdict(stage)
        return endpoint

    def named_endpoints(self, stage, chain_names):
        """4 to 6 endpoints told apart by one interface name each, some names repeated: what the nft
        backend dispatches with one verdict map (first match still wins)."""
        key = "iif" if stage in STAGE_IIF and (stage not in STAGE_OIF or self.chance(0.5)) else "oif"
        endpoints = []
        for e in range(self.rng.randint(4, 6)):
            endpoint = self.endpoint(stage, e, chain_names)
            for other in ("iif", "oif", "src", "dst", "src-mac"):
                endpoint.pop(other, None)
            endpoint[key] = self.rng.choice(["eth0", "eth1", "vx0", "lo", "dum0"])
            endpoints.append(endpoint)
        return endpoints

    def stage(self, stage):
        rng = self.rng
        prefix = stage.replace("untracked-", "u").replace("-", "")
        chain_names = [f"{prefix}-c{i}" for i in range(rng.randint(0, 4))]
        drop_ok = stage not in self.profile.no_drop
        reject_ok = stage not in self.profile.no_reject
        chains = {name: [self.rule(stage, i, chain_names, reject_ok, drop_ok) for _ in range(rng.randint(1, 5))]
                  for i, name in enumerate(chain_names)}
        for rules in chains.values():
            if self.chance(0.3):
                at = rng.randint(0, len(rules))
                rules[at:at] = self.run_stretch(stage, drop_ok)
        # After a NAT rewrite the kernel skips the stage's later nat chains (sections), where trace goes on.
        rewrites = any(r["action"] in ("dnat", "redirect", "snat", "masquerade") for rules in chains.values() for r in rules)
        sections = []
        for s in range(1 if rewrites else rng.choice([1, 1, 2])):
            if stage != "snat" and self.chance(0.15):
                endpoints = self.named_endpoints(stage, chain_names)
            else:
                endpoints = [self.endpoint(stage, e, chain_names) for e in range(rng.randint(1, 3))]
            section = {"name": f"{prefix}{s}", "endpoints": endpoints}
            if s > 0 and self.chance(0.4):
                section["honour-allow"] = True
            sections.append(section)
        return chains, sections

    def failsafe(self):
        def entries():
            result = []
            for _ in range(self.rng.randint(1, 2)):
                entry = {"protocol": self.rng.choice(["tcp", "udp"]), "port": self.rng.choice(PORT_ANCHORS)}
                self.ports.add(entry["port"])
                if self.chance(0.3):
                    entry["net"] = self.networks()[0]
                result.append(entry)
            return result

        failsafe = {"inbound": entries()}
        if self.chance(0.5):
            failsafe["outbound"] = entries()
        return failsafe

    def policy(self):
        rng = self.rng
        stages = rng.sample(self.profile.stages, rng.randint(1, min(3, len(self.profile.stages))))
        if not set(stages) & {"input", "forward", "output"} and self.chance(0.7):
            stages.append(rng.choice([s for s in ("input", "forward", "output") if s in self.profile.stages]))
        policy = {"apiVersion": "fwengine/v1"}
        if self.chance(0.3):
            policy["failsafe"] = self.failsafe()
        chains, stage_map = {}, {}
        for stage in [s for s in STAGES if s in stages]:
            stage_chains, sections = self.stage(stage)
            chains.update(stage_chains)
            stage_map[stage] = sections
        if self.sets:
            policy["sets"] = self.sets
        if chains:
            policy["chains"] = chains
        policy["stages"] = stage_map
        return policy

    # ---- probes ------------------------------------------------------------------------------------

    def edge_addresses(self, owned, family):
        """Owned addresses of that family that sit on an edge of some network the policy names."""
        owned_set = {ipaddress.ip_address(a) for a in owned}
        edges = []
        for text in self.cidrs:
            net = ipaddress.ip_network(text)
            if net.version != family:
                continue
            first, last = int(net.network_address), int(net.broadcast_address)
            for value in (first - 1, first, last, last + 1):
                try:
                    address = ipaddress.ip_address(value) if family == 4 else ipaddress.IPv6Address(value)
                except ValueError:
                    continue
                if address in owned_set:
                    edges.append(str(address))
        return edges

    def pick_address(self, ns, family, allow_link=True):
        owned = pool_addresses(ns, family)
        edges = self.edge_addresses(owned, family)
        if edges and self.chance(0.7):
            return self.rng.choice(edges)
        if allow_link and self.chance(0.15):
            return link_address(ns, family, self.rng.choice(PEERS))
        return self.rng.choice(owned)

    def pick_port(self):
        near = sorted(p for port in self.ports for p in (port - 1, port, port + 1) if p in PORTS)
        if near and self.chance(0.8):
            return self.rng.choice(near)
        return self.rng.choice(PORTS)

    def probe(self, index):
        rng = self.rng
        path = rng.choice(["input"] * 4 + ["forward"] * 3 + ["output"] * 3 + ["local"])
        family = rng.choice([4, 6])
        protocols = ["tcp"] * 4 + ["udp"] * 3 + ["icmp"] * 2
        if path == "local" and "loopback-icmp" in self.profile.avoid:
            protocols.remove("icmp")
            protocols.remove("icmp")
        proto = rng.choice(protocols)
        # A reply that comes from a peer carries its MAC, which trace does not know (it walks replies without
        # one): no forward or output probes to a peer whose MAC the policy names.
        targets = [p for p in PEERS if p not in self.named_mac_peers]
        if path == "input":
            source = rng.choice(PEERS)
            probe = {"from": source, "src": self.pick_address(source, family), "to": self.pick_address("h", family)}
        elif path == "forward":
            target = rng.choice(targets)
            source = rng.choice([p for p in PEERS if p != target])
            probe = {"from": source, "src": self.pick_address(source, family),
                     "to": self.pick_address(target, family, allow_link=False)}
        elif path == "output":
            target = rng.choice(targets)
            src = self.pick_address("h", family, allow_link=False) if self.chance(0.5) else None
            probe = {"from": "h", "src": src, "to": self.pick_address(target, family)}
        else:
            probe = {"from": "h", "src": None, "to": self.pick_address("h", family, allow_link=False)}
        probe.update(name=f"p{index}-{path}", proto=proto)
        if proto != "icmp":
            probe["port"] = self.pick_port()
        return probe


def generate(rng, profile, probe_count):
    generator = Generator(rng, profile)
    policy = generator.policy()
    probes = [generator.probe(i) for i in range(probe_count)]
    return policy, probes
