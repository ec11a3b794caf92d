// dms/core/rng.hpp: Philox4x32-10, the counter-based random number generator of dms.
//
// Merges that drop or sample weights (DARE, TIES with random tie-breaks, noise injection) must
// give the same bits whether they run on one CPU thread, sixteen, or a GPU, and whatever order
// tensors are processed in. A counter-based generator makes that trivial: element i of a stream
// is a pure function of (key, stream id, i), so every thread computes the elements it owns and
// nobody shares or advances a state. Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011) is the generator cuRAND, PyTorch and JAX offer for the
// same reason; it passes BigCrush and costs 10 rounds of two 32x32->64 multiplies per 4 words.
//
// Everything a kernel needs is DMS_HOST_DEVICE, constexpr, and built from plain structs (no
// std::array, no host-only calls), so CUDA code includes this header and draws the same bits.
// Known-answer vectors from Random123's tests/kat_vectors are checked in tests/core/rng_test.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! The 128-bit counter (input block) of Philox4x32.
struct philox_counter {
  std::uint32_t v[4];
  friend constexpr bool operator==(const philox_counter &, const philox_counter &) = default;
};
//! The 64-bit key of Philox4x32.
struct philox_key {
  std::uint32_t v[2];
  friend constexpr bool operator==(const philox_key &, const philox_key &) = default;
};

namespace detail {

// Round multipliers and key increments of Philox4x32, from Random123 (philox.h): the multipliers
// were chosen by the authors for avalanche, the increments are the golden ratio and sqrt(3) - 1
// as 32-bit fractions (a Weyl sequence, so round keys never repeat).
inline constexpr std::uint32_t philox_m0 = 0xD2511F53u;
inline constexpr std::uint32_t philox_m1 = 0xCD9E8D57u;
inline constexpr std::uint32_t philox_w0 = 0x9E3779B9u;
inline constexpr std::uint32_t philox_w1 = 0xBB67AE85u;

DMS_HOST_DEVICE constexpr philox_counter philox_round(philox_counter c, philox_key k) noexcept {
  const std::uint64_t p0 = static_cast<std::uint64_t>(philox_m0) * c.v[0];
  const std::uint64_t p1 = static_cast<std::uint64_t>(philox_m1) * c.v[2];
  const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
  const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
  return philox_counter{{hi1 ^ c.v[1] ^ k.v[0], lo1, hi0 ^ c.v[3] ^ k.v[1], lo0}};
}

//! Philox4x32 with `Rounds` rounds (Random123's philox4x32_R); the key is bumped before every
//! round but the first.
template <int Rounds>
DMS_HOST_DEVICE constexpr philox_counter philox4x32(philox_counter ctr, philox_key key) noexcept {
  static_assert(Rounds >= 1 && Rounds <= 16, "Random123 defines 1 to 16 rounds");
  ctr = philox_round(ctr, key);
  for (int r = 1; r < Rounds; ++r) {
    key.v[0] += philox_w0;
    key.v[1] += philox_w1;
    ctr = philox_round(ctr, key);
  }
  return ctr;
}

//! splitmix64's finalizer (Steele, Lea, Flood 2014): a bijection on 64 bits with full avalanche.
DMS_HOST_DEVICE constexpr std::uint64_t splitmix64(std::uint64_t z) noexcept {
  z += 0x9E3779B97F4A7C15u; // 2^64 / golden ratio
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
  return z ^ (z >> 31);
}

//! FNV-1a, 64-bit (offset basis and prime from the FNV specification), over the bytes of `s`.
constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
  std::uint64_t h = 0xCBF29CE484222325u;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3u;
  }
  return h;
}

} // namespace detail

//! Philox4x32-10: the 4 output words for one counter and key.
DMS_HOST_DEVICE constexpr philox_counter philox4x32_10(philox_counter ctr, philox_key key) noexcept {
  return detail::philox4x32<10>(ctr, key);
}

//! A float in [0, 1) from 32 random bits: the top 24 bits times 2^-24, so every value is a
//! multiple of 2^-24 and exactly representable (24 bits is the f32 significand); 1 is never hit.
DMS_HOST_DEVICE constexpr float uniform_from_bits(std::uint32_t bits) noexcept {
  return static_cast<float>(bits >> 8) * 0x1p-24f;
}

//! A random-access stream: element i of stream (key, stream_id) is a pure function of them, so
//! any thread (or GPU thread) can draw element i without sharing state.
//!
//! Element i is word i % 4 of philox4x32_10({lo(i / 4), hi(i / 4), lo(stream_id),
//! hi(stream_id)}, key), where lo/hi are the low and high 32 bits; an index therefore addresses
//! 2^64 elements (2^62 counters) per stream and 2^64 streams per key.
//! @code
//!   const dms::philox_stream s(dms::key_for(seed, "blk.0.ffn_up.weight", 1), 0);
//!   for (std::size_t i = begin; i < end; ++i)  // any thread, any chunk: same values
//!     keep[i] = s.uniform(i) >= drop_rate;
//! @endcode
class philox_stream {
public:
  DMS_HOST_DEVICE constexpr philox_stream(philox_key key, std::uint64_t stream_id) noexcept
      : key_(key), stream_id_(stream_id) {}

  DMS_HOST_DEVICE constexpr philox_key key() const noexcept { return key_; }
  DMS_HOST_DEVICE constexpr std::uint64_t stream_id() const noexcept { return stream_id_; }

  //! The 4 words of elements 4 * block .. 4 * block + 3 (one Philox call).
  DMS_HOST_DEVICE constexpr philox_counter block(std::uint64_t block) const noexcept {
    return philox4x32_10(
        philox_counter{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                        static_cast<std::uint32_t>(stream_id_),
                        static_cast<std::uint32_t>(stream_id_ >> 32)}},
        key_);
  }
  //! 32 random bits: element `index` of the stream.
  DMS_HOST_DEVICE constexpr std::uint32_t bits(std::uint64_t index) const noexcept {
    return block(index / 4).v[index % 4];
  }
  //! A float in [0, 1): uniform_from_bits(bits(index)).
  DMS_HOST_DEVICE constexpr float uniform(std::uint64_t index) const noexcept {
    return uniform_from_bits(bits(index));
  }

private:
  philox_key key_;
  std::uint64_t stream_id_;
};

//! The key for one tensor of one model in a merge, stable across platforms, compilers and runs:
//! x = splitmix64(seed); x = splitmix64(x ^ fnv1a64(tensor_name)); x = splitmix64(x ^
//! model_index); key = {lo(x), hi(x)}. Changing this formula changes every seeded merge's output,
//! so it is pinned by a test.
constexpr philox_key key_for(std::uint64_t seed, std::string_view tensor_name,
                             std::uint32_t model_index) noexcept {
  std::uint64_t x = detail::splitmix64(seed);
  x = detail::splitmix64(x ^ detail::fnv1a64(tensor_name));
  x = detail::splitmix64(x ^ model_index);
  return philox_key{{static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(x >> 32)}};
}

//! out[j] = s.uniform(first_index + j) for every j, one Philox call per 4 elements.
inline void fill_uniform(philox_stream s, std::uint64_t first_index,
                         std::span<float> out) noexcept {
  const std::size_t n = out.size();
  std::size_t j = 0;
  std::uint64_t index = first_index;
  for (; j < n && index % 4 != 0; ++j, ++index) out[j] = s.uniform(index); // up to a block start
  for (; n - j >= 4; j += 4, index += 4) {
    const philox_counter c = s.block(index / 4);
    for (int w = 0; w < 4; ++w) out[j + static_cast<std::size_t>(w)] = uniform_from_bits(c.v[w]);
  }
  for (; j < n; ++j, ++index) out[j] = s.uniform(index);
}

DMS_NAMESPACE_END
