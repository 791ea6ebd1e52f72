// example_frontend.cpp - the smallest useful frontend: every source line "allow tcp PORT" opens a port
// on every interface; everything else arriving at the host is dropped. Shows the whole plugin API.
#include <fstream>
#include <sstream>

#include "fwengine/plugin.hpp"

namespace {

class ExampleFrontend : public fwe::Frontend {
 public:
  explicit ExampleFrontend(const fwe::PluginContext&) {}

  std::vector<std::string> default_sources() const override { return {"/etc/fwengine/example.txt"}; }

  fwe::ir::Ruleset load(const fwe::FrontendRequest& request, fwe::Diagnostics& diag) override {
    using namespace fwe::ir;
    Ruleset rs;
    Chain chain{"example", {}, {}};
    for (const auto& source : request.sources) {
      auto file = diag.add_file(source);
      std::ifstream in(source);
      if (!in) {
        diag.error({file, 0, 0}, "cannot read " + source, "check the path given with -f");
        continue;
      }
      std::string line;
      for (std::uint32_t number = 1; std::getline(in, line); ++number) {
        std::istringstream words(line);
        std::string verb, proto;
        unsigned port = 0;
        if (line.empty() || line[0] == '#') continue;
        if (!(words >> verb >> proto >> port) || verb != "allow" || proto != "tcp" || port == 0 ||
            port > 65535) {
          diag.error({file, number, 1}, "expected 'allow tcp PORT'",
                     "one rule per line, e.g. 'allow tcp 22'");
          continue;
        }
        Rule rule;
        rule.match.protocols = std::vector<std::uint8_t>{6};
        auto p = static_cast<std::uint16_t>(port);
        rule.match.dst_port.push_back({false, {{p, p}}});
        rule.action.kind = ActionKind::accept;
        rule.origin = {{file, number, 1}, "example", static_cast<std::int32_t>(chain.rules.size())};
        chain.rules.push_back(rule);
      }
    }
    Endpoint host;
    host.name = "any";
    host.conntrack = Conntrack::accept_established_drop_invalid;
    host.groups.push_back({"example", {"example"}, Verdict::continue_, {}, {}});
    host.default_verdict = Verdict::drop;
    rs.chains["example"] = std::move(chain);
    rs.stage(Stage::input).sections.push_back({"input", false, {host}});
    rs.frontend = "example";
    rs.files = diag.files();
    return rs;
  }
};

}  // namespace

FWE_REGISTER_FRONTEND("example", "1.0", "out-of-tree example: 'allow tcp PORT' lines", ExampleFrontend)
