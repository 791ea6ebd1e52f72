// plugin.cpp - registers the Calico frontend with the engine.
#include <filesystem>

#include "fwengine/plugin.hpp"
#include "fwengine/state.hpp"

#include "etcd.hpp"
#include "frontend.hpp"
#include "writer.hpp"

namespace fwe::calico {
namespace {

// What the engine holds of a watch; the frontend keeps only a weak reference for load().
class SharedWatch final : public SourceWatch {
 public:
  explicit SharedWatch(std::shared_ptr<etcd::Watch> watch) : watch_(std::move(watch)) {}
  int fd() const override { return watch_->fd(); }
  SourceStatus consume() override { return watch_->consume(); }

 private:
  std::shared_ptr<etcd::Watch> watch_;
};

class CalicoFrontend final : public Frontend {
 public:
  explicit CalicoFrontend(const PluginContext& context)
      : origin_netns_fd_(context.origin_netns_fd), node_(context.node) {}

  std::vector<std::string> default_sources() const override { return {"/etc/fwengine/calico/"}; }

  ir::Ruleset load(const FrontendRequest& request, Diagnostics& diag) override {
    LoadRequest load_request;
    std::vector<std::pair<std::shared_ptr<etcd::Watch>, std::string>> watched_sources;
    load_request.sources = request.sources;
    load_request.node = request.node;
    load_request.options = request.options;
    for (const auto& source : request.sources) {
      if (!etcd::is_source(source)) continue;
      auto watched = watches_.find(source);
      auto live = watched == watches_.end() ? nullptr : watched->second.lock();
      if (!live) {
        etcd::Client client(etcd::parse_source(source, request.options), origin_netns_fd_, request.node);
        load_request.store_snapshots[source] = client.list();
        continue;
      }
      auto snapshot = live->snapshot();
      if (!snapshot) throw RuntimeError("the etcd store at " + source + " has not answered yet");
      load_request.store_snapshots[source] = std::move(*snapshot);
      watched_sources.emplace_back(std::move(live), source);
    }
    ir::Ruleset ruleset = calico::load(load_request, diag);
    if (!diag.has_errors())
      for (const auto& [watch, source] : watched_sources)
        watch->keep_cache(load_request.store_snapshots.at(source));
    return ruleset;
  }

  // Where the daemon keeps the last policy of the store: etcd-cache=FILE, "none", or per node under
  // /var/lib/fwengine (it must survive a reboot: /run does not).
  static std::string cache_file(const FrontendRequest& request) {
    auto option = request.options.find("etcd-cache");
    if (option == request.options.end()) {
      check_node_name(request.node);
      return "/var/lib/fwengine/etcd-cache/" + request.node + ".json";
    }
    if (option->second.empty()) throw UsageError("--etcd-cache needs a file, or none for no cache");
    return option->second == "none" ? std::string{} : option->second;
  }

  // One watch per etcd source; files are watched by the daemon itself.
  std::unique_ptr<SourceWatch> watch(const FrontendRequest& request) override {
    std::string store;
    for (const auto& source : request.sources) {
      if (!etcd::is_source(source)) continue;
      if (!store.empty())
        throw UsageError("the daemon follows one etcd store; give its endpoints in one etcd:// source");
      store = source;
    }
    if (store.empty()) return nullptr;
    auto watch = std::make_shared<etcd::Watch>(etcd::parse_source(store, request.options), origin_netns_fd_,
                                               cache_file(request), request.node);
    watches_[store] = watch;
    return std::make_unique<SharedWatch>(std::move(watch));
  }

  void check_sources(const FrontendRequest& request) const override {
    for (const auto& source : request.sources)
      if (etcd::is_source(source)) etcd::parse_source(source, request.options);
  }

  bool can_write() const override { return true; }
  bool reads_file_named(std::string_view name) const override { return is_resource_file_name(name); }

  // Writes every resource, even when some pieces could not be carried over: those are reported, and
  // the caller exits 2 when one of them is an error.
  bool write(const ir::Ruleset& ruleset, const std::string& out_dir, Diagnostics& diag) override {
    const auto resources = write_resources(ruleset, node_, diag);
    try {
      std::filesystem::create_directories(out_dir);
      // A link in the directory is replaced, not written through: the files stay in out_dir.
      for (const auto& [file_name, text] : resources)
        state::write_file_replacing((std::filesystem::path(out_dir) / file_name).string(), text);
    } catch (const std::exception& e) {  // the directory's or a file's error
      diag.error({}, e.what(), "check that the output directory is writable");
      return false;
    }
    return true;
  }

 private:
  int origin_netns_fd_;
  std::string node_;  // --node: the HostEndpoints' spec.node
  std::map<std::string, std::weak_ptr<etcd::Watch>> watches_;
};

}  // namespace
}  // namespace fwe::calico

FWE_REGISTER_FRONTEND(
    "calico", "0.1.0",
    "Calico HostEndpoints, GlobalNetworkPolicy, GlobalNetworkSet and FelixConfiguration from files or "
    "Calico's etcdv3 datastore, with Felix's verdicts",
    fwe::calico::CalicoFrontend)
