// test_sha256.cpp - our SHA-256, both its portable rounds and the CPU's SHA instructions, against
// the FIPS 180-4 examples and OpenSSL.
#include <catch2/catch.hpp>

#include "../src/sha256.hpp"

#include <openssl/evp.h>

#include <random>
#include <string>

namespace {

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0xf];
  }
  return out;
}

// The digest of `text` given in pieces of at most `piece` bytes.
std::string ours(std::string_view text, bool cpu_extensions, std::size_t piece) {
  fwe::detail::Sha256 sha(cpu_extensions);
  for (std::size_t at = 0; at < text.size(); at += piece) sha.update(text.substr(at, piece));
  auto digest = sha.finish();
  return hex(digest.data(), digest.size());
}

std::string openssl(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  REQUIRE(EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) == 1);
  return hex(digest, length);
}

}  // namespace

TEST_CASE("SHA-256 of the FIPS 180-4 examples") {
  for (bool cpu : {true, false}) {
    CHECK(ours("", cpu, 64) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(ours("abc", cpu, 64) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(ours("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", cpu, 64) ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    CHECK(ours(std::string(1000000, 'a'), cpu, 4096) ==
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

TEST_CASE("SHA-256 equals OpenSSL's for every length around the block edges and any piece size") {
  std::mt19937 random(7);
  std::string text;
  for (std::size_t size = 0; size <= 300; ++size) {
    text.resize(size);
    for (char& c : text) c = static_cast<char>(random());
    const std::string expected = openssl(text);
    for (std::size_t piece : {1, 3, 55, 64, 65, 300}) {
      CHECK(ours(text, true, piece) == expected);
      CHECK(ours(text, false, piece) == expected);
    }
  }
}
