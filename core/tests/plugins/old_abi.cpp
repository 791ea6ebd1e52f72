// A plugin built for another ABI version: the loader must refuse it before creating anything.
#include "fwengine/plugin.hpp"

extern "C" FWE_API const fwe::PluginDescriptor old_descriptor{
    FWE_PLUGIN_ABI_VERSION + 1, fwe::PluginKind::backend, "oldabi", "0.0.9", "wrong ABI"};
BOOST_DLL_ALIAS(old_descriptor, fwe_plugin_descriptor)
