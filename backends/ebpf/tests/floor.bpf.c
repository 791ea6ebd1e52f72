// SPDX-License-Identifier: GPL-2.0
/* floor.bpf.c - what ebpf_bench measures fwengine's programs against: one LPM lookup of the packet's
 * IPv4 source and nothing else (no conntrack, no route lookup, no rules), the least any firewall that
 * keeps its addresses in an LPM trie pays per packet. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct floor_key {
  __u32 prefixlen;
  __u8 addr[4];
};

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 262144);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct floor_key);
  __type(value, __u8);
} floor_set SEC(".maps");

SEC("tc")
int floor_lookup(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct iphdr* ip = data + ETH_HLEN;
  if ((void*)(ip + 1) > data_end) return TC_ACT_OK;
  struct floor_key key = {.prefixlen = 32};
  __builtin_memcpy(key.addr, &ip->saddr, 4);
  return bpf_map_lookup_elem(&floor_set, &key) ? TC_ACT_OK : TC_ACT_SHOT;
}
