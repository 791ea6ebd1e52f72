// test_slim_vector.cpp - SlimVector against std::vector: the same operations, in a seeded random order,
// leave the same elements (strings, so that a missed destructor or a double one shows under ASan).
#include <catch2/catch.hpp>

#include "fwengine/slim_vector.hpp"

#include <random>
#include <string>
#include <vector>

namespace {

using fwe::SlimVector;

void require_same(const SlimVector<std::string>& slim, const std::vector<std::string>& wide) {
  REQUIRE(slim.size() == wide.size());
  REQUIRE(slim.empty() == wide.empty());
  REQUIRE(std::equal(slim.begin(), slim.end(), wide.begin(), wide.end()));
}

}  // namespace

TEST_CASE("a slim vector takes one pointer and allocates nothing while empty") {
  STATIC_REQUIRE(sizeof(SlimVector<std::string>) == sizeof(void*));
  SlimVector<int> empty;
  CHECK(empty.data() == nullptr);
  CHECK(empty.capacity() == 0);
  CHECK(empty.begin() == empty.end());
  empty.shrink_to_fit();
  CHECK(empty.data() == nullptr);
}

TEST_CASE("a slim vector does what std::vector does, operation by operation") {
  std::mt19937 random(7);
  auto pick = [&](std::size_t bound) { return std::uniform_int_distribution<std::size_t>(0, bound)(random); };
  SlimVector<std::string> slim;
  std::vector<std::string> wide;
  for (int step = 0; step < 20000; ++step) {
    // Long enough that none fits in std::string's own buffer.
    const std::string value = "element number " + std::to_string(step) + " of the sequence";
    switch (pick(11)) {
      case 0:
      case 1:
        slim.push_back(value);
        wide.push_back(value);
        break;
      case 2:
        if (!wide.empty()) {  // an argument that is an element of the vector itself, as it grows
          const std::size_t i = pick(wide.size() - 1);
          slim.shrink_to_fit();
          slim.emplace_back(slim[i]);
          wide.emplace_back(wide[i]);
        }
        break;
      case 3: {
        const std::size_t at = pick(wide.size());
        slim.insert(slim.begin() + at, value);
        wide.insert(wide.begin() + static_cast<std::ptrdiff_t>(at), value);
        break;
      }
      case 4:
        if (!wide.empty()) {  // a range of itself, inserted into itself
          const std::size_t first = pick(wide.size() - 1);
          const std::size_t last = first + pick(std::min<std::size_t>(3, wide.size() - first));
          const std::size_t at = pick(wide.size());
          const std::vector<std::string> part(wide.begin() + static_cast<std::ptrdiff_t>(first),
                                              wide.begin() + static_cast<std::ptrdiff_t>(last));
          slim.insert(slim.begin() + at, slim.begin() + first, slim.begin() + last);
          wide.insert(wide.begin() + static_cast<std::ptrdiff_t>(at), part.begin(), part.end());
        }
        break;
      case 5:
        if (!wide.empty()) {
          const std::size_t at = pick(wide.size() - 1);
          slim.erase(slim.begin() + at);
          wide.erase(wide.begin() + static_cast<std::ptrdiff_t>(at));
        }
        break;
      case 6: {
        const std::size_t first = pick(wide.size());
        const std::size_t last = first + pick(wide.size() - first);
        slim.erase(slim.begin() + first, slim.begin() + last);
        wide.erase(wide.begin() + static_cast<std::ptrdiff_t>(first),
                   wide.begin() + static_cast<std::ptrdiff_t>(last));
        break;
      }
      case 7:
        if (!wide.empty()) {
          slim.pop_back();
          wide.pop_back();
        }
        break;
      case 8: {
        const char drop = static_cast<char>('0' + pick(9));
        auto ends_with_digit = [&](const std::string& s) { return s[s.find(" of") - 1] == drop; };
        CHECK(erase_if(slim, ends_with_digit) == std::erase_if(wide, ends_with_digit));
        break;
      }
      case 9: {
        SlimVector<std::string> copy = slim;  // copy, then move back in
        require_same(copy, wide);
        slim = std::move(copy);
        break;
      }
      case 10:
        if (pick(50) == 0) {
          slim.clear();
          wide.clear();
        }
        break;
      default:
        slim.assign(wide.begin(), wide.end());
        break;
    }
    require_same(slim, wide);
  }
}

TEST_CASE("slim vectors compare element by element") {
  const SlimVector<int> a{1, 2, 3};
  CHECK(a == SlimVector<int>{1, 2, 3});
  CHECK(a != SlimVector<int>{1, 2});
  CHECK(a < SlimVector<int>{1, 3});
  CHECK(SlimVector<int>{} < a);
  SlimVector<int> b;
  b = {4, 5};
  CHECK(b.front() == 4);
  CHECK(b.back() == 5);
  CHECK_THROWS_AS(b.at(2), std::out_of_range);
}

namespace {

// A value whose copy throws once `copies_left` copies were made (a std::bad_alloc, as in the IR).
struct Fragile {
  static inline int copies_left = 0;
  std::string text = "a value long enough to live on the heap";
  Fragile() = default;
  Fragile(const Fragile& other) : text(other.text) {
    if (copies_left-- == 0) throw std::bad_alloc();
  }
  Fragile(Fragile&&) noexcept = default;
  Fragile& operator=(const Fragile&) = default;
  Fragile& operator=(Fragile&&) noexcept = default;
};

}  // namespace

TEST_CASE("a copy that throws leaves a slim vector as it was, and a half-built one freed") {
  const std::vector<Fragile> three(3);
  SlimVector<Fragile> slim;
  slim.push_back(Fragile());
  Fragile::copies_left = 1;  // the second copy throws
  CHECK_THROWS_AS(slim.insert(slim.begin(), three.begin(), three.end()), std::bad_alloc);
  CHECK(slim.size() == 1);
  Fragile::copies_left = 2;
  CHECK_THROWS_AS(SlimVector<Fragile>(three.begin(), three.end()), std::bad_alloc);  // ASan: nothing leaks
  Fragile::copies_left = 100;
  SlimVector<Fragile> copy(three.begin(), three.end());
  CHECK(copy.size() == 3);
}
