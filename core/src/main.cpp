// main.cpp - the fwengine executable.
#include "cli.hpp"

int main(int argc, char** argv) {
  return fwe::cli::run(argc, argv);
}
