// etcd_test.cpp - the etcd source's URL and options, and which keys of Calico's layout hold policy.
#include <catch2/catch.hpp>

#include "etcd.hpp"
#include "fwengine/diagnostics.hpp"

namespace fwe::calico::etcd {

TEST_CASE("etcd URLs name one or more endpoints", "[etcd]") {
  auto plain = parse_source("etcd://127.0.0.1:2379,[::1]:2379,etcd-2.example:23790", {});
  CHECK(plain.urls == std::vector<std::string>{"http://127.0.0.1:2379", "http://[::1]:2379",
                                               "http://etcd-2.example:23790"});
  auto tls = parse_source("etcd://10.0.0.1:2379",
                          {{"etcd-ca", "ca.pem"}, {"etcd-cert", "c.pem"}, {"etcd-key", "k.pem"}});
  CHECK(tls.urls == std::vector<std::string>{"https://10.0.0.1:2379"});
  CHECK(tls.cert_file == "c.pem");
  CHECK(parse_source("etcd://h:1", {{"etcd-ca", "ca.pem"}}).urls.front() == "https://h:1");
  CHECK(is_source("etcd://h:1"));
  CHECK_FALSE(is_source("/etc/fwengine/calico"));
}

TEST_CASE("bad etcd URLs and TLS options are usage errors", "[etcd]") {
  const auto bad =
      GENERATE(as<std::string>{}, "etcd://", "etcd://host", "etcd://host:", "etcd://:2379", "etcd://h:2379,",
               "etcd://h:port", "etcd://h:2379/path", "etcd://h:99999", "etcd://h:0");
  INFO(bad);
  CHECK_THROWS_AS(parse_source(bad, {}), UsageError);
  CHECK_THROWS_AS(parse_source("etcd://h:1", {{"etcd-key", "k.pem"}}), UsageError);
  CHECK_THROWS_AS(parse_source("etcd://h:1", {{"etcd-cert", "c.pem"}}), UsageError);
  // An empty CA (an unset shell variable) would have meant plain http.
  CHECK_THROWS_WITH(parse_source("etcd://h:1", {{"etcd-ca", ""}}), "--etcd-ca needs a file");
  CHECK(parse_source("etcd://h:1", {{"etcd-ca", "ca.pem"}}).urls == std::vector<std::string>{"https://h:1"});
}

TEST_CASE("only the kinds the frontend reads are taken from the store", "[etcd]") {
  const std::string p(kResourcePrefix);
  auto taken = [&](const std::string& key) { return is_policy_key(p + key, "node1"); };
  CHECK(taken("globalnetworkpolicies/default.allow-ssh"));
  CHECK(taken("hostendpoints/node1-eth0"));
  CHECK(taken("globalnetworksets/blocked"));
  CHECK(taken("felixconfigurations/node.node1"));
  CHECK(taken("tiers/security"));
  CHECK(taken("nodes/node1"));  // this node's labels, which FelixConfiguration nodeSelectors select
  CHECK_FALSE(taken("nodes/node2"));
  CHECK_FALSE(taken("nodes/node1x"));
  CHECK_FALSE(taken("ippools/default-ipv4-ippool"));
  CHECK_FALSE(taken("networkpolicies/default/allow"));  // namespaced: workloads, not hosts
  CHECK_FALSE(taken("globalnetworkpolicies/"));
  CHECK_FALSE(taken("globalnetworkpolicies"));
  CHECK_FALSE(is_policy_key("/calico/ipam/v2/host/node1", "node1"));
}

}  // namespace fwe::calico::etcd
