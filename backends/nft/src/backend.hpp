// backend.hpp - the `nft` backend: render = translate to the nftables object model, apply = one netlink
// transaction replacing table inet fwengine, read_back = list it with counters and origin stamps.
#pragma once

#include "fwengine/plugin.hpp"
#include "model.hpp"
#include "netlink.hpp"

namespace fwe::nft {

class NftPlan : public Plan {
 public:
  explicit NftPlan(Table table) : table_(std::move(table)) {}
  std::string text(std::string_view) const override { return table_.text(); }
  // Chains and sets by name (names end in a digest of their content), rules by chain, position and
  // stamp, each with its text after a tab: read_back lists the kernel alike, without the text.
  std::string listing(std::string_view) const override;
  const Table& table() const { return table_; }

 private:
  Table table_;
};

class NftBackend : public Backend {
 public:
  explicit NftBackend(const PluginContext& context) : context_(context) {}
  Capabilities capabilities() const override;
  std::unique_ptr<Plan> render(const ir::Ruleset& ruleset, Diagnostics& diag) override;
  // Stamps the apply into the name of an empty marker chain: kMarkerPrefix + "<ir hash>-<rules and
  // counted elements>-<their stamps' digest>", then "-<content>" (record_content) for read_back.
  ApplyReport apply(const Plan& plan, const ApplyOptions& options) override;
  KernelState read_back() override;
  std::vector<RuleCounter> counters() override;
  void flush() override;

 private:
  // read_back. Elements::counted lists only the elements of sets with counters (their hits), and then
  // cannot check that no element was added or removed by hand.
  KernelState read(Elements elements);
  // Opened on first use (render needs none), dropped after a failure so that no answer left from a
  // refused batch or a broken dump can reach the next request.
  Connection& connection();
  template <class Call>
  auto guarded(Call call) {
    try {
      return call();
    } catch (...) {
      connection_.reset();
      throw;
    }
  }
  std::unique_ptr<Connection> connection_;
  PluginContext context_;
};

}  // namespace fwe::nft
