// A plugin that needs a symbol no library provides: loading it must fail with the symbol's name.
#include "fwengine/plugin.hpp"

void helper_from_missing_library();
extern "C" FWE_API const fwe::PluginDescriptor unresolved_descriptor{
    FWE_PLUGIN_ABI_VERSION, fwe::PluginKind::backend, "unresolved", "1.0", "missing dependency"};
BOOST_DLL_ALIAS(unresolved_descriptor, fwe_plugin_descriptor)
extern "C" FWE_API void fwe_touch() {
  helper_from_missing_library();
}
