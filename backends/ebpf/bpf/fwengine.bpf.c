// SPDX-License-Identifier: GPL-2.0
/* fwengine.bpf.c - tc programs that evaluate a compiled fwengine ruleset held in maps.
 *
 * fwe_ingress (clsact ingress of every interface) runs untracked-in, prednat and then input or
 * forward, telling the two apart with bpf_fib_lookup. fwe_egress (clsact egress) runs untracked-out
 * and output for packets the host sends; forwarded packets were decided at ingress. fwe_xdp, where it
 * is asked for, drops what untracked-in drops before the kernel makes an skb. Each stage is a
 * flat, forward-only list of rules (see fwe_shared.h) walked with bpf_loop, so the verifier checks
 * the rule step once whatever the size of the ruleset. Needs Linux >= 5.17 (bpf_loop). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/socket.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fwe_shared.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

char LICENSE[] SEC("license") = "GPL";

/* No objection: the hook's next tc filter (another tool's) still sees the packet, as another table's
 * chains do in netfilter after ours accepts. TC_ACT_OK would end the hook's filters there. */
#define FWE_PASS TC_ACT_UNSPEC

/* Named for the meaning of struct fwe_rule: a change of it at the same size bumps the suffix. A build
 * of another meaning then misses its own name's pin and makes all maps anew, instead of attaching
 * programs that read the generation in use (until its flip) as rules they misunderstand. v2: run_flags
 * became a byte, beside the exact runs' prefix lengths. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RULES);
  __type(key, __u32);
  __type(value, struct fwe_rule);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_rules_v2 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_STAGE_COUNT);
  __type(key, __u32);
  __type(value, struct fwe_stage_span);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_stages SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct fwe_config);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS);
  __type(key, __u32);
  __type(value, struct fwe_meta);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FWE_SET_CIDRS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_lpm4_key);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_set4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FWE_SET_CIDRS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_lpm6_key);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_set6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RUN_MEMBERS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_run4_key);
  __type(value, struct fwe_run_member);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_runs4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RUN_MEMBERS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_run6_key);
  __type(value, struct fwe_run_member);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_runs6 SEC(".maps");

/* Address-run members of a family whose members all have one prefix length (FWE_RUN_EXACT4/6). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RUN_MEMBERS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_run4_key);
  __type(value, struct fwe_run_member);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_runs4_exact SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RUN_MEMBERS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_run6_key);
  __type(value, struct fwe_run_member);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_runs6_exact SEC(".maps");

/* Hits of address-run members (see fwe_run_member): shared by the CPUs and added to atomically, so that
 * members cost no memory per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RUN_MEMBERS);
  __type(key, __u32);
  __type(value, struct fwe_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_run_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, struct fwe_iflist_key);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_iflists SEC(".maps");

struct fwe_portset {
  __u8 bits[FWE_PORTSET_BYTES];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_PORTSETS);
  __type(key, __u32);
  __type(value, struct fwe_portset);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_portsets SEC(".maps");

struct fwe_chain_name {
  char name[FWE_NAME_LEN];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_CHAINS);
  __type(key, __u32);
  __type(value, struct fwe_chain_name);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_chains SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RULES);
  __type(key, __u32);
  __type(value, struct fwe_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RULES);
  __type(key, __u32);
  __type(value, struct fwe_limit);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_limits SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, FWE_CT_ENTRIES);
  __type(key, struct fwe_ct4_key);
  __type(value, struct fwe_ct_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_ct4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, FWE_CT_ENTRIES);
  __type(key, struct fwe_ct6_key);
  __type(value, struct fwe_ct_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_ct6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_WHERES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_where_key);
  __type(value, struct fwe_where);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_wheres SEC(".maps");

/* (generation, port run, destination port) -> the run's first rule that names that port. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_RULES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct fwe_portindex_key);
  __type(value, __u32);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_portindex SEC(".maps");

/* Bridge ports by ifindex (struct fwe_port), where br_netfilter hands switched frames to netfilter. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct fwe_port);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_ports SEC(".maps");

/* The verdicts of first fragments, for the fragments after them (parse, later_fragment). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8192);
  __type(key, struct fwe_frag_key);
  __type(value, struct fwe_frag_verdict);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_frags SEC(".maps");

/* The cookie (SO_NETNS_COOKIE) of the network namespace the pins were made in. Pins outlive a deleted
 * namespace; one made later under the same name must not take them, with their flows and qdisc
 * records, for its own. Read and written by fwengine only. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_netns SEC(".maps");

/* Interfaces whose clsact qdisc fwengine created (value 1), so flush removes only those. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u32);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_hooks SEC(".maps");

/* The interfaces fwe_xdp is attached to, with their MAC addresses (written at each apply). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u32);
  __type(value, struct fwe_xdp_link);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_xdp_links SEC(".maps");

/* Log rules' prefixes and levels, per generation (the loader writes them before the flip). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FWE_GENERATIONS* FWE_MAX_LOGS);
  __type(key, __u32);
  __type(value, struct fwe_log_rule);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_logs SEC(".maps");

/* The packets log rules matched (struct fwe_log_event), for fwengine daemon to write to its log. When it
 * is full (nobody reads, or faster than the reader), a packet goes unlogged. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_log SEC(".maps");

/* Bytes of a rejected packet its ICMP error quotes, at most: its IP header and the start of what it
 * carries, which is what the sender needs to find the socket the error is for. */
#define FWE_QUOTE_MAX 128
/* Ethernet + IPv6 + ICMPv6 + the quote, and room to round the quote up to whole words for checksums */
#define FWE_ANSWER_BYTES (ETH_HLEN + 40 + 8 + FWE_QUOTE_MAX + 4)

/* Where a CPU builds the answer to a rejected packet (too big for the stack), and the bucket that limits
 * the ICMP errors it sends, as the kernel limits its own (icmp_msgs_per_sec 1000, burst 50). */
struct fwe_answer_room {
  __u64 credit_ns;
  __u64 last_ns;
  __u8 pad[2]; /* so that the frame's IP header is word-aligned */
  __u8 frame[FWE_ANSWER_BYTES];
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct fwe_answer_room);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_answer SEC(".maps");

/* An answer sent into the host: a TCP reset or ICMP error for a packet the host sent that was rejected on
 * its way out, on the interface it comes through. Ports in network order; for ICMP the error's code. */
struct fwe_answer_key {
  __u32 ifindex;
  __u8 family;
  __u8 proto;
  __u16 sport, dport;
  __u8 code;
  __u8 pad;
  __u8 src[16];
  __u8 dst[16];
};

/* When an answer was sent, and how many hooks may still let it pass: one, or on lo two (out, then in). */
struct fwe_answer_due {
  __u64 at_ns;
  __u32 passes;
  __u32 pad;
};

/* Answers on their way in, with when they were sent: for a second the hooks let them through unjudged
 * (our_answer). The kernel's own answer comes in related to the rejected packet's conntrack entry, which
 * a packet dropped here never got. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 1024);
  __type(key, struct fwe_answer_key);
  __type(value, struct fwe_answer_due);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} fwe_answered SEC(".maps");

struct fwe_pkt {
  __u8 family; /* 4 or 6 */
  __u8 proto;
  __u8 has_ports;
  __u8 ct;
  __u16 sport, dport;       /* host order */
  __u16 ct_sport, ct_dport; /* network order, as in the conntrack keys */
  __u8 icmp_type, icmp_code;
  __u8 has_mac;   /* ingress: the Ethernet source is the sender's */
  __u8 tcp_flags; /* TCP: the header's flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
  __u32 iif, oif, mark;
  __u8 src[16], dst[16];
  __u8 smac[6];
  __u8 rpf_ok;    /* ingress: the reverse-path checks it passes, bits 1 << FWE_RPF_STRICT / FWE_RPF_LOOSE */
  __u8 has_flags; /* TCP: tcp_flags was read */
  __u16 l4;       /* where the transport header starts in the frame */
  __u16 ip_len;   /* the IP packet's length, by its header */
  __u32 frag_id;  /* a fragment's datagram (struct fwe_frag_key) */
  __u8 fragment;  /* FWE_FIRST_FRAGMENT, FWE_LATER_FRAGMENT's, or 0: not a fragment */
};

#define FWE_FIRST_FRAGMENT 1

/* lo's index in every network namespace. */
#define LOOPBACK_IFINDEX 1

/* Counters fwe_xdp holds back per packet; a held key with FWE_HELD_RUN is an address run member's. */
#define FWE_XDP_HELD 8
#define FWE_HELD_RUN 0x80000000u

/* Which of a flow entry's two directions (struct fwe_ct_value.dir) a packet goes (own), and which its
 * replies go (other: the same one when both directions have one tuple, a packet from an address and port
 * to themselves). */
struct fwe_flow_side {
  __u8 own, other;
};

struct fwe_eval {
  struct fwe_pkt pkt;
  __u32 gen;
  __u32 pc, end;
  __u32 bytes;
  __u8 dropped, allow_mark, untracked, mark_changed;
  __u8 ct_known; /* the flow's original direction is in our conntrack already */
  /* The packet's flow in our conntrack (flow_lookup): both directions' fwe_ct_dir bits as found (0: no
   * entry), and which of them the packet's is. */
  __u8 flow_dir[2];
  struct fwe_flow_side flow;
  __u8 ct_reply; /* a reply of a tracked flow: once past the untracked stages, its flow is replied */
  __u8 looped;   /* in on lo, or looped back: the host's own packet, with the entry it got on its way out */
  __u8 need_rpf; /* the generation has rpf rules */
  __u8 reject, reject_code4, reject_code6; /* dropped by a reject: the rule's answer (fwe_rule) */
  __u8 stage;                              /* the stage being run */
  /* fwe_xdp: the counters a packet hits are held here until it is dropped; one it passes is judged, and
   * counted, again by fwe_ingress. held_over: more hits than there is room for (then it passes). */
  __u8 holding, held_count, held_over;
  __u32 held[FWE_XDP_HELD];
};

static __always_inline int has_ports(__u8 proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP || proto == IPPROTO_UDPLITE ||
         proto == IPPROTO_DCCP;
}

/* An ICMP query the kernel's conntrack tracks, or its reply, which the identifier pairs with it (v4: echo
 * 8/0, timestamp 13/14, information 15/16, address mask 17/18; v6: echo 128/129, node information
 * 139/140). */
static __always_inline int is_query_type(__u8 proto, __u8 type) {
  return (proto == IPPROTO_ICMP && (type == 8 || type == 0 || (type >= 13 && type <= 18))) ||
         (proto == IPPROTO_ICMPV6 && (type == 128 || type == 129 || type == 139 || type == 140));
}

static __always_inline int is_query(const struct fwe_pkt* pkt) {
  return is_query_type(pkt->proto, pkt->icmp_type);
}

/* Of those, a reply. */
static __always_inline int is_query_reply(__u8 proto, __u8 type) {
  return (proto == IPPROTO_ICMP && (type == 0 || type == 14 || type == 16 || type == 18)) ||
         (proto == IPPROTO_ICMPV6 && (type == 129 || type == 140));
}

/* The frame as tc (an skb) or XDP hands it over. xdp is a constant at every call, so each program keeps
 * only its own context's fields and helpers. */
static __always_inline void* frame_data(void* ctx, int xdp) {
  return xdp ? (void*)(long)((struct xdp_md*)ctx)->data : (void*)(long)((struct __sk_buff*)ctx)->data;
}
static __always_inline void* frame_end(void* ctx, int xdp) {
  return xdp ? (void*)(long)((struct xdp_md*)ctx)->data_end : (void*)(long)((struct __sk_buff*)ctx)->data_end;
}

/* Whether the first len bytes of the packet are in its linear area, where parse reads them in place;
 * pulls them there if not (rare: the kernel's own stack keeps headers linear; XDP has no more than its
 * first buffer). False for a packet shorter than len. */
static __always_inline int linear(void* ctx, int xdp, __u32 len) {
  if ((long)frame_data(ctx, xdp) + len <= (long)frame_end(ctx, xdp)) return 1;
  if (xdp) return 0;
  struct __sk_buff* skb = ctx;
  return len <= skb->len && bpf_skb_pull_data(skb, len) == 0;
}

/* IPv6 extension headers parse walks past to the transport header, as netfilter does: hop-by-hop,
 * routing, destination options, fragment and AH. A packet with more of them than this is dropped: its
 * transport header, which the host's stack would still find, is not read. */
#define FWE_IPV6_EXTENSIONS 8
#define FWE_UNREADABLE -2
/* A fragment after the first. Only the first fragment carries the transport header: it is judged as
 * netfilter judges the whole datagram once reassembled, and the later ones get its verdict
 * (later_fragment). */
#define FWE_LATER_FRAGMENT -3

static __always_inline int is_ipv6_extension(__u8 next) {
  return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
         next == IPPROTO_FRAGMENT || next == IPPROTO_AH;
}

/* Fills pkt from the headers; returns -1 for what is not IPv4/IPv6 (let through untouched),
 * FWE_LATER_FRAGMENT, or FWE_UNREADABLE (also a first fragment too short to hold the transport header's
 * ports, which a later one could otherwise supply, RFC 1858). The headers are read in place: a helper call
 * and a copy per field cost more than the rest of parsing. XDP (xdp = 1) reads the protocol from the
 * frame (tc: the skb's, the VLAN tag taken off) and leaves IPv6 extension headers to tc: FWE_UNREADABLE. */
static __always_inline int parse(void* ctx, int xdp, struct fwe_pkt* pkt) {
  __u16 protocol;
  /* A copy of the host's own multicast or broadcast looped back to it (dev_loopback_xmit) starts at its IP
   * header: it has no Ethernet header. */
  const __u32 l2 = !xdp && ((struct __sk_buff*)ctx)->pkt_type == PACKET_LOOPBACK ? 0 : ETH_HLEN;
  if (xdp) {
    const struct ethhdr* eth = frame_data(ctx, 1);
    if ((void*)(eth + 1) > frame_end(ctx, 1)) return -1;
    protocol = eth->h_proto;
  } else {
    protocol = (__u16)((struct __sk_buff*)ctx)->protocol;
  }
  __u32 l3_len = protocol == bpf_htons(ETH_P_IP)     ? sizeof(struct iphdr)
                 : protocol == bpf_htons(ETH_P_IPV6) ? sizeof(struct ipv6hdr)
                                                     : 0;
  if (l3_len == 0 || !linear(ctx, xdp, l2 + l3_len)) return -1;
  void* data = frame_data(ctx, xdp);
  void* data_end = frame_end(ctx, xdp);
  if (l2) {
    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > data_end) return -1;
    __builtin_memcpy(pkt->smac, eth->h_source, 6);
  }
  __u32 l4 = 0;
  int fragmented = 0; /* the first fragment of a datagram: more follow */
  if (protocol == bpf_htons(ETH_P_IP)) {
    struct iphdr* ip = data + l2;
    if ((void*)(ip + 1) > data_end) return -1;
    pkt->family = 4;
    pkt->proto = ip->protocol;
    __builtin_memcpy(pkt->src, &ip->saddr, 4);
    __builtin_memcpy(pkt->dst, &ip->daddr, 4);
    pkt->frag_id = ip->id;
    pkt->ip_len = bpf_ntohs(ip->tot_len);
    /* Offset 1 (8 bytes) can only overwrite a TCP header's flags: RFC 1858's overlap. */
    if (ip->frag_off & bpf_htons(0x1fff))
      return (ip->frag_off & bpf_htons(0x1fff)) == bpf_htons(1) && ip->protocol == IPPROTO_TCP
                 ? FWE_UNREADABLE
                 : FWE_LATER_FRAGMENT;
    fragmented = (ip->frag_off & bpf_htons(0x2000)) != 0;
    pkt->fragment = fragmented ? FWE_FIRST_FRAGMENT : 0;
    l4 = l2 + ip->ihl * 4;
  } else {
    struct ipv6hdr* ip6 = data + l2;
    if ((void*)(ip6 + 1) > data_end) return -1;
    pkt->family = 6;
    pkt->proto = ip6->nexthdr;
    __builtin_memcpy(pkt->src, &ip6->saddr, 16);
    __builtin_memcpy(pkt->dst, &ip6->daddr, 16);
    pkt->ip_len = sizeof(struct ipv6hdr) + bpf_ntohs(ip6->payload_len);
    l4 = l2 + sizeof(struct ipv6hdr);
    /* Copied, not read in place: rare, and a packet pointer moved in a loop is more than the verifier
     * follows. XDP leaves them to tc. */
    for (int i = 0; !xdp && i < FWE_IPV6_EXTENSIONS && is_ipv6_extension(pkt->proto); i++) {
      __u8 ext[8];
      /* Cut short: matched as it says, unless a later fragment could bring the rest. */
      if (bpf_skb_load_bytes(ctx, l4, ext, sizeof ext) < 0) return fragmented ? FWE_UNREADABLE : 0;
      const __u8 this_one = pkt->proto;
      pkt->proto = ext[0];
      if (this_one == IPPROTO_FRAGMENT) {
        __builtin_memcpy(&pkt->frag_id, ext + 4, 4);
        if ((ext[2] << 8 | ext[3]) & 0xfff8) return FWE_LATER_FRAGMENT;
        fragmented |= ext[3] & 1;
        pkt->fragment = fragmented ? FWE_FIRST_FRAGMENT : 0;
        l4 += 8;
      } else {
        l4 += this_one == IPPROTO_AH ? (ext[1] + 2) * 4 : (ext[1] + 1) * 8;
      }
    }
    if (is_ipv6_extension(pkt->proto)) return FWE_UNREADABLE;
  }
  /* What parse reads of L4: the ports and, for TCP, the flags; an ICMP header's first 6 bytes. */
  __u32 l4_len = pkt->proto == IPPROTO_TCP                                    ? 14
                 : has_ports(pkt->proto)                                      ? 4
                 : pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6 ? 6
                                                                              : 0;
  pkt->l4 = (__u16)l4;
  if (l4_len == 0) return 0;
  linear(ctx, xdp, l4 + l4_len); /* a shorter packet keeps what it has: the checks below see it */
  data = frame_data(ctx, xdp);
  data_end = frame_end(ctx, xdp);
  __u8* head = data + l4;
  if (has_ports(pkt->proto)) {
    if ((void*)(head + 4) > data_end) return fragmented ? FWE_UNREADABLE : 0;
    pkt->has_ports = 1;
    __builtin_memcpy(&pkt->ct_sport, head, 2);
    __builtin_memcpy(&pkt->ct_dport, head + 2, 2);
    pkt->sport = bpf_ntohs(pkt->ct_sport);
    pkt->dport = bpf_ntohs(pkt->ct_dport);
    if (pkt->proto == IPPROTO_TCP && (void*)(head + 14) <= data_end) {
      pkt->tcp_flags = head[13];
      pkt->has_flags = 1;
    }
  } else if (pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6) {
    if ((void*)(head + 6) > data_end) return fragmented ? FWE_UNREADABLE : 0;
    pkt->icmp_type = head[0];
    pkt->icmp_code = head[1];
    if (is_query(pkt)) { /* the identifier pairs a request with its reply */
      __builtin_memcpy(&pkt->ct_sport, head + 4, 2);
      pkt->ct_dport = pkt->ct_sport;
    }
  }
  return 0;
}

static __always_inline int in_set(__u32 set_id, const struct fwe_pkt* pkt, const __u8* addr) {
  if (pkt->family == 4) {
    struct fwe_lpm4_key key = {.prefixlen = 64, .set_id = bpf_htonl(set_id)};
    __builtin_memcpy(key.addr, addr, 4);
    return bpf_map_lookup_elem(&fwe_set4, &key) != 0;
  }
  struct fwe_lpm6_key key = {.prefixlen = 160, .set_id = bpf_htonl(set_id)};
  __builtin_memcpy(key.addr, addr, 16);
  return bpf_map_lookup_elem(&fwe_set6, &key) != 0;
}

/* A 32-bit word of an address (network order) with only its first `bits` kept, 0 <= bits <= 32. */
static __always_inline __u32 masked_word(const __u8* addr, int bits) {
  __u32 word;
  __builtin_memcpy(&word, addr, 4);
  return word & bpf_htonl((__u32)(~0ull << (32 - bits)));
}

/* The exact maps' lookups, each in a function of its own: inline, the compiler merges each with the
 * trie lookup beside it into one call on a map chosen at run time, which the verifier cannot bind to
 * one map's lookup code (the call then goes through the map's ops: ~10 ns more per packet). */
static __attribute__((noinline)) struct fwe_run_member* exact4_member(const struct fwe_run4_key* key) {
  return bpf_map_lookup_elem(&fwe_runs4_exact, key);
}

static __attribute__((noinline)) struct fwe_run_member* exact6_member(const struct fwe_run6_key* key) {
  return bpf_map_lookup_elem(&fwe_runs6_exact, key);
}

/* The member of an address run this packet can match, if any. */
static __always_inline struct fwe_run_member* run_member(const struct fwe_rule* r,
                                                         const struct fwe_eval* ev) {
  const struct fwe_pkt* pkt = &ev->pkt;
  const __u32 flags = r->run_flags;
  if (!(flags & FWE_RUN_ANY_PORT) && !pkt->has_ports) return 0;
  if (flags & (pkt->family == 4 ? FWE_RUN_NONE4 : FWE_RUN_NONE6)) return 0;
  const __u8* addr = (flags & FWE_RUN_DST) ? pkt->dst : pkt->src;
  const __u32 run = bpf_htonl((ev->gen << 24) | (r->run_id & 0xffffff));
  const __u8 proto = (flags & FWE_RUN_ANY_PROTO) ? 0 : pkt->proto;
  const __u16 port = (flags & FWE_RUN_ANY_PORT) ? 0 : bpf_htons(pkt->dport);
  if (pkt->family == 4) {
    struct fwe_run4_key key = {.prefixlen = 96, .run = run, .proto = proto, .port = port};
    if (flags & FWE_RUN_EXACT4) {
      const int prefix = r->run_prefix4 > 32 ? 32 : r->run_prefix4;
      const __u32 word = masked_word(addr, prefix);
      key.prefixlen = 64 + prefix;
      __builtin_memcpy(key.addr, &word, 4);
      return exact4_member(&key);
    }
    __builtin_memcpy(key.addr, addr, 4);
    return bpf_map_lookup_elem(&fwe_runs4, &key);
  }
  struct fwe_run6_key key = {.prefixlen = 192, .run = run, .proto = proto, .port = port};
  if (flags & FWE_RUN_EXACT6) {
    const int prefix = r->run_prefix6 > 128 ? 128 : r->run_prefix6;
    for (int i = 0; i < 4; i++) {
      const int bits = prefix - 32 * i;
      const __u32 word = masked_word(addr + 4 * i, bits < 0 ? 0 : bits > 32 ? 32 : bits);
      __builtin_memcpy(key.addr + 4 * i, &word, 4);
    }
    key.prefixlen = 64 + prefix;
    return exact6_member(&key);
  }
  __builtin_memcpy(key.addr, addr, 16);
  return bpf_map_lookup_elem(&fwe_runs6, &key);
}

static __always_inline int in_iflist(__u32 gen, __u32 list_id, __u32 ifindex) {
  if (ifindex == 0) return 0;
  struct fwe_iflist_key key = {.gen = gen, .list_id = list_id, .ifindex = ifindex};
  return bpf_map_lookup_elem(&fwe_iflists, &key) != 0;
}

static __always_inline int port_in(__u32 gen, const struct fwe_port_match* m, __u16 port) {
  if (m->bitmap == FWE_NO_BITMAP) return port >= m->lo && port <= m->hi;
  __u32 key = gen * FWE_MAX_PORTSETS + m->bitmap;
  struct fwe_portset* set = bpf_map_lookup_elem(&fwe_portsets, &key);
  if (!set) return 0;
  return (set->bits[(port >> 3) & (FWE_PORTSET_BYTES - 1)] >> (port & 7)) & 1;
}

static __always_inline int addrs_match(const struct fwe_addr_match* m, const struct fwe_pkt* pkt,
                                       const __u8* addr) {
  for (int i = 0; i < FWE_MAX_ADDR_MATCHES; i++)
    if (m[i].used && in_set(m[i].set_id, pkt, addr) == m[i].negate) return 0;
  return 1;
}

static __always_inline int ports_match(__u32 gen, const struct fwe_port_match* m, const struct fwe_pkt* pkt,
                                       __u16 port) {
  for (int i = 0; i < FWE_MAX_PORT_MATCHES; i++) {
    if (!m[i].used) continue;
    if (!pkt->has_ports) return 0;
    if (port_in(gen, &m[i], port) == m[i].negate) return 0;
  }
  return 1;
}

static __always_inline int same_mac(const __u8* a, const __u8* b) {
  int same = 1;
  for (int i = 0; i < 6; i++) same &= a[i] == b[i];
  return same;
}

/* Token bucket: a packet matches while the rule has credit for it; credit grows with time. Last of
 * the criteria, so only packets that match otherwise spend credit. Races between CPUs may let a
 * packet or two more through; a limit here is a rate, not an exact count. */
static __always_inline int under_limit(const struct fwe_rule* r, const struct fwe_eval* ev) {
  __u32 key = ev->gen * FWE_MAX_RULES + ev->pc;
  struct fwe_limit* limit = bpf_map_lookup_elem(&fwe_limits, &key);
  if (!limit) return 0;
  __u64 now = bpf_ktime_get_ns();
  /* Never used (last_ns 0): full, however short the time since boot that now counts. */
  __u64 credit = limit->last_ns ? limit->credit + (now - limit->last_ns) : r->limit_burst_ns;
  if (credit > r->limit_burst_ns) credit = r->limit_burst_ns;
  limit->last_ns = now;
  if (credit < r->limit_cost_ns) {
    limit->credit = credit;
    return 0;
  }
  limit->credit = credit - r->limit_cost_ns;
  return 1;
}

static __always_inline void count(__u32 key, __u32 bytes) {
  struct fwe_counter* c = bpf_map_lookup_elem(&fwe_counters, &key);
  if (!c) return;
  c->packets++;
  c->bytes += bytes;
}

/* An address run member's counter: shared by all CPUs, as its LPM trie's values cannot be per-CPU. */
static __always_inline void count_run_member(__u32 key, __u32 bytes) {
  struct fwe_counter* hits = bpf_map_lookup_elem(&fwe_run_counters, &key);
  if (!hits) return;
  __sync_fetch_and_add(&hits->packets, 1);
  __sync_fetch_and_add(&hits->bytes, bytes);
}

/* A hit: counted now, or held (fwe_xdp) until the packet is dropped. */
static __always_inline void hit_counter(struct fwe_eval* ev, __u32 key) {
  if (!ev->holding) {
    if (key & FWE_HELD_RUN)
      count_run_member(key & ~FWE_HELD_RUN, ev->bytes);
    else
      count(key, ev->bytes);
    return;
  }
  __u8 n = ev->held_count;
  if (n >= FWE_XDP_HELD) {
    ev->held_over = 1;
    return;
  }
  ev->held[n] = key;
  ev->held_count = n + 1;
}

/* A global function: the verifier checks it once, on its own, instead of along every path of step(). */
__attribute__((noinline)) int fwe_rule_matches(const struct fwe_rule* r, struct fwe_eval* ev) {
  if (!r || !ev) return 0;
  const struct fwe_pkt* pkt = &ev->pkt;
  if ((r->flags & FWE_F_NEED_ALLOW) && !ev->allow_mark) return 0;
  if (r->family && r->family != pkt->family) return 0;
  if (r->proto_mode != FWE_TRI_NONE) {
    int in = (r->proto_bits[(pkt->proto >> 6) & 3] >> (pkt->proto & 63)) & 1;
    if (in != (r->proto_mode == FWE_TRI_IS)) return 0;
  }
  if (r->iif_list && in_iflist(ev->gen, r->iif_list, pkt->iif) == r->iif_negate) return 0;
  if (r->oif_list && in_iflist(ev->gen, r->oif_list, pkt->oif) == r->oif_negate) return 0;
  if (!addrs_match(r->src, pkt, pkt->src) || !addrs_match(r->dst, pkt, pkt->dst)) return 0;
  if (!ports_match(ev->gen, r->sport, pkt, pkt->sport) || !ports_match(ev->gen, r->dport, pkt, pkt->dport))
    return 0;
  if (r->icmp_flags & FWE_ICMP_PRESENT) {
    if (pkt->proto != ((r->icmp_flags & FWE_ICMP_V6) ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) return 0;
    int same = (!(r->icmp_flags & FWE_ICMP_TYPE) || r->icmp_type == pkt->icmp_type) &&
               (!(r->icmp_flags & FWE_ICMP_CODE) || r->icmp_code == pkt->icmp_code);
    if (same == !!(r->icmp_flags & FWE_ICMP_NEGATE)) return 0;
  }
  if (r->ct_mask && ((r->ct_mask >> (pkt->ct & 7)) & 1) == r->ct_negate) return 0;
  if (r->mac_mode != FWE_TRI_NONE) {
    if (!pkt->has_mac) return 0; /* out, or in on lo: no Ethernet source, so no MAC match, negated or not */
    int in = 0;
    for (int i = 0; i < FWE_MAX_MACS; i++)
      if (i < r->mac_count && same_mac(r->macs[i], pkt->smac)) in = 1;
    if (in != (r->mac_mode == FWE_TRI_IS)) return 0;
  }
  if (r->mark_mode != FWE_TRI_NONE &&
      ((pkt->mark & r->mark_mask) == r->mark_value) != (r->mark_mode == FWE_TRI_IS))
    return 0;
  if (r->rpf_mode && ((pkt->rpf_ok >> (r->rpf_mode & 7)) & 1) == r->rpf_negate) return 0;
  if (r->flags & FWE_F_ADDR_RUN) {
    /* Last, so that only a packet the rule matches counts for the member's source rule. Runs have no
     * rate limit and are never inverted (compile.cpp). */
    struct fwe_run_member* member = run_member(r, ev);
    if (!member) return 0;
    hit_counter(ev, (ev->gen * FWE_MAX_RUN_MEMBERS + member->counter) | FWE_HELD_RUN);
    return 1;
  }
  return !r->limit_cost_ns || under_limit(r, ev);
}

/* A log rule's record of the packet, into fwe_log. */
static __attribute__((noinline)) void log_packet(const struct fwe_eval* ev, __u8 log) {
  __u32 key = ev->gen * FWE_MAX_LOGS + log - 1;
  const struct fwe_log_rule* rule = bpf_map_lookup_elem(&fwe_logs, &key);
  if (!rule) return;
  struct fwe_log_event* event = bpf_ringbuf_reserve(&fwe_log, sizeof *event, 0);
  if (!event) return;
  const struct fwe_pkt* pkt = &ev->pkt;
  __builtin_memcpy(&event->rule, rule, sizeof *rule);
  event->iif = pkt->iif;
  /* Before routing (raw, mangle prerouting) the kernel log has no output interface yet. */
  event->oif = ev->stage == FWE_STAGE_UNTRACKED_IN || ev->stage == FWE_STAGE_PREDNAT ? 0 : pkt->oif;
  event->mark = pkt->mark;
  event->len = pkt->ip_len;
  event->family = pkt->family;
  event->proto = pkt->proto;
  event->tcp_flags = pkt->has_flags ? pkt->tcp_flags : 0;
  event->icmp_type = pkt->icmp_type;
  event->icmp_code = pkt->icmp_code;
  event->pad[0] = event->pad[1] = event->pad[2] = 0;
  event->sport = pkt->has_ports ? pkt->sport : 0;
  event->dport = pkt->has_ports ? pkt->dport : 0;
  __builtin_memcpy(event->src, pkt->src, 16);
  __builtin_memcpy(event->dst, pkt->dst, 16);
  bpf_ringbuf_submit(event, 0);
}

/* One rule of the current stage; returns 1 to stop the walk. */
static long step(__u32 index, void* data) {
  struct fwe_eval* ev = data;
  __u32 pc = ev->pc;
  (void)index;
  if (pc >= ev->end || pc >= FWE_MAX_RULES) return 1;
  __u32 key = ev->gen * FWE_MAX_RULES + pc;
  struct fwe_rule* r = bpf_map_lookup_elem(&fwe_rules_v2, &key);
  if (!r) return 1;
  if (r->flags & FWE_F_RUN_HEAD) {
    __u32 first = r->run_end;
    if (ev->pkt.has_ports) {
      struct fwe_portindex_key index = {.gen = ev->gen, .run_id = r->run_id, .port = ev->pkt.dport};
      __u32* found = bpf_map_lookup_elem(&fwe_portindex, &index);
      if (found) first = *found;
    }
    if (first != pc) { /* no rule before first can match this packet */
      if (first <= pc) return 1;
      ev->pc = first;
      return 0;
    }
  }
  int hit = fwe_rule_matches(r, ev);
  if (hit && r->rule_index >= 0) hit_counter(ev, key);
  if (r->flags & FWE_F_INVERT) hit = !hit;
  if (!hit) {
    int same_port = (r->flags & FWE_F_IN_RUN) && ev->pkt.has_ports && r->dport[0].lo == ev->pkt.dport;
    ev->pc = same_port && r->next_same > pc ? r->next_same : pc + 1;
    return 0;
  }
  switch (r->op) {
    case FWE_OP_NEXT:
      if (r->log) log_packet(ev, r->log);
      if (r->flags & FWE_F_SET_MARK) {
        ev->pkt.mark = (ev->pkt.mark & ~r->set_mark_mask) | (r->set_mark_value & r->set_mark_mask);
        ev->mark_changed = 1;
      }
      if ((r->flags & FWE_F_NOTRACK) && !ev->looped) { /* a looped packet has its entry already */
        ev->untracked = 1;
        ev->pkt.ct = FWE_CT_UNTRACKED;
      }
      ev->pc = pc + 1;
      return 0;
    case FWE_OP_DONE:
      if (r->flags & FWE_F_GIVE_ALLOW) ev->allow_mark = 1;
      /* fall through */
    case FWE_OP_GOTO:
      if (r->target <= pc) return 1; /* never backwards: the loader emits forward jumps only */
      ev->pc = r->target;
      return 0;
    default:
      ev->dropped = 1;
      ev->reject = r->reject;
      ev->reject_code4 = r->reject_code4;
      ev->reject_code6 = r->reject_code6;
      return 1;
  }
}

/* Runs one stage; returns 1 if it dropped the packet. */
static __always_inline int run_stage(struct fwe_eval* ev, __u32 stage) {
  __u32 key = ev->gen * FWE_STAGE_COUNT + stage;
  struct fwe_stage_span* span = bpf_map_lookup_elem(&fwe_stages, &key);
  if (!span || span->count == 0 || span->count > FWE_MAX_RULES) return 0;
  ev->pc = span->start;
  ev->end = span->start + span->count;
  ev->stage = stage;
  /* The untracked stages stand for the kernel's raw hooks, before conntrack: there a packet has no
   * entry yet, so its state reads invalid (untracked once a notrack rule ran; one conntrack will leave
   * untracked, neighbour discovery, is not yet), as in trace; except a looped packet, which got its
   * entry on the way out. */
  int before_conntrack = (stage == FWE_STAGE_UNTRACKED_IN && !ev->looped) || stage == FWE_STAGE_UNTRACKED_OUT;
  __u8 state = ev->pkt.ct;
  if (before_conntrack && !ev->untracked) ev->pkt.ct = FWE_CT_INVALID;
  bpf_loop(span->count, step, ev, 0);
  if (before_conntrack && !ev->untracked) ev->pkt.ct = state;
  return ev->dropped;
}

/* ICMP query <-> reply: the type the other direction of the exchange carries. */
static __always_inline __u8 query_peer_type(__u8 type) {
  switch (type) {
    case 8:
      return 0;
    case 0:
      return 8;
    case 13:
    case 15:
    case 17:
    case 128:
    case 139:
      return type + 1;
    default: /* 14, 16, 18, 129, 140 */
      return type - 1;
  }
}

/* -1, 0 or 1 as a's first len bytes order before, with or after b's, compared as 32-bit words: any
 * order does, as long as both directions of a flow agree on it. */
static __always_inline int compare_words(const __u8* a, const __u8* b, int len) {
#pragma unroll
  for (int i = 0; i < 16; i += 4) {
    if (i < len) {
      __u32 x, y;
      __builtin_memcpy(&x, a + i, 4);
      __builtin_memcpy(&y, b + i, 4);
      if (x != y) return x < y ? -1 : 1;
    }
  }
  return 0;
}

/* Which of its flow's directions a tuple (as its packet goes) is: the key holds the direction whose
 * (address, port) compares lower, and an ICMP query's request. len: the address length, a constant. */
static __always_inline struct fwe_flow_side side_of(__u8 proto, __u8 query_type, __u16 sport, __u16 dport,
                                                    const __u8* src, const __u8* dst, int len) {
  int turn = 0, same = 0;
  if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
    turn = is_query_reply(proto, query_type);
  } else {
    int order = compare_words(src, dst, len);
    if (!order) order = sport < dport ? -1 : sport > dport;
    turn = order > 0;
    same = order == 0;
  }
  struct fwe_flow_side side = {.own = turn, .other = same ? turn : !turn};
  return side;
}

/* A flow's key (struct fwe_ct4_key) from one direction's tuple, turned round when that is the key's
 * other direction (side_of). */
#define FLOW_KEY(key, side, proto_, query_type_, sport_, dport_, src_, dst_, len)        \
  do {                                                                                   \
    (key).proto = (proto_);                                                              \
    const int turn_ = (side).own;                                                        \
    (key).query_type = turn_ && ((proto_) == IPPROTO_ICMP || (proto_) == IPPROTO_ICMPV6) \
                           ? query_peer_type(query_type_)                                \
                           : (query_type_);                                              \
    (key).sport = turn_ ? (dport_) : (sport_);                                           \
    (key).dport = turn_ ? (sport_) : (dport_);                                           \
    __builtin_memcpy((key).src, turn_ ? (dst_) : (src_), len);                           \
    __builtin_memcpy((key).dst, turn_ ? (src_) : (dst_), len);                           \
  } while (0)

/* The packet's flow key and side. */
#define PACKET_FLOW_KEY(key, side, pkt, len)                                                             \
  do {                                                                                                   \
    const __u8 query_ = is_query(pkt) ? (pkt)->icmp_type : 0;                                            \
    side = side_of((pkt)->proto, query_, (pkt)->ct_sport, (pkt)->ct_dport, (pkt)->src, (pkt)->dst, len); \
    FLOW_KEY(key, side, (pkt)->proto, query_, (pkt)->ct_sport, (pkt)->ct_dport, (pkt)->src, (pkt)->dst,  \
             len);                                                                                       \
  } while (0)

/* Looks the packet's flow up, once per packet, and notes in ev what its entry held (the pointer is not
 * kept: a map value's pointer alive across the stages multiplies the states the verifier walks). */
static __always_inline void flow_lookup(struct fwe_eval* ev) {
  const struct fwe_pkt* pkt = &ev->pkt;
  struct fwe_flow_side side;
  const struct fwe_ct_value* entry;
  if (pkt->family == 4) {
    struct fwe_ct4_key key = {};
    PACKET_FLOW_KEY(key, side, pkt, 4);
    entry = bpf_map_lookup_elem(&fwe_ct4, &key);
  } else {
    struct fwe_ct6_key key = {};
    PACKET_FLOW_KEY(key, side, pkt, 16);
    entry = bpf_map_lookup_elem(&fwe_ct6, &key);
  }
  ev->flow = side;
  if (entry) {
    ev->flow_dir[0] = entry->dir[0];
    ev->flow_dir[1] = entry->dir[1];
  }
}

/* The bits of one direction of the packet's flow as the lookup found them (0: none). Both are read and
 * one is chosen: clang turns an index into an aligned slot into a bitwise or, which the verifier refuses
 * on a pointer. */
static __always_inline __u8 flow_dir(const struct fwe_eval* ev, __u8 which) {
  const __u8 first = ev->flow_dir[0], second = ev->flow_dir[1];
  return which ? second : first;
}

/* Writes the bits a packet changed onto what its flow's entry holds now, in place: another CPU may have
 * set other bits since this packet's lookup (a reply's SEEN_REPLY beside a notracked reply's
 * REPLY_UNTRACKED), which a write of the whole snapshot would take back. */
static __always_inline void apply_change(struct fwe_ct_value* entry, __u8 was0, __u8 now0, __u8 was1,
                                         __u8 now1) {
  const __u8 changed0 = was0 ^ now0, changed1 = was1 ^ now1;
  if (changed0) entry->dir[0] = (entry->dir[0] & ~changed0) | (now0 & changed0);
  if (changed1) entry->dir[1] = (entry->dir[1] & ~changed1) | (now1 & changed1);
}

/* Gives the packet's direction of its flow the bits own, and its replies' direction the bits other. Not
 * inlined: only a change of a flow's state comes here (a new flow, its first reply, a notracked packet),
 * and its keys would grow every program's stack. */
static __attribute__((noinline)) void flow_store(struct fwe_eval* ev, __u8 own, __u8 other) {
  const __u8 was0 = ev->flow_dir[0], was1 = ev->flow_dir[1];
  __u8 first = was0, second = was1;
  if (ev->flow.own)
    second = own;
  else
    first = own;
  if (ev->flow.other) /* in one direction, the other's bits win */
    second = other;
  else
    first = other;
  if (first == was0 && second == was1) return;
  ev->flow_dir[0] = first;
  ev->flow_dir[1] = second;
  const struct fwe_ct_value value = {.dir = {first, second}};
  const struct fwe_pkt* pkt = &ev->pkt;
  const __u8 query_type = is_query(pkt) ? pkt->icmp_type : 0;
  struct fwe_ct_value* entry;
  if (pkt->family == 4) {
    struct fwe_ct4_key key = {};
    FLOW_KEY(key, ev->flow, pkt->proto, query_type, pkt->ct_sport, pkt->ct_dport, pkt->src, pkt->dst, 4);
    entry = bpf_map_lookup_elem(&fwe_ct4, &key);
    if (!entry) {
      bpf_map_update_elem(&fwe_ct4, &key, &value, BPF_ANY);
      return;
    }
  } else {
    struct fwe_ct6_key key = {};
    FLOW_KEY(key, ev->flow, pkt->proto, query_type, pkt->ct_sport, pkt->ct_dport, pkt->src, pkt->dst, 16);
    entry = bpf_map_lookup_elem(&fwe_ct6, &key);
    if (!entry) {
      bpf_map_update_elem(&fwe_ct6, &key, &value, BPF_ANY);
      return;
    }
  }
  apply_change(entry, was0, first, was1, second);
}

/* ICMP in its own family's packets (not ICMPv6 in IPv4, nor ICMP in IPv6, which the kernel's conntrack
 * takes for invalid). */
static __always_inline int own_family_icmp(const struct fwe_pkt* pkt) {
  return pkt->proto == (pkt->family == 6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
}

/* ICMP other than a tracked query is no flow: its key would be the two addresses alone, so that anything
 * one host sent the other would make every ICMP type back established. */
static __always_inline int ct_flowless(const struct fwe_pkt* pkt) {
  return (pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6) &&
         (!own_family_icmp(pkt) || !is_query(pkt));
}

/* The state of flowless ICMP that is no error, as the kernel's conntrack gives it: ICMPv6 neighbour
 * discovery and multicast listener messages (130-136, 143) it leaves untracked; the rest (an IPv4
 * router advertisement, an ICMPv6 redirect, a type it does not know, another family's ICMP) cannot
 * start a connection and is invalid. */
static __always_inline __u8 flowless_state(const struct fwe_pkt* pkt) {
  const __u8 type = pkt->icmp_type;
  return pkt->proto == IPPROTO_ICMPV6 && own_family_icmp(pkt) && ((type >= 130 && type <= 136) || type == 143)
             ? FWE_CT_UNTRACKED
             : FWE_CT_INVALID;
}

/* An ICMP error (v4: unreachable, source quench, redirect, time exceeded, parameter problem; v6: any
 * type below 128), which quotes the packet it is about. */
static __always_inline int is_icmp_error(const struct fwe_pkt* pkt) {
  if (!own_family_icmp(pkt)) return 0;
  if (pkt->proto == IPPROTO_ICMP)
    return pkt->icmp_type == 3 || pkt->icmp_type == 4 || pkt->icmp_type == 5 || pkt->icmp_type == 11 ||
           pkt->icmp_type == 12;
  return pkt->icmp_type < 128;
}

/* The ports (network order) of the quoted packet's flow as the conntrack keys hold them, and for an
 * ICMP query its type; 0 if too little of it is quoted to tell. */
static __always_inline int quoted_flow(struct __sk_buff* skb, __u32 at, __u8 proto, __u16* sport,
                                       __u16* dport, __u8* query_type) {
  __u8 l4[8];
  if (has_ports(proto)) {
    if (bpf_skb_load_bytes(skb, at, l4, 4) < 0) return 0;
    __builtin_memcpy(sport, l4, 2);
    __builtin_memcpy(dport, l4 + 2, 2);
    return 1;
  }
  if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
    if (bpf_skb_load_bytes(skb, at, l4, 8) < 0) return 0;
    if (!is_query_type(proto, l4[0]))
      return 0; /* about an ICMP packet of no flow: the kernel relates it to none */
    *query_type = l4[0];
    __builtin_memcpy(sport, l4 + 4, 2);
    __builtin_memcpy(dport, l4 + 4, 2);
    return 1;
  }
  return 1; /* no ports: the flow is keyed by addresses and protocol */
}

static __always_inline int same_address(const __u8* a, const __u8* b, int len) {
  __u8 differ = 0;
#pragma unroll
  for (int i = 0; i < 16; i++)
    if (i < len) differ |= a[i] ^ b[i];
  return differ == 0;
}

/* As the kernel's conntrack: an ICMP error is related to the flow of the packet it quotes, in either
 * direction, if it is addressed to that packet's sender; one that quotes no flow tracked here (a
 * notracked one included), a later fragment, or too little of a packet to tell, is invalid. */
static __always_inline __u8 error_state(struct __sk_buff* skb, const struct fwe_pkt* pkt) {
  const __u32 at = pkt->l4 + 8; /* the quoted packet, behind the ICMP header */
  struct fwe_flow_side quoted;
  const struct fwe_ct_value* entry;
  __u16 sport = 0, dport = 0;
  __u8 query_type = 0;
  if (pkt->family == 4) {
    __u8 ip[20];
    if (bpf_skb_load_bytes(skb, at, ip, sizeof ip) < 0 || (ip[0] & 0x0f) < 5) return FWE_CT_INVALID;
    if (((ip[6] & 0x1f) | ip[7]) != 0 || !same_address(ip + 12, pkt->dst, 4)) return FWE_CT_INVALID;
    if (!quoted_flow(skb, at + (ip[0] & 0x0f) * 4, ip[9], &sport, &dport, &query_type)) return FWE_CT_INVALID;
    quoted = side_of(ip[9], query_type, sport, dport, ip + 12, ip + 16, 4);
    struct fwe_ct4_key key = {};
    FLOW_KEY(key, quoted, ip[9], query_type, sport, dport, ip + 12, ip + 16, 4);
    entry = bpf_map_lookup_elem(&fwe_ct4, &key);
  } else {
    __u8 ip6[40];
    if (bpf_skb_load_bytes(skb, at, ip6, sizeof ip6) < 0 || !same_address(ip6 + 8, pkt->dst, 16))
      return FWE_CT_INVALID;
    /* Past the quoted packet's extension headers, as parse walks a packet's own. */
    __u8 next = ip6[6];
    __u32 l4 = at + 40;
    for (int i = 0; i < FWE_IPV6_EXTENSIONS && is_ipv6_extension(next); i++) {
      __u8 ext[8];
      if (bpf_skb_load_bytes(skb, l4, ext, sizeof ext) < 0) return FWE_CT_INVALID;
      if (next == IPPROTO_FRAGMENT && ((ext[2] << 8 | ext[3]) & 0xfff8)) return FWE_CT_INVALID;
      l4 += next == IPPROTO_FRAGMENT ? 8 : next == IPPROTO_AH ? (ext[1] + 2) * 4 : (ext[1] + 1) * 8;
      next = ext[0];
    }
    if (is_ipv6_extension(next)) return FWE_CT_INVALID;
    if (!quoted_flow(skb, l4, next, &sport, &dport, &query_type)) return FWE_CT_INVALID;
    quoted = side_of(next, query_type, sport, dport, ip6 + 8, ip6 + 24, 16);
    struct fwe_ct6_key key = {};
    FLOW_KEY(key, quoted, next, query_type, sport, dport, ip6 + 8, ip6 + 24, 16);
    entry = bpf_map_lookup_elem(&fwe_ct6, &key);
  }
  if (!entry) return FWE_CT_INVALID;
  const __u8 dir = quoted.own ? entry->dir[1] : entry->dir[0];
  return (dir & FWE_DIR_KNOWN) && !(dir & FWE_DIR_UNTRACKED) ? FWE_CT_RELATED : FWE_CT_INVALID;
}

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_URG 0x20

/* As the kernel's TCP conntrack (tcp_error): a combination of FIN, SYN, RST, ACK and URG that no TCP
 * sends (a NULL or Xmas scan's) is invalid, with an entry or without. */
static __always_inline int tcp_flags_invalid(const struct fwe_pkt* pkt) {
  if (pkt->proto != IPPROTO_TCP || !pkt->has_flags) return 0;
  switch (pkt->tcp_flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG)) {
    case TCP_SYN:
    case TCP_SYN | TCP_URG:
    case TCP_SYN | TCP_ACK:
    case TCP_RST:
    case TCP_RST | TCP_ACK:
    case TCP_FIN | TCP_ACK:
    case TCP_FIN | TCP_ACK | TCP_URG:
    case TCP_ACK:
    case TCP_ACK | TCP_URG:
      return 0;
    default:
      return 1;
  }
}

/* A packet that cannot start a flow, as the kernel's conntrack has it (tcp_new, and icmp_new's requests):
 * a SYN+ACK, a FIN or an RST, an ICMP query's reply. A SYN starts one, and so does an ACK
 * (nf_conntrack_tcp_loose picks a connection up midway). */
static __always_inline int cannot_start(const struct fwe_pkt* pkt) {
  if (pkt->proto == IPPROTO_TCP)
    return pkt->has_flags && ((pkt->tcp_flags & (TCP_FIN | TCP_RST)) ||
                              (pkt->tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK));
  return is_query_reply(pkt->proto, pkt->icmp_type);
}

/* Our own conntrack: a reply of an allowed flow is established; the original direction becomes
 * established once a reply has been seen, as in the kernel's conntrack. An ICMP error is related to the
 * flow it quotes (error_state). Everything else is new. */
static __always_inline __u8 ct_state_of(struct __sk_buff* skb, struct fwe_eval* ev) {
  const struct fwe_pkt* pkt = &ev->pkt;
  if (is_icmp_error(pkt)) return error_state(skb, pkt);
  if (ct_flowless(pkt)) return flowless_state(pkt);
  flow_lookup(ev);
  if (tcp_flags_invalid(pkt)) return FWE_CT_INVALID;
  const __u8 own = flow_dir(ev, ev->flow.own);
  /* No entry: new, whatever it is. The kernel would take a SYN+ACK, FIN or RST (cannot_start) for
   * invalid, but here it may be the reply of a flow another program's NAT rewrote (Docker, kube-proxy),
   * which the kernel's conntrack knows under the addresses this map has not seen. */
  if (!(own & FWE_DIR_KNOWN)) return FWE_CT_NEW;
  if (own & FWE_DIR_UNTRACKED) {
    /* A notracked packet back in on lo; anywhere else a later packet of a notracked flow, which the
     * kernel has no entry for: a packet of its own. */
    if (!(own & FWE_DIR_REPLY)) return ev->looped ? FWE_CT_UNTRACKED : FWE_CT_NEW;
    /* The reply of a notracked flow: the kernel has no entry, so it meets conntrack as a packet of its
     * own, which a SYN+ACK or an ICMP query's reply cannot start. */
    return cannot_start(pkt) ? FWE_CT_INVALID : FWE_CT_NEW;
  }
  if (!(own & FWE_DIR_REPLY)) {
    ev->ct_known = 1;
    if (own & FWE_DIR_SEEN_REPLY) return FWE_CT_ESTABLISHED;
    /* A TCP flow whose SYN+ACK went notracked: the kernel's entry is still waiting for it and takes
     * anything but a repeated SYN for invalid. (Otherwise new: the reply may have come under addresses
     * the kernel's NAT maps, which this map does not know.) */
    if ((own & FWE_DIR_REPLY_UNTRACKED) && pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & 0x17) != 0x02)
      return FWE_CT_INVALID;
    return FWE_CT_NEW;
  }
  ev->ct_reply = 1;
  return FWE_CT_ESTABLISHED;
}

/* Where the kernel's conntrack comes, after the untracked stages: a reply that was not notracked there
 * makes its flow replied, so the original direction is established from now on. */
static __always_inline void ct_see_reply(struct fwe_eval* ev) {
  if (!ev->ct_reply || ev->untracked) return;
  const __u8 original = flow_dir(ev, ev->flow.other);
  if (original & FWE_DIR_KNOWN) flow_store(ev, flow_dir(ev, ev->flow.own), original | FWE_DIR_SEEN_REPLY);
}

static __always_inline void ct_commit(struct fwe_eval* ev) {
  if (ct_flowless(&ev->pkt)) return;
  __u8 own = flow_dir(ev, ev->flow.own), other = flow_dir(ev, ev->flow.other);
  if (ev->untracked) {
    /* A marker for its reply (which the kernel has no entry for), and, out on lo, for the packet's
     * own way back in, untracked as the kernel's is. */
    if (ev->pkt.oif == LOOPBACK_IFINDEX) {
      own = FWE_DIR_KNOWN | FWE_DIR_UNTRACKED;
      if (ev->flow.own == ev->flow.other) other = own;
    }
    /* Not over a tracked flow's entry, which the kernel keeps: the notracked packet was its reply
     * (which the entry notes), or went its original way (a notrack rule added while the flow lives),
     * whose replies stay established. */
    if ((other & FWE_DIR_KNOWN) && !(other & FWE_DIR_UNTRACKED)) {
      if (!(other & FWE_DIR_REPLY)) other |= FWE_DIR_REPLY_UNTRACKED;
    } else {
      other = FWE_DIR_KNOWN | FWE_DIR_UNTRACKED | FWE_DIR_REPLY;
    }
  } else if (ev->pkt.ct == FWE_CT_NEW && !ev->ct_known) {
    /* (A known flow's reply direction is in its entry already: the two are never evicted apart.) */
    own = FWE_DIR_KNOWN;
    other = FWE_DIR_KNOWN | FWE_DIR_REPLY;
  } else {
    return;
  }
  flow_store(ev, own, other);
}

/* To a multicast address or to IPv4's limited broadcast (255.255.255.255). */
static __always_inline int to_group(const struct fwe_pkt* pkt) {
  if (pkt->family != 4) return pkt->dst[0] == 0xff;
  return (pkt->dst[0] & 0xf0) == 0xe0 || (pkt->dst[0] & pkt->dst[1] & pkt->dst[2] & pkt->dst[3]) == 0xff;
}

/* The interface a packet arriving on iif will be forwarded to, or 0 if it is for this host (or cannot be
 * routed, in which case the kernel drops it anyway). ctx: the program's, skb or XDP. */
static __always_inline __u32 route_out(void* ctx, __u32 iif, const struct fwe_pkt* pkt) {
  /* The kernel's input routing takes these in (or drops them) before it looks at a route, but
   * bpf_fib_lookup has no such case and gives them the default route's way out. */
  if (to_group(pkt)) return 0;
  struct bpf_fib_lookup fib = {};
  fib.ifindex = iif;
  fib.l4_protocol = pkt->proto;
  fib.sport = pkt->ct_sport;
  fib.dport = pkt->ct_dport;
  if (pkt->family == 4) {
    fib.family = AF_INET;
    __builtin_memcpy(&fib.ipv4_src, pkt->src, 4);
    __builtin_memcpy(&fib.ipv4_dst, pkt->dst, 4);
  } else {
    fib.family = AF_INET6;
    __builtin_memcpy(fib.ipv6_src, pkt->src, 16);
    __builtin_memcpy(fib.ipv6_dst, pkt->dst, 16);
  }
  long rc = bpf_fib_lookup(ctx, &fib, sizeof fib, 0);
  /* FRAG_NEEDED: larger than the way out's MTU, a forwarded packet all the same: fragmented, or, when it
   * may not be, answered with Packet Too Big by the forwarding path (before netfilter's forward hook,
   * which this program runs: where forward drops it, no answer goes back). */
  if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
    return fib.ifindex;
  return 0;
}

#define FWE_RPF_ALL ((1 << FWE_RPF_STRICT) | (1 << FWE_RPF_LOOSE))

/* The reverse-path checks a packet arriving on pkt->iif passes (trace's reverse_path_ok). The route back
 * to its source is looked up as the kernel's rp_filter does: addresses swapped, as if input from lo, so
 * nothing restricts the lookup to one interface. The kernel looks nothing up unless forwarding is on for
 * lo (FWD_DISABLED); then every packet passes, rather than none (README.md). */
static __always_inline __u8 reverse_path(void* ctx, const struct fwe_pkt* pkt) {
  if (pkt->iif == LOOPBACK_IFINDEX) return FWE_RPF_ALL; /* the host's own packet */
  struct bpf_fib_lookup fib = {};
  fib.ifindex = LOOPBACK_IFINDEX;
  fib.l4_protocol = pkt->proto;
  fib.sport = pkt->ct_dport;
  fib.dport = pkt->ct_sport;
  if (pkt->family == 4) {
    __u32 src, dst;
    __builtin_memcpy(&src, pkt->src, 4);
    __builtin_memcpy(&dst, pkt->dst, 4);
    /* DHCP: from 0.0.0.0 to a broadcast or link-local multicast address */
    if (src == 0 && (dst == 0xffffffff || (dst & bpf_htonl(0xffffff00)) == bpf_htonl(0xe0000000)))
      return FWE_RPF_ALL;
    fib.family = AF_INET;
    fib.ipv4_dst = src;
    fib.ipv4_src = dst;
  } else {
    /* A link-local source is on-link on the interface it came in on (nft looks it up there); the
     * helper would refuse it (NOT_FWDED). */
    if (pkt->src[0] == 0xfe && (pkt->src[1] & 0xc0) == 0x80) return FWE_RPF_ALL;
    fib.family = AF_INET6;
    __builtin_memcpy(fib.ipv6_dst, pkt->src, 16);
    __builtin_memcpy(fib.ipv6_src, pkt->dst, 16);
  }
  /* No BPF_FIB_LOOKUP_SKIP_NEIGH: it needs Linux 6.3, and NO_NEIGH answers the same (the route's device
   * is filled in before the neighbour is looked for). */
  long rc = bpf_fib_lookup(ctx, &fib, sizeof fib, 0);
  if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED) return FWE_RPF_ALL;
  /* FRAG_NEEDED: a route whose device's MTU is below this packet's size, a route all the same; NO_NEIGH:
   * a route whose next hop's address is not resolved yet. Local, unreachable, blackhole and prohibit
   * routes (and none) are no way back. */
  if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
    return 0;
  return (1 << FWE_RPF_LOOSE) | (fib.ifindex == pkt->iif ? 1 << FWE_RPF_STRICT : 0);
}

static __always_inline int start(struct __sk_buff* skb, struct fwe_eval* ev) {
  int parsed = parse(skb, 0, &ev->pkt);
  if (parsed < 0) return parsed;
  __u32 zero = 0;
  struct fwe_config* cfg = bpf_map_lookup_elem(&fwe_config, &zero);
  if (!cfg) return -1;
  ev->gen = cfg->active_gen & 1;
  ev->need_rpf = (cfg->rpf_gens >> ev->gen) & 1;
  ev->pkt.mark = skb->mark;
  ev->bytes = skb->len;
  ev->pkt.ct = ct_state_of(skb, ev);
  return 0;
}

static __always_inline void frag_key_of(const struct fwe_pkt* pkt, struct fwe_frag_key* key) {
  key->id = pkt->frag_id;
  key->family = pkt->family;
  key->proto = pkt->family == 4 ? pkt->proto : 0;
  __builtin_memcpy(key->src, pkt->src, 16);
  __builtin_memcpy(key->dst, pkt->dst, 16);
}

/* A first fragment's verdict, for the fragments after it. */
static __always_inline void remember_first_fragment(const struct fwe_eval* ev, int passed) {
  if (ev->pkt.fragment != FWE_FIRST_FRAGMENT) return;
  struct fwe_frag_key key = {};
  frag_key_of(&ev->pkt, &key);
  struct fwe_frag_verdict verdict = {
      .at_ns = bpf_ktime_get_ns(), .mark = ev->pkt.mark, .passed = passed, .set_mark = ev->mark_changed};
  bpf_map_update_elem(&fwe_frags, &key, &verdict, BPF_ANY);
}

/* A later fragment gets its first fragment's verdict (and mark). Without one: on its way out of the host,
 * whose fragments leave in order, it is dropped; coming in, where fragments may come out of order, it
 * passes, since nobody can reassemble its datagram without the first fragment, judged when it comes. */
static __always_inline int later_fragment(struct __sk_buff* skb, const struct fwe_pkt* pkt, int in_order) {
  struct fwe_frag_key key = {};
  frag_key_of(pkt, &key);
  const struct fwe_frag_verdict* first = bpf_map_lookup_elem(&fwe_frags, &key);
  /* Older than the kernel gives a datagram to be reassembled (ipfrag_time: 30 s; IPv6 60 s): its
   * identification is another datagram's now. */
  const __u64 lifetime_ns = (pkt->family == 4 ? 30ull : 60ull) * 1000000000ull;
  if (first && bpf_ktime_get_ns() - first->at_ns > lifetime_ns) first = 0;
  if (!first) return in_order ? TC_ACT_SHOT : FWE_PASS;
  if (!first->passed) return TC_ACT_SHOT;
  if (first->set_mark) skb->mark = first->mark;
  return FWE_PASS;
}

/* What becomes of a packet start() did not make ready for the stages. */
static __always_inline int unstarted(struct __sk_buff* skb, const struct fwe_eval* ev, int started,
                                     int in_order) {
  if (started == FWE_LATER_FRAGMENT) return later_fragment(skb, &ev->pkt, in_order);
  if (started != FWE_UNREADABLE) return FWE_PASS;
  remember_first_fragment(ev, 0);
  return TC_ACT_SHOT;
}

/* Where the answer to a rejected packet goes: back out of the interface the packet came in on, or into
 * the host, which sent it; none for a frame switched across a bridge (dropped). */
enum fwe_answer_way { FWE_ANSWER_NONE, FWE_ANSWER_OUT, FWE_ANSWER_IN };

/* Whether a rejected packet gets an answer, as the kernel's reject and icmp_send decide: not one to or
 * from a broadcast or multicast address or from no address, not an ICMP error or redirect (no error
 * about an error), not a reset. */
static __always_inline int answerable(const struct __sk_buff* skb, const struct fwe_pkt* pkt) {
  /* A looped-back copy went to a broadcast or multicast address too (a subnet's broadcast among them). */
  if (skb->pkt_type == PACKET_BROADCAST || skb->pkt_type == PACKET_MULTICAST ||
      skb->pkt_type == PACKET_LOOPBACK)
    return 0;
  if (is_icmp_error(pkt) || (own_family_icmp(pkt) && pkt->proto == IPPROTO_ICMPV6 && pkt->icmp_type == 137))
    return 0;
  if (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & TCP_RST)) return 0;
  if (pkt->family == 4) {
    __u32 src;
    __builtin_memcpy(&src, pkt->src, 4);
    /* An IPv4 header shorter than its minimum is one the kernel drops before netfilter. */
    if (pkt->l4 < ETH_HLEN + sizeof(struct iphdr)) return 0;
    return src != 0 && pkt->src[0] < 224 && pkt->dst[0] < 224; /* 224/3: multicast, reserved, broadcast */
  }
  __u8 any = 0;
#pragma unroll
  for (int i = 0; i < 16; i++) any |= pkt->src[i];
  return any != 0 && pkt->src[0] != 0xff && pkt->dst[0] != 0xff;
}

/* The ICMP bucket: one error costs 1 ms of credit, 50 ms saved up at most. */
static __always_inline int icmp_allowed(struct fwe_answer_room* room) {
  const __u64 cost = 1000000ull, burst = 50 * cost;
  const __u64 now = bpf_ktime_get_ns();
  __u64 credit = room->credit_ns + (now - room->last_ns);
  if (credit > burst) credit = burst;
  room->last_ns = now;
  if (credit < cost) {
    room->credit_ns = credit;
    return 0;
  }
  room->credit_ns = credit - cost;
  return 1;
}

static __always_inline __u16 csum_fold(__s64 sum) {
  __u32 s = (__u32)sum;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return (__u16)~s;
}

/* The answer's IP header (swapped addresses) at frame + ETH_HLEN; l3_payload: the bytes behind it. */
static __always_inline void answer_ip_header(__u8* frame, const struct fwe_pkt* pkt, __u8 proto,
                                             __u32 l3_payload) {
  if (pkt->family == 4) {
    struct iphdr* ip = (void*)(frame + ETH_HLEN);
    *(__u16*)ip = bpf_htons(0x4500 | (proto == IPPROTO_ICMP ? 0xc0 : 0)); /* ICMP: internetwork control */
    ip->tot_len = bpf_htons(sizeof(struct iphdr) + l3_payload);
    ip->id = 0;
    ip->frag_off = proto == IPPROTO_TCP ? bpf_htons(0x4000) : 0; /* a reset may not be fragmented */
    ip->ttl = 64;
    ip->protocol = proto;
    ip->check = 0;
    __builtin_memcpy(&ip->saddr, pkt->dst, 4);
    __builtin_memcpy(&ip->daddr, pkt->src, 4);
    ip->check = csum_fold(bpf_csum_diff(0, 0, (void*)ip, sizeof(struct iphdr), 0));
    return;
  }
  struct ipv6hdr* ip6 = (void*)(frame + ETH_HLEN);
  *(__u32*)ip6 = bpf_htonl(0x60000000);
  ip6->payload_len = bpf_htons(l3_payload);
  ip6->nexthdr = proto;
  ip6->hop_limit = 64;
  __builtin_memcpy(&ip6->saddr, pkt->dst, 16);
  __builtin_memcpy(&ip6->daddr, pkt->src, 16);
}

/* The checksum a transport header needs: its pseudo-header, then len bytes from l4 (a multiple of 4). */
static __always_inline __u16 l4_checksum(const struct fwe_pkt* pkt, __u8 proto, __u8* l4, __u32 len,
                                         __u32 l4_length) {
  __s64 sum;
  if (pkt->family == 4) {
    if (proto == IPPROTO_ICMP)
      return csum_fold(bpf_csum_diff(0, 0, (void*)l4, len, 0)); /* no pseudo-header */
    __u8 pseudo[12] = {};
    __builtin_memcpy(pseudo, pkt->dst, 4);
    __builtin_memcpy(pseudo + 4, pkt->src, 4);
    pseudo[9] = proto;
    pseudo[10] = l4_length >> 8;
    pseudo[11] = l4_length & 0xff;
    sum = bpf_csum_diff(0, 0, (void*)pseudo, sizeof pseudo, 0);
  } else {
    __u8 pseudo[40] = {};
    __builtin_memcpy(pseudo, pkt->dst, 16);
    __builtin_memcpy(pseudo + 16, pkt->src, 16);
    pseudo[34] = l4_length >> 8;
    pseudo[35] = l4_length & 0xff;
    pseudo[39] = proto;
    sum = bpf_csum_diff(0, 0, (void*)pseudo, sizeof pseudo, 0);
  }
  return csum_fold(bpf_csum_diff(0, 0, (void*)l4, len, (__u32)sum));
}

/* A TCP reset for a TCP packet, as the kernel's reject makes it (nf_reject_ip_tcphdr_put): from the
 * packet's acknowledgment number if it acknowledges, else acknowledging all it carried. Returns the
 * frame's length, 0 if there is no answer. */
static __always_inline __u32 reset_frame(struct __sk_buff* skb, const struct fwe_pkt* pkt, __u8* frame) {
  __u8 th[20];
  if (bpf_skb_load_bytes(skb, pkt->l4, th, sizeof th) < 0) return 0;
  const __u32 ip_len = pkt->ip_len;
  const __u32 headers = (pkt->l4 - ETH_HLEN) + (th[12] >> 4) * 4;
  const __u32 carried = ip_len > headers ? ip_len - headers : 0;
  const __u32 l3_len = pkt->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  __u8* rst = frame + ETH_HLEN + l3_len;
  __builtin_memset(rst, 0, 20);
  __builtin_memcpy(rst, th + 2, 2); /* ports swapped */
  __builtin_memcpy(rst + 2, th, 2);
  if (th[13] & TCP_ACK) {
    __builtin_memcpy(rst + 4, th + 8, 4);
    rst[13] = TCP_RST;
  } else {
    __u32 seq;
    __builtin_memcpy(&seq, th + 4, 4);
    seq = bpf_htonl(bpf_ntohl(seq) + carried + !!(th[13] & TCP_SYN) + !!(th[13] & TCP_FIN));
    __builtin_memcpy(rst + 8, &seq, 4);
    rst[13] = TCP_RST | TCP_ACK;
  }
  rst[12] = 5 << 4;
  answer_ip_header(frame, pkt, IPPROTO_TCP, 20);
  const __u16 check = l4_checksum(pkt, IPPROTO_TCP, rst, 20, 20);
  __builtin_memcpy(rst + 16, &check, 2);
  return ETH_HLEN + l3_len + 20;
}

/* An ICMP (v6: ICMPv6) destination unreachable with the given code, quoting the start of the packet.
 * Returns the frame's length, 0 if there is no answer. */
static __always_inline __u32 unreachable_frame(struct __sk_buff* skb, const struct fwe_pkt* pkt, __u8* frame,
                                               __u8 code) {
  const int v4 = pkt->family == 4;
  const __u32 ip_len = pkt->ip_len;
  if (skb->len <= ETH_HLEN) return 0;
  __u32 available = skb->len - ETH_HLEN;
  if (available > ip_len) available = ip_len; /* not the link's padding */
  if (available > FWE_QUOTE_MAX) available = FWE_QUOTE_MAX;
  if (available < (__u32)(pkt->l4 - ETH_HLEN) + 8 && available < ip_len) return 0; /* too long a header */
  /* Bounded again where the verifier sees it: in the register the helpers get. */
  __u64 quote = available & 0xff;
  asm volatile("" : "+r"(quote));
  if (quote < 20 || quote > FWE_QUOTE_MAX) return 0;
  const __u32 l3_len = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
  __u8* icmp = frame + ETH_HLEN + l3_len;
  __u8* quoted = icmp + 8;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, quoted, quote) < 0) return 0;
  /* zeros up to the next whole word, which the checksum adds up */
  quoted[quote] = 0;
  quoted[quote + 1] = 0;
  quoted[quote + 2] = 0;
  __builtin_memset(icmp, 0, 8);
  icmp[0] = v4 ? 3 : 1; /* destination unreachable */
  icmp[1] = code;
  const __u8 proto = v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  answer_ip_header(frame, pkt, proto, 8 + quote);
  const __u16 check = l4_checksum(pkt, proto, icmp, (8 + quote + 3) & ~3u, 8 + quote);
  __builtin_memcpy(icmp + 2, &check, 2);
  return ETH_HLEN + l3_len + 8 + quote;
}

/* Noted before an answer goes into the host, so that the hooks it passes let it through (our_answer). */
static __always_inline void expect_answer(const struct fwe_pkt* pkt, __u32 ifindex, __u8 proto, __u8 code) {
  struct fwe_answer_key key = {.ifindex = ifindex, .family = pkt->family, .proto = proto};
  if (proto == IPPROTO_TCP) {
    key.sport = pkt->ct_dport;
    key.dport = pkt->ct_sport;
  } else {
    key.code = code;
  }
  __builtin_memcpy(key.src, pkt->dst, 16);
  __builtin_memcpy(key.dst, pkt->src, 16);
  struct fwe_answer_due due = {.at_ns = bpf_ktime_get_ns(), .passes = ifindex == LOOPBACK_IFINDEX ? 2 : 1};
  bpf_map_update_elem(&fwe_answered, &key, &due, BPF_ANY);
}

/* A rejected packet becomes its own answer (a TCP reset, or an ICMP error) and goes back the way it
 * came, as the kernel's reject answers; dropped when it gets none. */
static __attribute__((noinline)) int answer(struct __sk_buff* skb, const struct fwe_eval* ev, __u32 way) {
  const struct fwe_pkt* pkt = &ev->pkt;
  if (!answerable(skb, pkt)) return TC_ACT_SHOT;
  __u32 zero = 0;
  struct fwe_answer_room* room = bpf_map_lookup_elem(&fwe_answer, &zero);
  if (!room) return TC_ACT_SHOT;
  __u8* frame = room->frame;
  /* Ethernet: to the sender from the address it sent to */
  if (bpf_skb_load_bytes(skb, 6, frame, 6) < 0 || bpf_skb_load_bytes(skb, 0, frame + 6, 6) < 0)
    return TC_ACT_SHOT;
  /* A group address on either side: a broadcast (a directed one too: the host's own goes out to
   * ff:ff:ff:ff:ff:ff) or multicast, which icmp_send does not answer (RTCF_BROADCAST/MULTICAST). */
  if ((frame[0] | frame[6]) & 1) return TC_ACT_SHOT;
  __u16 h_proto = (__u16)skb->protocol;
  __builtin_memcpy(frame + 12, &h_proto, 2);
  const int reset = ev->reject == FWE_REJECT_TCP_RESET && pkt->proto == IPPROTO_TCP;
  if (!reset && !icmp_allowed(room)) return TC_ACT_SHOT;
  const __u8 code = pkt->family == 4 ? ev->reject_code4 : ev->reject_code6;
  __u32 len = reset ? reset_frame(skb, pkt, frame) : unreachable_frame(skb, pkt, frame, code);
  if (len == 0 || len > FWE_ANSWER_BYTES) return TC_ACT_SHOT;
  /* The helper made for answers: it also drops the packet's offload state (GSO, checksum). */
  if (bpf_skb_change_tail(skb, len, 0) < 0 || bpf_skb_store_bytes(skb, 0, frame, len, 0) < 0)
    return TC_ACT_SHOT;
  const __u8 proto = reset ? IPPROTO_TCP : pkt->family == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  /* On lo the answer goes out to come back in, as the host's own packets do: sent straight in, it would
   * come without the route it has (for 127.0.0.0/8, none is found). Both hooks let it pass. */
  const int loopback = skb->ifindex == LOOPBACK_IFINDEX;
  if (way == FWE_ANSWER_IN || loopback) expect_answer(pkt, skb->ifindex, proto, code);
  return bpf_redirect(skb->ifindex, way == FWE_ANSWER_IN && !loopback ? BPF_F_INGRESS : 0);
}

/* An answer expect_answer noted in the last second, coming through the interface it was sent to: let
 * through, as many times as hooks are on its way. */
static __always_inline int our_answer(const struct __sk_buff* skb, const struct fwe_pkt* pkt) {
  const int candidate = (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & TCP_RST)) ||
                        (pkt->proto == IPPROTO_ICMP && pkt->icmp_type == 3) ||
                        (pkt->proto == IPPROTO_ICMPV6 && pkt->icmp_type == 1);
  if (!candidate) return 0;
  struct fwe_answer_key key = {.ifindex = skb->ifindex, .family = pkt->family, .proto = pkt->proto};
  if (pkt->proto == IPPROTO_TCP) {
    key.sport = pkt->ct_sport;
    key.dport = pkt->ct_dport;
  } else {
    key.code = pkt->icmp_code;
  }
  __builtin_memcpy(key.src, pkt->src, 16);
  __builtin_memcpy(key.dst, pkt->dst, 16);
  struct fwe_answer_due* due = bpf_map_lookup_elem(&fwe_answered, &key);
  if (!due) return 0;
  const int fresh = bpf_ktime_get_ns() - due->at_ns <= 1000000000ull;
  const __u32 passes = due->passes; /* no atomic needed: one CPU carries an answer through its hooks */
  due->passes = passes - 1;
  if (!fresh || passes <= 1) bpf_map_delete_elem(&fwe_answered, &key);
  return fresh;
}

static __always_inline int finish(struct __sk_buff* skb, struct fwe_eval* ev, __u32 way) {
  remember_first_fragment(ev, !ev->dropped);
  if (ev->dropped) return ev->reject && way != FWE_ANSWER_NONE ? answer(skb, ev, way) : TC_ACT_SHOT;
  if (ev->mark_changed) skb->mark = ev->pkt.mark;
  ct_commit(ev);
  return FWE_PASS;
}

/* A packet that comes in on the interface it is judged as coming in on. */
static __always_inline int judge_ingress(struct __sk_buff* skb) {
  struct fwe_eval ev = {};
  /* In on lo, or a copy of the host's own multicast or broadcast looped back to it (PACKET_LOOPBACK, on
   * the interface it went out on): either comes with the conntrack entry it got on its way out, and
   * without an Ethernet source. */
  ev.looped = skb->ifindex == LOOPBACK_IFINDEX || skb->pkt_type == PACKET_LOOPBACK;
  int started = start(skb, &ev);
  if (started < 0) return unstarted(skb, &ev, started, 0);
  if (our_answer(skb, &ev.pkt)) return FWE_PASS;
  ev.pkt.iif = skb->ifindex;
  ev.pkt.has_mac = !ev.looped;
  ev.pkt.oif = route_out(skb, skb->ifindex, &ev.pkt);
  /* The host's own packet passes every reverse-path check, as the kernel's fib and rpfilter matches let a
   * looped-back one pass (nft_fib_is_loopback, rpfilter_is_loopback). */
  if (ev.need_rpf) ev.pkt.rpf_ok = ev.looped ? FWE_RPF_ALL : reverse_path(skb, &ev.pkt);
  if (!run_stage(&ev, FWE_STAGE_UNTRACKED_IN)) {
    ct_see_reply(&ev);
    if (!run_stage(&ev, FWE_STAGE_PREDNAT)) run_stage(&ev, ev.pkt.oif ? FWE_STAGE_FORWARD : FWE_STAGE_INPUT);
  }
  return finish(skb, &ev, FWE_ANSWER_OUT);
}

SEC("tc")
int fwe_ingress(struct __sk_buff* skb) {
  /* Not addressed to this device: a copy it takes in promiscuous mode (tcpdump, a bridge), or a frame for
   * a macvlan on top of it, perhaps in another namespace, which that device's hook sees as its own.
   * IPv4 and IPv6 drop such frames before netfilter: no stage judges them, nor counts or tracks them. */
  if (skb->pkt_type == PACKET_OTHERHOST) return FWE_PASS;
  /* Tagged for a VLAN (the kernel takes the tag off before this hook): the VLAN device takes it next,
   * whose hook judges it with that device as its input interface, as netfilter does; or, with no such
   * device, the stack drops it. Priority-tagged frames (VLAN 0) stay this device's. */
  if (skb->vlan_present && (skb->vlan_tci & 0x0fff)) return FWE_PASS;
  return judge_ingress(skb);
}

/* The IEEE 802.1 link-local group the frame goes to (01:80:c2:00:00:0g: g), -1 for none. */
static __always_inline int link_local_group(const struct __sk_buff* skb) {
  const __u8* mac = (const __u8*)(long)skb->data;
  if ((const void*)(mac + 6) > (const void*)(long)skb->data_end) return -1;
  if (mac[0] != 0x01 || mac[1] != 0x80 || mac[2] != 0xc2 || mac[3] != 0 || mac[4] != 0 || (mac[5] & 0xf0))
    return -1;
  return mac[5];
}

/* On a bridge port. What comes in goes on up to the bridge, judged there, or across the bridge (judged at
 * the port it leaves by, where br_netfilter is on). A bridge forwards a frame to a link-local group only
 * as its options say (STP, group_fwd_mask); else it hands the frame up on the port itself. STP, LLDP and
 * 802.1X carry no IP in such frames, but the IP stack takes an IP packet one does carry, with the port as
 * its input interface, and so netfilter judges it. */
SEC("tc")
int fwe_port_in(struct __sk_buff* skb) {
  int group = link_local_group(skb);
  if (group < 0) return FWE_PASS;
  /* Tagged for a VLAN: a VLAN device on the port takes it (and judges it), or the stack drops it. */
  if (skb->vlan_present && (skb->vlan_tci & 0x0fff)) return FWE_PASS;
  __u32 ifindex = skb->ifindex;
  const struct fwe_port* port = bpf_map_lookup_elem(&fwe_ports, &ifindex);
  if (port && !(port->up_groups & (1u << group))) return FWE_PASS;
  return judge_ingress(skb);
}

/* A frame on its way out of a bridge port: one switched from another port of the bridge is judged as
 * netfilter judges it with br_netfilter, forwarded from the bridge to the bridge; one that came down
 * from the bridge was decided there (sent by the host, or routed in from another interface). */
static __always_inline int judge_switched(struct __sk_buff* skb, const struct fwe_port* port) {
  __u32 from = skb->ingress_ifindex;
  const struct fwe_port* in = from ? bpf_map_lookup_elem(&fwe_ports, &from) : 0;
  if (!in || in->bridge != port->bridge) return FWE_PASS;
  /* What br_netfilter does not hand to netfilter passes unread: a family it is off for, and a frame
   * the bridge carries with a VLAN tag unless it filters those too. */
  __u32 family = skb->protocol == bpf_htons(ETH_P_IP)     ? FWE_BRIDGED_IPV4
                 : skb->protocol == bpf_htons(ETH_P_IPV6) ? FWE_BRIDGED_IPV6
                                                          : 0;
  if (!(port->families & family)) return FWE_PASS;
  if (skb->vlan_present && !(port->families & FWE_BRIDGED_VLAN)) return FWE_PASS;
  struct fwe_eval ev = {};
  int started = start(skb, &ev);
  if (started < 0) return unstarted(skb, &ev, started, 0);
  ev.pkt.iif = port->bridge;
  ev.pkt.oif = port->bridge;
  ev.pkt.has_mac = 1;
  if (ev.need_rpf) ev.pkt.rpf_ok = reverse_path(skb, &ev.pkt);
  if (!run_stage(&ev, FWE_STAGE_UNTRACKED_IN)) {
    ct_see_reply(&ev);
    if (!run_stage(&ev, FWE_STAGE_PREDNAT)) run_stage(&ev, FWE_STAGE_FORWARD);
  }
  return finish(skb, &ev, FWE_ANSWER_NONE);
}

SEC("tc")
int fwe_egress(struct __sk_buff* skb) {
  __u32 ifindex = skb->ifindex;
  const struct fwe_port* port = bpf_map_lookup_elem(&fwe_ports, &ifindex);
  if (port) return judge_switched(skb, port);
  if (skb->ingress_ifindex != 0) return FWE_PASS; /* forwarded: decided at its ingress */
  /* Sent through a VLAN device on top of this one: judged at that device's egress. */
  if (skb->vlan_present && (skb->vlan_tci & 0x0fff)) return FWE_PASS;
  struct fwe_eval ev = {};
  int started = start(skb, &ev);
  if (started < 0) return unstarted(skb, &ev, started, 1);
  if (our_answer(skb, &ev.pkt)) return FWE_PASS;
  ev.pkt.oif = skb->ifindex;
  if (!run_stage(&ev, FWE_STAGE_UNTRACKED_OUT)) {
    ct_see_reply(&ev);
    run_stage(&ev, FWE_STAGE_OUTPUT);
  }
  return finish(skb, &ev, FWE_ANSWER_IN);
}

/* The counters fwe_xdp held for a packet it drops. */
static __always_inline void count_held(struct fwe_eval* ev) {
  ev->holding = 0;
  for (int i = 0; i < FWE_XDP_HELD; i++)
    if (i < ev->held_count) hit_counter(ev, ev->held[i]);
}

/* XDP, on the interfaces the backend option xdp names, where the driver runs it natively: what the
 * untracked-in stage drops is dropped before the kernel makes an skb of it. Everything else passes on to
 * fwe_ingress, which judges it whole, untracked-in again included: a frame to another MAC address, a
 * VLAN-tagged one, a fragment, an IPv6 packet with extension headers, one a reject drops (its answer is
 * made from an skb), and one that hits more counters than are held. Counters are held back until the
 * packet is dropped, so one that passes is counted once, by fwe_ingress. The loader sets the generation's
 * bit in xdp_gens only when its untracked-in stage judges alike here: no marks, rate limits or log rules
 * (compile.cpp); without it, and on an interface without an fwe_xdp_links entry, everything passes. */
SEC("xdp")
int fwe_xdp(struct xdp_md* ctx) {
  __u32 ifindex = ctx->ingress_ifindex;
  const struct fwe_xdp_link* link = bpf_map_lookup_elem(&fwe_xdp_links, &ifindex);
  if (!link) return XDP_PASS;
  const __u8* to = frame_data(ctx, 1);
  if ((const void*)(to + 6) > frame_end(ctx, 1)) return XDP_PASS;
  if (!(to[0] & 1) && !same_mac(to, link->mac)) return XDP_PASS; /* PACKET_OTHERHOST at tc */
  __u32 zero = 0;
  const struct fwe_config* cfg = bpf_map_lookup_elem(&fwe_config, &zero);
  if (!cfg) return XDP_PASS;
  struct fwe_eval ev = {};
  ev.gen = cfg->active_gen & 1;
  if (!((cfg->xdp_gens >> ev.gen) & 1)) return XDP_PASS;
  if (parse(ctx, 1, &ev.pkt) != 0 || ev.pkt.fragment) return XDP_PASS;
  ev.need_rpf = (cfg->rpf_gens >> ev.gen) & 1;
  ev.bytes = ctx->data_end - ctx->data;
  ev.holding = 1;
  ev.pkt.iif = ifindex;
  ev.pkt.has_mac = 1;
  ev.pkt.oif = route_out(ctx, ifindex, &ev.pkt);
  if (ev.need_rpf) ev.pkt.rpf_ok = reverse_path(ctx, &ev.pkt);
  if (!run_stage(&ev, FWE_STAGE_UNTRACKED_IN) || ev.reject || ev.held_over) return XDP_PASS;
  count_held(&ev);
  return XDP_DROP;
}
