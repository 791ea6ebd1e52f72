# fwengine_add_plugin(<name> SOURCES <files...>)
# Builds a frontend or backend plugin as a MODULE named libfwe_<name>.so into the plugin directory, with
# hidden visibility (only the Boost.DLL aliases are exported) and every symbol resolved at link time.
# Works in the engine's own tree and, through the installed fwengine CMake package, out of tree.
function(fwengine_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  add_library(fwe_${name} MODULE ${ARG_SOURCES})
  if(TARGET fwcore)
    target_link_libraries(fwe_${name} PRIVATE fwcore)
  else()
    target_link_libraries(fwe_${name} PRIVATE fwengine::fwcore)
  endif()
  set_target_properties(fwe_${name} PROPERTIES PREFIX "lib" CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(fwe_${name} PRIVATE -Wl,-z,defs)
  if(DEFINED FWE_PLUGIN_OUTPUT_DIR)
    set_target_properties(fwe_${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${FWE_PLUGIN_OUTPUT_DIR})
    install(TARGETS fwe_${name} LIBRARY DESTINATION ${FWE_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
