// Fuzz target: the engine's own config, fwengine.conf (fwengine.conf(5)), read as the CLI reads it:
// from a file (here a memfd, so nothing is written to disk), over options the command line set.
#include <sys/mman.h>

#include "cli_config.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = memfd_create("fwengine.conf", MFD_CLOEXEC);
  if (fd < 0) fwe::fuzz::fail("memfd_create failed");
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) fwe::fuzz::fail("writing the memfd failed");
    done += static_cast<std::size_t>(n);
  }
  fwe::cli::Options options;
  options.config = "/proc/self/fd/" + std::to_string(fd);
  options.backend = "nft";  // given on the command line: the config's backend must not win
  options.frontend_options = {"etcd-ca=/given.pem"};
  fwe::Diagnostics diag;
  fwe::cli::read_config(options, diag);
  close(fd);
  if (options.backend != "nft") fwe::fuzz::fail("the config overrode --backend");
  return 0;
}
