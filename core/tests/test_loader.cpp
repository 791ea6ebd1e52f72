// The plugin loader's refusals: each broken plugin is reported with why, never loaded blindly.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "fwengine/loader.hpp"

using namespace fwe;
namespace fs = std::filesystem;

namespace {
const PluginInfo* named(const std::vector<PluginInfo>& all, const std::string& file_part) {
  for (const auto& p : all)
    if (p.path.find(file_part) != std::string::npos) return &p;
  return nullptr;
}
}  // namespace

TEST_CASE("the loader finds good plugins and says what is wrong with bad ones") {
  PluginLoader loader({FWE_TEST_PLUGIN_DIR});
  auto all = loader.discover();
  const auto* good = named(all, "libfwe_good.so");
  REQUIRE(good);
  CHECK(good->problem.empty());
  CHECK(good->name == "testbe");
  CHECK(good->kind == PluginKind::backend);

  const auto* old = named(all, "libfwe_old_abi.so");
  REQUIRE(old);
  CHECK(old->problem.rfind("ABI version " + std::to_string(FWE_PLUGIN_ABI_VERSION + 1) + ", engine expects",
                           0) == 0);

  const auto* lonely = named(all, "libfwe_no_factory.so");
  REQUIRE(lonely);
  CHECK(lonely->problem == "missing exported symbol 'fwe_create_frontend'");

  const auto* unresolved = named(all, "libfwe_unresolved.so");
  REQUIRE(unresolved);
  CHECK(unresolved->problem.rfind("cannot load it: ", 0) == 0);  // the caller names the plugin, once
  CHECK(unresolved->problem.find("undefined symbol") != std::string::npos);
  CHECK(unresolved->problem.find("helper_from_missing_library") != std::string::npos);
}

TEST_CASE("a good plugin loads and its object works across the boundary") {
  PluginLoader loader({FWE_TEST_PLUGIN_DIR});
  auto be = loader.backend("testbe", {});
  CHECK(be->capabilities().supports(ir::ActionKind::accept));
  fwe::Diagnostics diag;
  CHECK(be->render({}, diag)->text({}) == "nothing\n");
  CHECK_THROWS_AS(be->apply(*be->render({}, diag), {}), RuntimeError);  // exceptions cross cleanly
}

TEST_CASE("unknown, broken and missing plugins are clear errors") {
  PluginLoader loader({FWE_TEST_PLUGIN_DIR});
  CHECK_THROWS_WITH(loader.backend("testbee", {}), Catch::Contains("did you mean 'testbe'?"));
  CHECK_THROWS_AS(loader.frontend("nothere", {}), UsageError);
  CHECK_THROWS_WITH(loader.backend("oldabi", {}), Catch::Contains("ABI version"));
  CHECK(PluginLoader::inspect("/nonexistent/libfwe_x.so").problem == "file not found (check --plugin-dir)");
}

TEST_CASE("a tool's name suggests the plugin for it, when that plugin is installed") {
  const std::vector<std::string_view> installed = {"ebpf", "iptables", "nft"};
  CHECK(plugin_name_hint("nftables", installed) == "did you mean 'nft'?");
  CHECK(plugin_name_hint("iptables-legacy", installed) == "did you mean 'iptables'?");
  for (auto hook : {"bpf", "xdp", "tc"}) CHECK(plugin_name_hint(hook, installed) == "did you mean 'ebpf'?");
  CHECK(plugin_name_hint("nftables", {"iptables"}) == "did you mean 'iptables'?");  // spelling, as before
  CHECK(plugin_name_hint("xdp", {"nft"}).empty());
}

TEST_CASE("a stripped plugin still loads (entry points come from the dynamic symbol table)") {
  auto dir = fs::temp_directory_path() / ("fwe-loader-strip-" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto copy = dir / "libfwe_good.so";
  fs::copy_file(fs::path(FWE_TEST_PLUGIN_DIR) / "libfwe_good.so", copy, fs::copy_options::overwrite_existing);
  chmod(dir.c_str(), 0755);
  chmod(copy.c_str(), 0644);
  REQUIRE(std::system(("strip --strip-unneeded " + copy.string()).c_str()) == 0);
  auto info = PluginLoader::inspect(copy.string());
  CHECK(info.problem.empty());
  CHECK(info.name == "testbe");
  fs::remove_all(dir);
}

TEST_CASE("plugins others could write are refused") {
  auto dir = fs::temp_directory_path() / ("fwe-loader-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto copy = dir / "libfwe_good.so";
  fs::copy_file(fs::path(FWE_TEST_PLUGIN_DIR) / "libfwe_good.so", copy, fs::copy_options::overwrite_existing);
  chmod(dir.c_str(), 0755);
  chmod(copy.c_str(), 0664);
  auto info = PluginLoader::inspect(copy.string());
  CHECK(info.problem.find("writable by group or others") != std::string::npos);
  chmod(copy.c_str(), 0644);
  chmod(dir.c_str(), 0777);
  info = PluginLoader::inspect(copy.string());
  CHECK(info.problem.find("writable by group or others") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("a plugin reached through a link, or below a directory others could write, is refused") {
  const auto base = fs::temp_directory_path() / ("fwe-loader-above-" + std::to_string(getpid()));
  const auto open_dir = base / "open", safe_dir = base / "safe", plugins = open_dir / "plugins";
  fs::create_directories(plugins);
  fs::create_directories(safe_dir);
  const auto plugin = plugins / "libfwe_good.so";
  fs::copy_file(fs::path(FWE_TEST_PLUGIN_DIR) / "libfwe_good.so", plugin,
                fs::copy_options::overwrite_existing);
  chmod(base.c_str(), 0755);
  chmod(safe_dir.c_str(), 0755);
  chmod(plugins.c_str(), 0755);
  chmod(plugin.c_str(), 0644);
  chmod(open_dir.c_str(), 0755);
  CHECK(PluginLoader::inspect(plugin.string()).problem.empty());
  chmod(open_dir.c_str(), 0777);  // anyone could move plugins/ away and put another in its place
  auto info = PluginLoader::inspect(plugin.string());
  CHECK(info.problem.find(open_dir.string() + " is writable by group or others") != std::string::npos);
  // A link in a safe directory is judged by where it leads, and that is what would be loaded.
  fs::create_symlink(plugin, safe_dir / "libfwe_good.so");
  info = PluginLoader::inspect((safe_dir / "libfwe_good.so").string());
  CHECK(info.problem.find(open_dir.string() + " is writable by group or others") != std::string::npos);
  chmod(open_dir.c_str(), 01777);  // sticky, as /tmp: others add entries but cannot move ours
  info = PluginLoader::inspect((safe_dir / "libfwe_good.so").string());
  CHECK(info.problem.empty());
  CHECK(info.path == plugin.string());
  chmod(plugins.c_str(), 01777);  // but where the plugins are, anyone could add one
  CHECK(PluginLoader::inspect(plugin.string()).problem.find("writable by group or others") !=
        std::string::npos);
  fs::remove_all(base);
}
