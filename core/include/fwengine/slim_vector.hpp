// fwengine/slim_vector.hpp - a vector in one pointer, for the lists that every IR rule carries.
//
// A rule has five lists of matches and most are empty: as std::vector they take 24 bytes each, and a
// policy of 50,000 rules holds 50,000 of each. SlimVector keeps its size and capacity in front of its
// elements, in the same block, so it takes 8 bytes and an empty one allocates nothing. It reads like
// std::vector (the part of it the IR needs); its iterators are pointers.
#pragma once

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace fwe {

template <typename T>
class SlimVector {
  static_assert(alignof(T) <= 8, "the elements follow an 8-byte header");
  static_assert(std::is_nothrow_move_constructible_v<T>, "elements are moved when the block grows");

 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using reference = T&;
  using const_reference = const T&;
  using pointer = T*;
  using const_pointer = const T*;
  using iterator = T*;
  using const_iterator = const T*;

  SlimVector() noexcept = default;
  SlimVector(std::initializer_list<T> values) { build(values.begin(), values.end()); }
  template <std::input_iterator It>
  SlimVector(It first, It last) {
    build(first, last);
  }
  SlimVector(const SlimVector& other) { build(other.begin(), other.end()); }
  SlimVector(SlimVector&& other) noexcept : data_(std::exchange(other.data_, nullptr)) {}
  SlimVector& operator=(const SlimVector& other) {
    if (this != &other) SlimVector(other).swap(*this);
    return *this;
  }
  SlimVector& operator=(SlimVector&& other) noexcept {
    SlimVector(std::move(other)).swap(*this);
    return *this;
  }
  SlimVector& operator=(std::initializer_list<T> values) {
    SlimVector(values).swap(*this);
    return *this;
  }
  ~SlimVector() { release(); }

  void swap(SlimVector& other) noexcept { std::swap(data_, other.data_); }
  friend void swap(SlimVector& a, SlimVector& b) noexcept { a.swap(b); }

  size_type size() const noexcept { return data_ ? header()->size : 0; }
  size_type capacity() const noexcept { return data_ ? header()->capacity : 0; }
  bool empty() const noexcept { return size() == 0; }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  iterator begin() noexcept { return data_; }
  iterator end() noexcept { return data_ + size(); }
  const_iterator begin() const noexcept { return data_; }
  const_iterator end() const noexcept { return data_ + size(); }
  const_iterator cbegin() const noexcept { return begin(); }
  const_iterator cend() const noexcept { return end(); }

  T& operator[](size_type i) { return data_[i]; }
  const T& operator[](size_type i) const { return data_[i]; }
  T& at(size_type i) {
    if (i >= size()) throw std::out_of_range("SlimVector::at");
    return data_[i];
  }
  const T& at(size_type i) const { return const_cast<SlimVector&>(*this).at(i); }
  T& front() { return data_[0]; }
  const T& front() const { return data_[0]; }
  T& back() { return data_[size() - 1]; }
  const T& back() const { return data_[size() - 1]; }

  void reserve(size_type wanted) {
    if (wanted > capacity()) reallocate(wanted);
  }
  void shrink_to_fit() {
    if (empty()) {
      release();
    } else if (size() < capacity()) {
      reallocate(size());
    }
  }
  void clear() noexcept {
    if (!data_) return;
    std::destroy(begin(), end());
    header()->size = 0;
  }

  template <typename... Args>
  T& emplace_back(Args&&... args) {
    if (size() < capacity()) {
      ::new (static_cast<void*>(end())) T(std::forward<Args>(args)...);
    } else {
      // The arguments may refer to an element of this vector: build the value before the block moves.
      T value(std::forward<Args>(args)...);
      reallocate(grown());
      ::new (static_cast<void*>(end())) T(std::move(value));
    }
    ++header()->size;
    return back();
  }
  void push_back(const T& value) { emplace_back(value); }
  void push_back(T&& value) { emplace_back(std::move(value)); }
  void pop_back() {
    std::destroy_at(&back());
    --header()->size;
  }

  template <typename... Args>
  iterator emplace(const_iterator position, Args&&... args) {
    const auto at = position - begin();
    emplace_back(std::forward<Args>(args)...);
    std::rotate(begin() + at, end() - 1, end());
    return begin() + at;
  }
  iterator insert(const_iterator position, const T& value) { return emplace(position, value); }
  iterator insert(const_iterator position, T&& value) { return emplace(position, std::move(value)); }
  template <std::input_iterator It>
  iterator insert(const_iterator position, It first, It last) {
    const auto at = position - begin();
    const size_type before = size();
    if constexpr (std::is_convertible_v<It, const T*>) {
      if (first != last && !std::less<const T*>{}(first, begin()) &&
          std::less<const T*>{}(first, end())) {  // a part of itself: copy it first
        const SlimVector part(first, last);
        return insert(begin() + at, part.begin(), part.end());
      }
    }
    if constexpr (std::forward_iterator<It>)
      reserve(before + static_cast<size_type>(std::distance(first, last)));
    try {
      for (; first != last; ++first) emplace_back(*first);
    } catch (...) {  // a copy that throws leaves the vector as it was
      erase(begin() + before, end());
      throw;
    }
    std::rotate(begin() + at, begin() + static_cast<difference_type>(before), end());
    return begin() + at;
  }
  iterator erase(const_iterator position) { return erase(position, position + 1); }
  iterator erase(const_iterator first, const_iterator last) {
    T* from = begin() + (first - begin());
    T* to = begin() + (last - begin());
    if (from == to) return from;
    T* new_end = std::move(to, end(), from);
    std::destroy(new_end, end());
    header()->size = static_cast<std::uint32_t>(new_end - begin());
    return from;
  }
  template <std::input_iterator It>
  void assign(It first, It last) {
    clear();
    insert(end(), first, last);
  }

  friend bool operator==(const SlimVector& a, const SlimVector& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend auto operator<=>(const SlimVector& a, const SlimVector& b) requires std::three_way_comparable<T> {
    return std::lexicographical_compare_three_way(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  struct alignas(8) Header {
    std::uint32_t size = 0;
    std::uint32_t capacity = 0;
  };

  Header* header() const noexcept { return reinterpret_cast<Header*>(data_) - 1; }
  size_type grown() const { return std::max<size_type>(1, capacity() * 2); }

  // A constructor's filling: the destructor does not run when it throws, so the block is freed here.
  template <typename It>
  void build(It first, It last) {
    try {
      insert(end(), first, last);
    } catch (...) {
      release();
      throw;
    }
  }

  void reallocate(size_type capacity) {
    if (capacity > UINT32_MAX) throw std::length_error("SlimVector: more than 2^32 elements");
    void* block = ::operator new(sizeof(Header) + capacity * sizeof(T));
    Header* fresh =
        ::new (block) Header{static_cast<std::uint32_t>(size()), static_cast<std::uint32_t>(capacity)};
    T* elements = reinterpret_cast<T*>(fresh + 1);
    if (data_) std::uninitialized_move(begin(), end(), elements);
    release();
    data_ = elements;
  }
  void release() noexcept {
    if (!data_) return;
    std::destroy(begin(), end());
    ::operator delete(static_cast<void*>(header()));
    data_ = nullptr;
  }

  T* data_ = nullptr;
};

// As std::erase_if for std::vector.
template <typename T, typename Predicate>
std::size_t erase_if(SlimVector<T>& v, Predicate predicate) {
  auto kept_end = std::remove_if(v.begin(), v.end(), predicate);
  const auto erased = static_cast<std::size_t>(v.end() - kept_end);
  v.erase(kept_end, v.end());
  return erased;
}

}  // namespace fwe
