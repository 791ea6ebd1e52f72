// Bad inputs: each must give exactly this first error, with its file:line:col and a hint.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "reader.hpp"

namespace {

struct Loaded {
  fwe::Diagnostics diag;
  fwe::ir::Ruleset ruleset;
};

std::unique_ptr<Loaded> load_texts(const std::vector<std::pair<std::string, std::string>>& files) {
  auto loaded = std::make_unique<Loaded>();
  fwe::yamlfe::PolicyReader reader(loaded->diag);
  for (const auto& [name, text] : files) reader.read_text(text, name);
  loaded->ruleset = reader.finish();
  return loaded;
}

std::string first_error(const std::string& text) {
  auto loaded = load_texts({{"bad.yaml", text}});
  for (const auto& d : loaded->diag.all())
    if (d.severity == fwe::Severity::error) return loaded->diag.format(d);
  return "(no error)";
}

const std::string kHead = "apiVersion: fwengine/v1\n";
const std::string kIfaceHint =
    "interface names have 1 to 15 characters, none of them a space, a control character, '/', ':', '*', a "
    "quote or a backslash, and are not '.' or '..'; a '+' only at the end, for a prefix";

}  // namespace

TEST_CASE("bad inputs report file:line:col with a hint", "[errors]") {
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"sets: {}\n",
       "bad.yaml:1:1: error: missing apiVersion (start the document with 'apiVersion: fwengine/v1')"},
      {"apiVersion: fwengine/v2\n",
       "bad.yaml:1:13: error: unsupported apiVersion 'fwengine/v2' (this fwengine reads apiVersion: "
       "fwengine/v1)"},
      {kHead + "chians: {}\n",
       "bad.yaml:2:1: error: unknown field 'chians' in a policy document (did you mean 'chains'?)"},
      {kHead + "sets:\n  lan: 10.0.0.1/8\n",
       "bad.yaml:3:8: error: sets.lan: '10.0.0.1/8' has host bits set (write the network address: "
       "10.0.0.0/8)"},
      {kHead + "sets:\n  lan: [10.0.0.300]\n",
       "bad.yaml:3:9: error: sets.lan: '10.0.0.300' is not an IP address or CIDR (write e.g. 10.0.0.0/8, "
       "192.0.2.1 "
       "or 2001:db8::/32)"},
      {kHead + "chains:\n  c: {action: accept}\n",
       "bad.yaml:3:6: error: chains.c: expected a list of rules, got a mapping"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dprot: 22, action: accept}\n",
       "bad.yaml:4:23: error: unknown field 'dprot' in a rule (did you mean 'dport'?)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: 70000, action: accept}\n",
       "bad.yaml:4:30: error: dport: 70000 is too large (the largest value is 65535)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: 90-80, action: accept}\n",
       "bad.yaml:4:30: error: dport: port range '90-80' runs backwards (write the lower port first: 80-90)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: http, action: accept}\n",
       "bad.yaml:4:30: error: dport: 'http' is not a port or port range (write a number such as 443 or a "
       "range such "
       "as 8000-8090; service names are not supported)"},
      {kHead + "chains:\n  c:\n    - {protocol: tpc, action: accept}\n",
       "bad.yaml:4:18: error: protocol: unknown protocol 'tpc' (did you mean 'tcp'?)"},
      {kHead + "chains:\n  c:\n    - {protocol: icmp, dport: 22, action: accept}\n",
       "bad.yaml:4:31: error: dport needs a protocol with ports, but the rule's protocol has none (use "
       "protocol tcp, "
       "udp, dccp, sctp, udplite, or remove dport)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, action: acept}\n",
       "bad.yaml:4:31: error: unknown action 'acept' (did you mean 'accept'?)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: 22}\n",
       "bad.yaml:4:7: error: the rule has no action (add action: accept | allow | drop | reject | log | pass "
       "| jump | "
       "return | set-mark | notrack | dnat | redirect | snat | masquerade | ct-helper | tcp-mss-clamp)"},
      {kHead + "chains:\n  c:\n    - {action: accept, reject-with: tcp-reset}\n",
       "bad.yaml:4:37: error: 'reject-with' only goes with action reject, not 'accept' (remove reject-with "
       "or change "
       "the action)"},
      {kHead + "chains:\n  c:\n    - {action: reject, reject-with: tcp-rst}\n",
       "bad.yaml:4:37: error: reject-with: unknown reject reply 'tcp-rst' (did you mean 'tcp-reset'?)"},
      {kHead + "sets: {trusted: []}\nchains:\n  c:\n    - {src: trustd, action: accept}\n",
       "bad.yaml:5:13: error: unknown set 'trustd' (did you mean 'trusted'?)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: 21, action: ct-helper, helper: \"\"}\n",
       "bad.yaml:4:61: error: helper: '' is not a conntrack helper name (give the kernel's name of the "
       "helper "
       "(1-15 letters, digits, '.', '-' or '_'), e.g. ftp, tftp or sip)"},
      {kHead + "chains:\n  c:\n    - {action: set-mark, set-mark: -1}\n",
       "bad.yaml:4:36: error: set-mark: -1 is negative (write a number from 0 to 4294967295)"},
      {kHead + "chains:\n  c:\n    - {action: set-mark, set-mark: 99999999999999999999}\n",
       "bad.yaml:4:36: error: set-mark: 99999999999999999999 is too large (the largest value is 4294967295)"},
      {kHead + "chains:\n  c:\n    - {action: set-mark, set-mark: 1e3}\n",
       "bad.yaml:4:36: error: set-mark: 1e3 is not a whole number (write a whole number such as 10 or 0x1f)"},
      {kHead + "chains:\n  c:\n    - {action: jump, target: nowhere}\n",
       "bad.yaml:4:30: error: unknown chain 'nowhere' (known chains: c)"},
      {kHead + "chains:\n  c:\n    - {icmp: echo-requets, action: accept}\n",
       "bad.yaml:4:14: error: icmp: unknown icmp type 'echo-requets' (did you mean 'echo-request'?)"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, icmp: echo-request, action: accept}\n",
       "bad.yaml:4:29: error: icmp needs protocol icmp, but the rule's protocol is tcp (remove protocol or "
       "add icmp "
       "to it)"},
      {kHead + "chains:\n  c:\n    - {family: ipv6, dst: 10.0.0.0/8, action: accept}\n",
       "bad.yaml:4:27: error: dst: no address here is IPv6, so the rule with family: ipv6 can never match "
       "(fix the "
       "addresses or the family)"},
      {kHead + "chains:\n  c:\n    - {dport: [22, \"!23\"], protocol: tcp, action: accept}\n",
       "bad.yaml:4:20: error: dport: '!23' cannot be negated on its own in a list ('!' negates a whole "
       "value; write "
       "dport: {not: [...]})"},
      {kHead + "chains:\n  c:\n    - {protocol: tcp, dport: 22, action: dnat, to: 10.0.0.5}\n"
               "stages:\n  input:\n    - endpoints: [{chains: [c]}]\n",
       "bad.yaml:4:7: error: action dnat only works in stage dnat or dnat-out, but chain 'c' is used in "
       "stage "
       "input at bad.yaml:7:29 (move the rule to a chain that only stage dnat or dnat-out uses)"},
      {kHead + "chains:\n  c:\n    - {action: dnat}\n",
       "bad.yaml:4:16: error: action dnat needs 'to' (add to: ADDRESS)"},
      {kHead + "stages:\n  inptu: []\n",
       "bad.yaml:3:3: error: unknown stage 'inptu' (did you mean 'input'?)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{default: dorp}]\n",
       "bad.yaml:4:29: error: default: unknown verdict 'dorp' (did you mean 'drop'?)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{conntrack: established}]\n",
       "bad.yaml:4:31: error: conntrack: unknown prelude 'established' (conntrack preludes: none, "
       "accept-established, accept-established-drop-invalid)"},
      {kHead + "stages:\n  untracked-in:\n    - endpoints: [{conntrack: accept-established}]\n",
       "bad.yaml:4:31: error: conntrack: stage untracked-in comes before conntrack (remove conntrack here; "
       "put it on "
       "the endpoints of later stages)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{iif: eth0, iff: eth1}]\n",
       "bad.yaml:4:31: error: unknown field 'iff' in an endpoint (did you mean 'iif'?)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{iif: \"eth*\"}]\n",
       "bad.yaml:4:25: error: iif: 'eth*' is not an interface name (write a prefix with '+': eth+)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{failsafe: yes}]\n",
       "bad.yaml:4:30: error: failsafe: expected true or false, got a string"},
      {kHead + "stages:\n  input:\n    - endpoints: {name: x}\n",
       "bad.yaml:4:18: error: endpoints: expected a list of endpoints, got a mapping"},
      {kHead + "failsafe:\n  inbound: [{protocol: icmp, port: 1}]\n",
       "bad.yaml:3:24: error: failsafe.inbound.protocol: 'icmp' is not a protocol with ports (use one of: "
       "tcp, udp, dccp, "
       "sctp, udplite)"},
      {kHead + "chains:\n  a:\n    - {action: jump, target: b}\n  b:\n    - {action: jump, target: a}\n",
       "bad.yaml:6:7: error: jump loop: a -> b -> a (a chain must not jump back into a chain that called "
       "it)"},
      {kHead + "chains:\n  c:\n    - {icmp: {code: 3}, action: accept}\n",
       "bad.yaml:4:21: error: icmp: a code needs a type (add type: NAME-OR-NUMBER)"},
      {kHead + "chains:\n  c:\n    - {ct-status: [dnat, dant], action: accept}\n",
       "bad.yaml:4:26: error: ct-status: unknown conntrack status 'dant' (did you mean 'dnat'?)"},
      {kHead + "chains:\n  c:\n    - {ct-status: \"!dnat\", action: accept}\n",
       "bad.yaml:4:19: error: ct-status cannot be negated (list the statuses that should match)"},
      {kHead + "chains:\n  c:\n    - {rpf: \"!strcit\", action: drop}\n",
       "bad.yaml:4:13: error: rpf: unknown mode 'strcit' (did you mean 'strict'?)"},
      {kHead + "chains:\n  c:\n    - {rpf: [strict], action: drop}\n",
       "bad.yaml:4:13: error: rpf: expected strict or loose, got a list"},
      {kHead + "chains:\n  c:\n    - {src: {not: \"!lan\"}, action: accept}\n",
       "bad.yaml:4:19: error: src: '!lan' is negated twice (drop either 'not' or the '!')"},
      {kHead + "chains:\n  c:\n    - {action: dnat, to: 10.0.0.1, to-port: 8080}\n",
       "bad.yaml:4:45: error: to-port needs a protocol with ports: only their packets have a port to rewrite "
       "(add protocol: tcp, or a list of tcp, udp, dccp, sctp, udplite)"},
      {kHead + "chains:\n  c:\n    - {protocol: [tcp, icmp], action: redirect, to-port: 8080}\n",
       "bad.yaml:4:58: error: to-port needs a protocol with ports: only their packets have a port to rewrite "
       "(add protocol: tcp, or a list of tcp, udp, dccp, sctp, udplite)"},
      {kHead + "chains:\n  c:\n    - {protocol: \"!tcp\", action: reject, reject-with: tcp-reset}\n",
       "bad.yaml:4:34: error: a tcp-reset reply needs protocol tcp (make the protocol tcp or use an icmp "
       "reply)"},
      {kHead + "chains:\n  c:\n    - {protocol: \"!icmpv6\", icmpv6: echo-request, action: accept}\n",
       "bad.yaml:4:37: error: icmpv6 needs protocol icmpv6, but the rule's protocol is not icmpv6 (remove "
       "protocol "
       "or make it icmpv6)"},
      {kHead + "stages:\n  input:\n    - endpoints: [{iif: \"!eth0\"}]\n",
       "bad.yaml:4:25: error: iif: '!eth0' is not an interface name (a rule negates the whole field: iif: "
       "{not: "
       "[eth0]}; an endpoint cannot)"},
      {kHead + "chains:\n  c:\n    - {iif: \"eth0:1\", action: accept}\n",
       "bad.yaml:4:13: error: iif: 'eth0:1' is not an interface name (" + kIfaceHint + ")"},
      {kHead + "chains:\n  c:\n    - {oif: \"..\", action: accept}\n",
       "bad.yaml:4:13: error: oif: '..' is not an interface name (" + kIfaceHint + ")"},
      {kHead + "chains:\n  \"!x\": []\n",
       "bad.yaml:3:3: error: chain name '!x' starts with '!', which negates (give the chain a name that "
       "starts "
       "with a letter)"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(first_error(c.text) == c.expected);
  }
}

TEST_CASE("a set named in two files is an error naming both places", "[errors]") {
  auto loaded = load_texts({{"a.yaml", kHead + "sets:\n  lan: [10.0.0.0/8]\n"},
                            {"b.yaml", kHead + "sets:\n  other: []\n  lan: [192.168.0.0/16]\n"}});
  REQUIRE(loaded->diag.error_count() == 1);
  CHECK(loaded->diag.format(loaded->diag.all().front()) ==
        "b.yaml:4:3: error: set 'lan' is defined twice (the first is at a.yaml:3:3; rename one of them)");
}

TEST_CASE("every error of a document is reported, not only the first", "[errors]") {
  auto loaded =
      load_texts({{"bad.yaml", kHead + "chains:\n  c:\n    - {protocol: tpc, dport: 99999, action: acept}\n"
                                       "    - {src: nowhere, action: accept}\n"}});
  CHECK(loaded->diag.error_count() == 4);
}

TEST_CASE("a YAML syntax error is reported by the reader with its place", "[errors]") {
  std::string error = first_error(kHead + "chains:\n  c: [\n");
  CHECK(error.starts_with("bad.yaml:"));
}

TEST_CASE("a directory is read in name order and a missing file is an error", "[errors]") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("fwe-yaml-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "10-sets.yaml") << kHead << "sets:\n  lan: [10.0.0.0/8]\n";
  std::ofstream(dir / "20-chains.yml") << kHead << "chains:\n  c:\n    - {src: lan, action: accept}\n";
  std::ofstream(dir / "notes.txt") << "not yaml: [";
  fwe::Diagnostics diag;
  auto ruleset = fwe::yamlfe::read_policy({dir.string(), (dir / "missing.yaml").string()}, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all().front().message.find("missing.yaml") != std::string::npos);
  CHECK(ruleset.files.size() == 4);  // <command line>, two files, the missing one
  CHECK(ruleset.chains.at("c").rules.at(0).origin.loc.file == 2);
  fs::remove_all(dir);
}

TEST_CASE("a policy file in a directory that cannot be read is an error, not a file less", "[errors]") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("fwe-yaml-unreadable-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "10-sets.yaml") << kHead << "sets:\n  lan: [10.0.0.0/8]\n";
  fs::create_symlink(dir / "nowhere", dir / "20-deny.yaml");    // dangling
  fs::create_directory(dir / "30-dir.yaml");                    // a directory is not a policy file
  fs::create_symlink("user@host.1:1", dir / ".#10-sets.yaml");  // Emacs's lock while it edits 10-sets
  fwe::Diagnostics diag;
  fwe::yamlfe::read_policy({dir.string()}, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.format(diag.all().front()).find("20-deny.yaml: error: cannot read '") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("failsafe on a stage without a failsafe chain is a warning", "[errors]") {
  auto loaded =
      load_texts({{"w.yaml", kHead + "stages:\n  forward:\n    - endpoints: [{failsafe: true}]\n"}});
  CHECK_FALSE(loaded->diag.has_errors());
  REQUIRE(loaded->diag.all().size() == 1);
  CHECK(loaded->diag.format(loaded->diag.all().front()) ==
        "w.yaml:4:30: warning: failsafe: stage forward has no failsafe chain (failsafe ports guard the "
        "host's own "
        "traffic; remove this or move it to input/output)");
}
