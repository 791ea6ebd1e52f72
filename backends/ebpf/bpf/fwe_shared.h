/* fwe_shared.h - the tables shared by the BPF programs and the C++ loader. The loader flattens every
 * stage of the IR into one forward-only list of rules; the BPF side walks that list with bpf_loop.
 * Layouts are checked on the C++ side with static_assert; change both sides together. */
#ifndef FWE_SHARED_H
#define FWE_SHARED_H

#include <linux/types.h>

/* Fixed limits, refused at render time when a ruleset exceeds them. */
#define FWE_MAX_RULES 32768    /* flattened rules per generation, all stages together */
#define FWE_MAX_PORTSETS 256   /* multi-range port sets (bitmaps) per generation */
#define FWE_MAX_CHAINS 4096    /* chain names kept for counters, per generation */
#define FWE_MAX_WHERES 131072  /* origins of policy rules, per generation (address runs hold many) */
#define FWE_MAX_ADDR_MATCHES 2 /* address matches per side of one rule (Calico: nets + notNets) */
#define FWE_MAX_PORT_MATCHES 2 /* port matches per side of one rule */
#define FWE_MAX_MACS 4         /* source MACs listed in one rule or endpoint */
#define FWE_CT_ENTRIES 65536
/* CIDRs in the LPM map of each family, both generations together; the kernel refuses more at apply. */
#define FWE_SET_CIDRS 262144
/* Members of address runs per generation, both families and both kinds of map (tries, exact) together. */
#define FWE_MAX_RUN_MEMBERS 131072
#define FWE_NAME_LEN 64
#define FWE_HASH_LEN 96
#define FWE_WHERE_LEN 128
#define FWE_GENERATIONS 2
#define FWE_PORTSET_BYTES 8192 /* one bit per port */
#define FWE_MAX_LOGS 255       /* log rules per generation (fwe_rule.log is a byte) */
#define FWE_LOG_PREFIX_LEN 64  /* a log prefix with its terminating NUL */

/* Stages in the order of vocab.def. */
enum fwe_stage {
  FWE_STAGE_UNTRACKED_IN,
  FWE_STAGE_UNTRACKED_OUT,
  FWE_STAGE_PREDNAT,
  FWE_STAGE_DNAT,
  FWE_STAGE_INPUT,
  FWE_STAGE_FORWARD,
  FWE_STAGE_DNAT_OUT,
  FWE_STAGE_OUTPUT,
  FWE_STAGE_SNAT,
  FWE_STAGE_COUNT,
};

/* Conntrack states as bits of fwe_rule.ct_mask, in the order of vocab.def. */
enum fwe_ct_state {
  FWE_CT_NEW,
  FWE_CT_ESTABLISHED,
  FWE_CT_RELATED,
  FWE_CT_INVALID,
  FWE_CT_UNTRACKED,
};

/* What a rule does when its match holds. */
enum fwe_op {
  FWE_OP_NEXT, /* side effects only (log counter, set-mark, notrack), then the next rule */
  FWE_OP_GOTO, /* go on at target (always forward) */
  FWE_OP_DONE, /* the endpoint has its verdict (accept/continue): go on at target, the next section */
  FWE_OP_DROP, /* drop or reject: the packet ends here (a reject answers it: fwe_rule.reject) */
};

/* What a rejected packet gets back (fwe_rule.reject). Programs older than this field drop instead. */
enum fwe_reject {
  FWE_REJECT_NONE,      /* a plain drop */
  FWE_REJECT_ICMP,      /* ICMP destination unreachable (v6: ICMPv6 type 1) with reject_code4/6 */
  FWE_REJECT_TCP_RESET, /* TCP: a reset; anything else: as FWE_REJECT_ICMP */
};

enum fwe_rule_flags {
  FWE_F_INVERT = 1 << 0,     /* the rule fires when its match does NOT hold (inlined jumps) */
  FWE_F_NEED_ALLOW = 1 << 1, /* match also needs the allow mark (honour_allow sections) */
  FWE_F_GIVE_ALLOW = 1 << 2, /* DONE gives the allow mark */
  FWE_F_NOTRACK = 1 << 3,
  FWE_F_SET_MARK = 1 << 4,
  FWE_F_RUN_HEAD =
      1 << 5, /* first rule of a port run: jump straight to the first rule for the packet's dport */
  FWE_F_IN_RUN = 1 << 6,   /* rule of a port run: when only the rest of its match fails, go on at next_same */
  FWE_F_ADDR_RUN = 1 << 7, /* an address run: matches when fwe_runs4/6 (or _exact) has the packet's member */
};

/* How an address run's members are keyed (fwe_rule.run_flags). */
enum fwe_run_flags {
  FWE_RUN_DST = 1 << 0,       /* destination addresses, not source */
  FWE_RUN_ANY_PORT = 1 << 1,  /* no port: the key's port is 0, and a packet needs none */
  FWE_RUN_ANY_PROTO = 1 << 2, /* no protocol (nor port): the key's protocol is 0 */
  /* Every IPv4 member has the prefix length run_prefix4: they are in fwe_runs4_exact, and a packet's
   * address masked to that length finds its member with one hash lookup, whose cost does not grow with
   * the members as a trie walk does (one node per branching point on the key). */
  FWE_RUN_EXACT4 = 1 << 3,
  FWE_RUN_EXACT6 = 1 << 4, /* the same for IPv6: run_prefix6, fwe_runs6_exact */
  /* The run has no IPv4 member: an IPv4 packet matches none of its rules, without a lookup (an allow
   * list of IPv4 networks meets every IPv6 packet). Older programs ignore the bit and look up in vain. */
  FWE_RUN_NONE4 = 1 << 5,
  FWE_RUN_NONE6 = 1 << 6, /* the same for IPv6 */
};

enum fwe_icmp_flags {
  FWE_ICMP_PRESENT = 1 << 0,
  FWE_ICMP_V6 = 1 << 1,
  FWE_ICMP_TYPE = 1 << 2,
  FWE_ICMP_CODE = 1 << 3,
  FWE_ICMP_NEGATE = 1 << 4,
};

enum fwe_tristate { FWE_TRI_NONE, FWE_TRI_IS, FWE_TRI_NOT };

/* Reverse-path check of a rule (fwe_rule.rpf_mode); 1 << mode is its bit in the packet's passed checks. */
enum fwe_rpf { FWE_RPF_NONE, FWE_RPF_STRICT, FWE_RPF_LOOSE };

#define FWE_NO_BITMAP 0xffff

struct fwe_addr_match {
  __u32 set_id; /* generation << 24 | set index */
  __u8 used;
  __u8 negate;
  __u8 pad[2];
};

struct fwe_port_match {
  __u16 lo, hi; /* inclusive, when bitmap == FWE_NO_BITMAP */
  __u16 bitmap; /* index into fwe_portsets */
  __u8 used;
  __u8 negate;
};

struct fwe_rule {
  __u8 op;
  __u8 flags;
  __u8 family;     /* 0 any, 4, 6 */
  __u8 proto_mode; /* fwe_tristate: in proto_bits / not in proto_bits */
  __u32 target;    /* absolute rule index inside the generation */
  __u32 iif_list;  /* 0 none, else id of an interface list in fwe_iflists */
  __u32 oif_list;
  __u8 iif_negate;
  __u8 oif_negate;
  __u8 ct_mask; /* bits of fwe_ct_state, 0 = no ct match */
  __u8 ct_negate;
  __u8 icmp_flags;
  __u8 icmp_type;
  __u8 icmp_code;
  __u8 mac_mode; /* fwe_tristate */
  __u8 mac_count;
  __u8 mark_mode; /* fwe_tristate */
  __u8 rpf_mode;  /* fwe_rpf */
  __u8 rpf_negate;
  __u32 mark_value;
  __u32 mark_mask;
  __u32 set_mark_value;
  __u32 set_mark_mask;
  __u32 chain_id;    /* for counters: index into fwe_chains */
  __s32 rule_index;  /* for counters: rule inside the chain, -1 for rules core or the loader made up */
  __u8 reject;       /* FWE_OP_DROP: fwe_reject */
  __u8 reject_code4; /* the ICMP destination-unreachable code an IPv4 packet gets */
  __u8 reject_code6; /* the ICMPv6 one an IPv6 packet gets */
  __u8 log; /* FWE_OP_NEXT: a log rule, its fwe_logs entry + 1 (0: none); older programs count only */
  __u64 proto_bits[4];
  struct fwe_addr_match src[FWE_MAX_ADDR_MATCHES];
  struct fwe_addr_match dst[FWE_MAX_ADDR_MATCHES];
  struct fwe_port_match sport[FWE_MAX_PORT_MATCHES];
  struct fwe_port_match dport[FWE_MAX_PORT_MATCHES];
  __u8 macs[FWE_MAX_MACS][6];
  __u64 limit_cost_ns;  /* rate limit: credit one packet costs, 0 = no limit */
  __u64 limit_burst_ns; /* rate limit: most credit a rule saves up */
  /* Port runs: consecutive rules that each need one destination port. A packet can only match the
   * rules of the run that name its port, so the walk skips the others (see fwe_portindex). */
  __u32 run_id;     /* FWE_F_RUN_HEAD: key into fwe_portindex */
  __u32 run_end;    /* FWE_F_RUN_HEAD: first rule after the run */
  __u32 next_same;  /* FWE_F_IN_RUN: next rule of the run with the same port, or run_end */
  __u8 run_flags;   /* FWE_F_ADDR_RUN: fwe_run_flags */
  __u8 run_prefix4; /* FWE_RUN_EXACT4: the prefix length of every IPv4 member */
  __u8 run_prefix6; /* FWE_RUN_EXACT6: the prefix length of every IPv6 member */
  __u8 run_pad;
};

struct fwe_portindex_key {
  __u32 gen;
  __u32 run_id;
  __u32 port;
};

/* Where a stage's rules live in fwe_rules: key generation * FWE_STAGE_COUNT + stage. */
struct fwe_stage_span {
  __u32 start;
  __u32 count;
};

struct fwe_config {
  __u32 active_gen;
  /* Bit g: generation g has rpf rules, so fwe_ingress looks up the route back to each packet's source. */
  __u32 rpf_gens;
  /* Bit g: fwe_xdp may drop what generation g's untracked-in stage drops (compile.cpp: xdp_fits). */
  __u32 xdp_gens;
};

/* An interface fwe_xdp is attached to: its own MAC address, so that frames to another (a macvlan's in
 * another namespace, a promiscuous copy) pass unjudged, as fwe_ingress lets PACKET_OTHERHOST pass. */
struct fwe_xdp_link {
  __u8 mac[6];
  __u8 pad[2];
};

/* A port of a bridge whose frames br_netfilter hands to netfilter (bridge-nf-call-iptables, -ip6tables):
 * a frame switched to it from another port of that bridge is judged as forwarded from the bridge to the
 * bridge, as netfilter judges it. A frame to a link-local group that the bridge hands up on the port
 * itself is judged as coming in on the port. */
#define FWE_BRIDGED_IPV4 1u /* br_netfilter hands the bridge's IPv4 frames to netfilter */
#define FWE_BRIDGED_IPV6 2u /* and its IPv6 frames */
#define FWE_BRIDGED_VLAN 4u /* VLAN-tagged ones too (bridge-nf-filter-vlan-tagged) */

/* Every port of a bridge. */
struct fwe_port {
  __u32 bridge;    /* the bridge's ifindex */
  __u32 families;  /* FWE_BRIDGED_*: what br_netfilter hands to netfilter of the frames switched to it */
  __u32 up_groups; /* bit g: a frame to 01:80:c2:00:00:0g goes up on the port, not to the bridge */
};

/* A fragmented datagram, as the kernel's reassembly tells its fragments apart (IPv6: no protocol). */
struct fwe_frag_key {
  __u32 id; /* IPv4: the 16-bit identification; IPv6: the fragment header's */
  __u8 family;
  __u8 proto;
  __u8 pad[2];
  __u8 src[16];
  __u8 dst[16];
};

/* What the first fragment got, for the later ones: they carry no transport header to be judged by. */
struct fwe_frag_verdict {
  __u64 at_ns;   /* when the first fragment was judged (bpf_ktime_get_ns) */
  __u32 mark;    /* the mark a set-mark gave the first fragment */
  __u8 passed;   /* let through (else dropped) */
  __u8 set_mark; /* mark is to be set */
  __u8 pad[2];
};

struct fwe_meta {
  char ir_hash[FWE_HASH_LEN];
};

/* LPM keys: prefixlen counts the 32 bits of set_id plus the CIDR's prefix. */
struct fwe_lpm4_key {
  __u32 prefixlen;
  __u32 set_id; /* big endian, so it is the leading bits */
  __u8 addr[4];
};
struct fwe_lpm6_key {
  __u32 prefixlen;
  __u32 set_id;
  __u8 addr[16];
};

/* Address runs: consecutive rules with one verdict that differ only in one address set (the same side),
 * protocol and destination port (or only address, or address and protocol: fwe_run_flags) are one rule
 * (FWE_F_ADDR_RUN, run_id). Each source rule's (protocol, port, CIDR) is a member; a packet finds the
 * one member it can match with one lookup: in fwe_runs4/6 (LPM tries) by the longest prefix, or, when
 * a family's members all have one prefix length, in fwe_runs4_exact/6_exact (hashes) by its address
 * masked to that length. prefixlen counts run, proto, pad and port (64 bits) plus the CIDR's prefix. */
struct fwe_run4_key {
  __u32 prefixlen;
  __u32 run; /* generation << 24 | run id, big endian, so it is the leading bits */
  __u8 proto;
  __u8 pad;
  __u16 port; /* big endian */
  __u8 addr[4];
};
struct fwe_run6_key {
  __u32 prefixlen;
  __u32 run;
  __u8 proto;
  __u8 pad;
  __u16 port;
  __u8 addr[16];
};

/* A member's source rule, and where its hits are counted: fwe_run_counters, key generation *
 * FWE_MAX_RUN_MEMBERS + counter. Not in the member itself: an LPM trie's values are not 8-byte aligned,
 * and an atomic add that straddles two cache lines locks the bus (a packet took ~50 us instead of
 * ~0.1 us whenever the hot member's counter straddled). */
struct fwe_run_member {
  __u32 counter;
  __u32 chain_id;
  __s32 rule_index;
  __u32 pad;
};

struct fwe_iflist_key {
  __u32 gen;
  __u32 list_id;
  __u32 ifindex;
};

/* A flow in our conntrack, one map per family: hashing the key is a good part of what a packet costs,
 * and an IPv4 key is 16 bytes where an IPv6 one is 40. One entry holds both directions, so a packet
 * makes one lookup and a flow's directions are never evicted apart. The key is the direction whose
 * (address, port) tuple orders first (compared as 32-bit words); for an ICMP query, the request's, with
 * the identifier in both ports and the request's type in query_type (a ping to the host's own address,
 * src == dst, has two directions too). Ports are in network order. */
struct fwe_ct4_key {
  __u8 proto;
  __u8 query_type;
  __u16 sport, dport;
  __u8 pad[2];
  __u8 src[4];
  __u8 dst[4];
};

struct fwe_ct6_key {
  __u8 proto;
  __u8 query_type;
  __u16 sport, dport;
  __u8 pad[2];
  __u8 src[16];
  __u8 dst[16];
};

/* One direction of a flow (struct fwe_ct_value.dir): bits. */
enum fwe_ct_dir {
  FWE_DIR_KNOWN = 1,      /* the direction has an entry: every other bit needs this one */
  FWE_DIR_REPLY = 2,      /* the reply direction of an allowed flow */
  FWE_DIR_SEEN_REPLY = 4, /* original direction: a reply has been seen, later packets are established */
  FWE_DIR_UNTRACKED = 8,  /* a notracked flow: a marker for its reply, or (out on lo) for its way back in */
  FWE_DIR_REPLY_UNTRACKED =
      16, /* original direction: a reply went notracked, which the kernel's entry never saw */
};

/* Conntrack entries outlive an upgrade that changes the other maps' layout (kernel.cpp keeps fwe_ct4 and
 * fwe_ct6 while their shape fits): changing what these fields mean at the same size renames the maps.
 * (Until 2026-12 an entry was one direction in 4 bytes, keyed as the packet went; its maps do not fit.) */
struct fwe_ct_value {
  __u8 dir[2]; /* fwe_ct_dir bits: [0] the key's own direction, [1] the other one */
};

/* Token bucket of a rate-limited rule, in nanoseconds of credit (same key as fwe_rules). */
struct fwe_limit {
  __u64 credit;
  __u64 last_ns;
};

/* Where a rule came from ("file:line:col"), for status; read by the loader only. */
struct fwe_where_key {
  __u32 gen;
  __u32 chain_id;
  __s32 rule_index;
};
struct fwe_where {
  char text[FWE_WHERE_LEN];
};

/* A log rule's prefix and syslog level: fwe_logs, key generation * FWE_MAX_LOGS + fwe_rule.log - 1. */
struct fwe_log_rule {
  char prefix[FWE_LOG_PREFIX_LEN];
  __u8 level;
  __u8 pad[3];
};

/* A packet a log rule matched, as the programs put it into the ring buffer fwe_log for fwengine to read
 * (the kernel log's fields). */
struct fwe_log_event {
  struct fwe_log_rule rule;
  __u32 iif, oif, mark; /* ifindexes, 0 for none */
  __u32 len;            /* the IP packet's length, by its header */
  __u8 family;
  __u8 proto;
  __u8 tcp_flags;
  __u8 icmp_type;
  __u8 icmp_code;
  __u8 pad[3];
  __u16 sport, dport; /* host order */
  __u8 src[16], dst[16];
};

struct fwe_counter {
  __u64 packets;
  __u64 bytes;
};

#endif
