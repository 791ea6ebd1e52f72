// fwengine/loader.hpp - finds, checks and loads plugins (Boost.DLL).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "fwengine/plugin.hpp"

namespace fwe {

struct PluginInfo {
  std::string path;
  std::uint32_t abi_version = 0;
  PluginKind kind = PluginKind::frontend;
  std::string name, version, summary;
  std::string problem;  // why it cannot be used; empty when it can
};

// A plugin object together with the library it came from; the object dies first.
template <typename T>
class Loaded {
 public:
  Loaded(boost::dll::shared_library lib, std::unique_ptr<T> object)
      : library_(std::move(lib)), object_(std::move(object)) {}
  Loaded(Loaded&&) noexcept = default;
  Loaded& operator=(Loaded&&) noexcept = default;
  ~Loaded() { object_.reset(); }
  T* operator->() const { return object_.get(); }
  T& operator*() const { return *object_; }

 private:
  boost::dll::shared_library library_;  // declared first: destroyed last
  std::unique_ptr<T> object_;
};

class PluginLoader {
 public:
  // The installed plugin directory (relative to the executable) comes first, then extra_dirs.
  explicit PluginLoader(std::vector<std::string> extra_dirs);
  const std::vector<std::string>& directories() const { return dirs_; }
  // Every libfwe_*.so found, with problems (wrong ABI, bad permissions, no factory) reported, not thrown.
  std::vector<PluginInfo> discover() const;
  // Throws UsageError for an unknown name and RuntimeError for a plugin that fails to load.
  Loaded<Frontend> frontend(const std::string& name, const PluginContext& context) const;
  Loaded<Backend> backend(const std::string& name, const PluginContext& context) const;
  // Checks one file (exists, safe permissions, descriptor, ABI) without running any of its code.
  static PluginInfo inspect(const std::string& path);
  // The plugin called name: libfwe_NAME.so of the first directory that has that file, when it is sound
  // and of the kind asked for; otherwise whatever discover() finds (a plugin may name itself freely).
  // Throws like frontend() and backend(), which lets a command that never loads the plugin check a name.
  PluginInfo locate(const std::string& name, PluginKind kind) const;

 private:
  // inspect(), with the library it loaded to read the descriptor (empty when it could not load it).
  struct Inspected {
    PluginInfo info;
    boost::dll::shared_library library;
  };
  static Inspected inspect_open(const std::string& path);
  const PluginInfo& find(const std::string& name, PluginKind kind, const std::vector<PluginInfo>& all) const;
  std::vector<std::string> dirs_;
  // Every library handed out stays loaded while the loader lives: an exception a plugin threw may
  // still be in flight after its object is gone, and its destructor is in that library. So does every
  // library locate() found, which a command usually loads next: a second dlopen of a library that is
  // still loaded does not relocate it again.
  mutable std::vector<boost::dll::shared_library> kept_;
};

// "did you mean 'x'?" for a plugin name that is not installed: the plugin a tool's or hook's name
// stands for (nftables: nft, xdp: ebpf), else the installed name closest in spelling; empty when none fits.
std::string plugin_name_hint(std::string_view name, const std::vector<std::string_view>& installed);

// The directory the running executable is in.
std::string executable_dir();

}  // namespace fwe
