// Fuzz target: the firewalld frontend from a configuration file to a compiled ruleset. The input is
// written into an /etc/firewalld-like tree where its root element says it belongs (a <zone> as the
// default zone public.xml, a <service> as services/fuzz.xml, ...; anything that is not XML is the
// firewalld.conf) over a small stock tree, and the whole configuration is loaded as `fwengine` does.
#include <fstream>
#include <map>

#include "frontend.hpp"
#include "fuzz_support.hpp"
#include "xml.hpp"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& path, std::string_view text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(text.data(), static_cast<std::streamsize>(text.size()));
}

// The stock tree: the default zone and what the seeds refer to, so that valid inputs reach the IR.
const fs::path& stock_tree(const fs::path& scratch) {
  static const fs::path dir = [&] {
    fs::path d = scratch / "stock";
    write(d / "zones/public.xml",
          "<?xml version=\"1.0\"?>\n<zone><short>Public</short><service name=\"ssh\"/></zone>\n");
    write(d / "zones/block.xml",
          "<?xml version=\"1.0\"?>\n<zone target=\"%%REJECT%%\"><short>Block</short></zone>\n");
    write(d / "zones/drop.xml",
          "<?xml version=\"1.0\"?>\n<zone target=\"DROP\"><short>Drop</short></zone>\n");
    write(d / "zones/trusted.xml",
          "<?xml version=\"1.0\"?>\n<zone target=\"ACCEPT\"><short>Trusted</short></zone>\n");
    write(d / "services/ssh.xml",
          "<?xml version=\"1.0\"?>\n<service><port protocol=\"tcp\" port=\"22\"/></service>\n");
    write(d / "services/http.xml",
          "<?xml version=\"1.0\"?>\n<service><port protocol=\"tcp\" port=\"80\"/></service>\n");
    write(d / "services/https.xml",
          "<?xml version=\"1.0\"?>\n<service><port protocol=\"tcp\" port=\"443\"/></service>\n");
    write(d / "icmptypes/echo-request.xml", "<?xml version=\"1.0\"?>\n<icmptype/>\n");
    write(d / "policies/allow-host-ipv6.xml",
          "<?xml version=\"1.0\"?>\n<policy target=\"CONTINUE\"><ingress-zone name=\"ANY\"/>"
          "<egress-zone name=\"HOST\"/></policy>\n");
    return d;
  }();
  return dir;
}

// Where a file with this root element lives in the tree.
std::string place_of(std::string_view text) {
  static const std::map<std::string, std::string, std::less<>> kPlaces = {
      {"zone", "zones/public.xml"},    {"service", "services/fuzz.xml"},   {"ipset", "ipsets/fuzz.xml"},
      {"policy", "policies/fuzz.xml"}, {"icmptype", "icmptypes/fuzz.xml"}, {"helper", "helpers/fuzz.xml"},
      {"direct", "direct.xml"}};
  fwe::Diagnostics ignored;
  auto root = fwe::firewalld::xml::parse(text, ignored.add_file("probe.xml"), ignored);
  if (!root) return text.find('<') == std::string_view::npos ? "firewalld.conf" : "zones/public.xml";
  auto place = kPlaces.find(root->name);
  return place == kPlaces.end() ? "zones/public.xml" : place->second;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fwe::fuzz::ScratchDir scratch;
  const std::string_view text = fwe::fuzz::as_text(data, size);
  const fs::path etc = scratch.path() / "etc";
  fs::remove_all(etc);
  write(etc / place_of(text), text);
  fwe::firewalld::LoadRequest request;
  request.sources = {etc.string()};
  request.options = {{"defaults", stock_tree(scratch.path()).string()}};
  fwe::Diagnostics diag;
  fwe::ir::Ruleset ruleset = fwe::firewalld::load(request, diag);
  fwe::fuzz::compile(ruleset, diag);
  return 0;
}
