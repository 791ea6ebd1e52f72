// cli.hpp - the fwengine command line (docs: cli.md, fwengine(8)).
#pragma once

namespace fwe::cli {
// Runs one command; returns the process exit code (0 done, 1 runtime failure, 2 bad input, 3 diff).
int run(int argc, char** argv);
}  // namespace fwe::cli
