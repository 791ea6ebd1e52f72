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

int main(int argc, char** argv) {
  return fwe::cli::run(argc, argv);
}
