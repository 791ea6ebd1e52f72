// loader.cpp - plugin discovery and loading. A plugin is refused, with a message saying why, when its
// file or a directory above it could be changed by someone other than root or the caller, when it lacks the
// exported descriptor or factory, or when it was built for another ABI version.
#include "fwengine/loader.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <filesystem>
#include <utility>

namespace fwe {

namespace fs = std::filesystem;

namespace {

constexpr const char* kDescriptorAlias = "fwe_plugin_descriptor";
constexpr const char* kFrontendAlias = "fwe_create_frontend";
constexpr const char* kBackendAlias = "fwe_create_backend";

// Why someone other than root or the caller could change the plugin at `real` (a path without symlinks,
// the one loaded): through the file, or through any directory up to / (renaming the one below it away and
// putting another in its place). A sticky directory (/tmp) lets others add entries but not move ours.
std::string unsafe_reason(const fs::path& real) {
  for (fs::path p = real;; p = p.parent_path()) {
    struct stat st {};
    if (stat(p.c_str(), &st) != 0) return "cannot stat " + p.string();
    if (st.st_uid != 0 && st.st_uid != geteuid())
      return p.string() + " is owned by uid " + std::to_string(st.st_uid);
    const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) && p != real.parent_path();
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir)
      return p.string() + " is writable by group or others";
    if (p == p.root_path()) return {};
  }
}

std::string kind_name(PluginKind k) {
  return k == PluginKind::frontend ? "frontend" : "backend";
}

// Why path cannot be loaded, from Boost.DLL's exception: dlerror's message, which names the missing
// symbol or file.
std::string load_failure(const std::exception& e) {
  // Boost.DLL's text ends with a stale errno; keep only dlerror's message.
  std::string what = e.what();
  constexpr std::string_view kMarker = "dlerror system message: ";
  auto start = what.find(kMarker);
  auto end = what.rfind("): ");
  if (start != std::string::npos && end != std::string::npos && end > start)
    what = what.substr(start + kMarker.size(), end - start - kMarker.size());
  return "cannot load it: " + what;
}

boost::dll::shared_library load(const std::string& path) {
  return boost::dll::shared_library(path,
                                    boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
}

boost::dll::shared_library open_library(const std::string& path) {
  try {
    return load(path);
  } catch (const std::exception& e) {
    throw RuntimeError("plugin '" + path + "': " + load_failure(e));
  }
}

// What users type for a backend: the name of the kernel interface or tool, not the plugin's.
constexpr std::pair<std::string_view, std::string_view> kPluginAliases[] = {
    {"nftables", "nft"}, {"iptables-legacy", "iptables"}, {"bpf", "ebpf"}, {"xdp", "ebpf"}, {"tc", "ebpf"},
};

}  // namespace

std::string plugin_name_hint(std::string_view name, const std::vector<std::string_view>& installed) {
  for (const auto& [alias, plugin] : kPluginAliases)
    if (name == alias && std::find(installed.begin(), installed.end(), plugin) != installed.end())
      return "did you mean '" + std::string(plugin) + "'?";
  return did_you_mean(name, installed);
}

std::string executable_dir() {
  return boost::dll::program_location().parent_path().string();
}

PluginLoader::PluginLoader(std::vector<std::string> extra_dirs) {
  dirs_.push_back((fs::path(executable_dir()) / FWE_PLUGIN_RELDIR).lexically_normal().string());
  for (auto& d : extra_dirs) dirs_.push_back(std::move(d));
}

PluginInfo PluginLoader::inspect(const std::string& path) {
  return inspect_open(path).info;
}

PluginLoader::Inspected PluginLoader::inspect_open(const std::string& path) {
  Inspected inspected;
  PluginInfo& info = inspected.info;
  info.path = path;
  info.name = fs::path(path).stem().string();
  if (info.name.rfind("libfwe_", 0) == 0) info.name = info.name.substr(7);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    info.problem = "file not found (check --plugin-dir)";
    return inspected;
  }
  // What is checked is what is loaded: the file its symlinks lead to, not a link someone could re-point.
  const fs::path real = fs::canonical(path, ec);
  if (ec) {
    info.problem = "cannot resolve " + path + ": " + ec.message();
    return inspected;
  }
  info.path = real.string();  // what a later load opens too
  if (auto why = unsafe_reason(real); !why.empty()) {
    info.problem = "refused: " + why +
                   " (plugins, and the directories above them, must be owned by root or you and not "
                   "group/world-writable)";
    return inspected;
  }
  // Entry points are looked up in the dynamic symbol table (dlsym), which survives `strip`; Boost
  // 1.74's library_info reads only .symtab, which packaging strips.
  bool has_factory = false;
  try {
    inspected.library = load(info.path);
    const auto& lib = inspected.library;
    if (!lib.has(kDescriptorAlias)) {
      info.problem = std::string("missing exported symbol '") + kDescriptorAlias + "'";
      return inspected;
    }
    const auto& d = lib.get_alias<const PluginDescriptor>(kDescriptorAlias);
    info.abi_version = d.abi_version;
    info.kind = d.kind;
    info.name = d.name ? d.name : info.name;
    info.version = d.version ? d.version : "";
    info.summary = d.summary ? d.summary : "";
    has_factory = lib.has(info.kind == PluginKind::frontend ? kFrontendAlias : kBackendAlias);
  } catch (const std::exception& e) {
    info.problem = load_failure(e);  // the caller names the plugin
    return inspected;
  }
  if (info.abi_version != FWE_PLUGIN_ABI_VERSION) {
    info.problem = "ABI version " + std::to_string(info.abi_version) + ", engine expects " +
                   std::to_string(FWE_PLUGIN_ABI_VERSION) + " (rebuild the plugin against this fwengine)";
    return inspected;
  }
  const char* factory = info.kind == PluginKind::frontend ? kFrontendAlias : kBackendAlias;
  if (!has_factory) info.problem = std::string("missing exported symbol '") + factory + "'";
  return inspected;
}

std::vector<PluginInfo> PluginLoader::discover() const {
  std::vector<PluginInfo> found;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      auto name = entry.path().filename().string();
      if (name.rfind("libfwe_", 0) == 0 && entry.path().extension() == ".so")
        files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) found.push_back(inspect(f));
  }
  return found;
}

const PluginInfo& PluginLoader::find(const std::string& name, PluginKind kind,
                                     const std::vector<PluginInfo>& all) const {
  const PluginInfo* broken = nullptr;
  std::vector<std::string_view> names;
  for (const auto& p : all) {
    if (p.kind != kind && p.problem.empty()) continue;
    if (p.name == name) {
      if (p.problem.empty()) return p;
      broken = &p;
    }
    if (p.problem.empty()) names.push_back(p.name);
  }
  if (broken) throw RuntimeError("plugin '" + broken->path + "': " + broken->problem);
  std::string known;
  for (auto n : names) known += (known.empty() ? "" : ", ") + std::string(n);
  std::string hint = plugin_name_hint(name, names);
  throw UsageError("no " + kind_name(kind) + " plugin named '" + name + "' (installed: " +
                   (known.empty() ? "none" : known) + ")" + (hint.empty() ? "" : "; " + hint));
}

PluginInfo PluginLoader::locate(const std::string& name, PluginKind kind) const {
  // Loading every plugin to find one costs more than the rest of a small apply.
  for (const auto& dir : dirs_) {
    std::error_code ec;
    const auto path = (fs::path(dir) / ("libfwe_" + name + ".so")).string();
    if (!fs::is_regular_file(path, ec)) continue;
    auto [info, library] = inspect_open(path);
    if (info.problem.empty() && info.kind == kind && info.name == name) {
      kept_.push_back(std::move(library));  // loading it again for use only counts a reference
      return info;
    }
    break;
  }
  return find(name, kind, discover());
}

Loaded<Frontend> PluginLoader::frontend(const std::string& name, const PluginContext& context) const {
  const auto info = locate(name, PluginKind::frontend);
  auto lib = open_library(info.path);
  auto& create = lib.get_alias<FrontendFactory>(kFrontendAlias);
  auto object = create(context);
  kept_.push_back(lib);
  return Loaded<Frontend>(std::move(lib), std::move(object));
}

Loaded<Backend> PluginLoader::backend(const std::string& name, const PluginContext& context) const {
  const auto info = locate(name, PluginKind::backend);
  auto lib = open_library(info.path);
  auto& create = lib.get_alias<BackendFactory>(kBackendAlias);
  auto object = create(context);
  kept_.push_back(lib);
  return Loaded<Backend>(std::move(lib), std::move(object));
}

}  // namespace fwe
