// main.cpp - the fwengine executable.
#include "cli.hpp"

#if defined(__SANITIZE_ADDRESS__)
// Sanitizer builds only: LeakSanitizer's walk of dynamic thread-local storage crashes (GCC 12's runtime
// on glibc 2.36) once a plugin has brought in libraries with TLS of their own (gnutls, through libcurl).
// Not taking TLS as a root can only make it report more leaks, never hide one.
extern "C" __attribute__((visibility("default"))) const char* __lsan_default_options() {
  return "use_tls=0:print_suppressions=0";
}
#endif

#if defined(FWE_JEMALLOC)
// jemalloc reads its options from this symbol. Huge pages: the system's choice until a large policy
// asks for them (cli_memory.cpp; jemalloc's own, thp:always, would hold a small command's first
// allocations in them too, 6 MiB of them before main). One arena (the engine has two busy threads at
// most), none of its own for large blocks (so that cli_memory.cpp advises every extent), and huge pages
// for metadata only once it is large keep a small apply's RSS from growing by a page per arena. Freed
// (dirty) extents are reused for requests of any size (lg_extent_max_active_fit): by default jemalloc
// reuses none more than 64 times the size asked for, so what the YAML tree gave back in blocks of
// megabytes went unused and the IR and the backends' plans took fresh pages (50,000 rules: apply's peak
// RSS 39.7 -> 37.7 MiB; the Calico workload's 59.8 -> 53.7). The fragmentation that limit guards
// against did not build up in the daemon either (8 reloads of the 50,000-rule policy: at most 61.5 MiB,
// 85.8 with the default). See docs/benchmarks.md.
extern "C" {
__attribute__((visibility("default"))) const char* malloc_conf =
    "metadata_thp:auto,narenas:1,oversize_threshold:0,lg_extent_max_active_fit:30";
}
#endif

int main(int argc, char** argv) {
  return fwe::cli::run(argc, argv);
}
