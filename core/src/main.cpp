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
// most) and huge pages for metadata only once it is large keep a small apply's RSS from growing by a
// page per arena. See docs/benchmarks.md.
extern "C" {
__attribute__((visibility("default"))) const char* malloc_conf = "metadata_thp:auto,narenas:1";
}

#include <cstdlib>

namespace {

// jemalloc grows its heap by mappings of 2, 2.5, 3, 3.5, 4, 5, 6 ... MiB. The kernel puts a mapping on
// the 2 MiB grid only when its length is a whole number of 2 MiB, so the others start off it, and the
// huge page at each seam is faulted in 4 KiB pieces: 2,000 of the 2,300 faults of a 10,000-rule apply.
// One block just under jemalloc's oversize threshold (8 MiB), taken and given back before anything
// else, moves that growth to the 8 MiB size class and up, all whole huge pages (10,000 rules: 330
// faults, 122 -> 101 ms). The block is never touched, so it costs no memory; jemalloc reuses it.
void start_heap_on_huge_pages() {
  constexpr std::size_t just_under_oversize = 7u << 20;
  void* volatile block = std::malloc(just_under_oversize);  // volatile: the pair must not be elided
  std::free(block);
}

}  // namespace
#endif

int main(int argc, char** argv) {
#if defined(FWE_JEMALLOC)
  start_heap_on_huge_pages();
#endif
  return fwe::cli::run(argc, argv);
}
