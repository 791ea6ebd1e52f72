// A plugin with a descriptor but no factory.
#include "fwengine/plugin.hpp"

extern "C" FWE_API const fwe::PluginDescriptor lonely_descriptor{
    FWE_PLUGIN_ABI_VERSION, fwe::PluginKind::frontend, "nofactory", "1.0", "no factory"};
BOOST_DLL_ALIAS(lonely_descriptor, fwe_plugin_descriptor)
