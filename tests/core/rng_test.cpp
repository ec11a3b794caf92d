// Tests of dms/core/rng.hpp: Random123's known answers, the stream addressing, key derivation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "dms/core/rng.hpp"

using dms::philox_counter;
using dms::philox_key;

// Random123 1.14, tests/kat_vectors, "philox4x32 10" lines: counter, key -> output.
static_assert(dms::philox4x32_10({{0, 0, 0, 0}}, {{0, 0}}) ==
                  philox_counter{{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
              "Philox4x32-10 must be usable in constant expressions and match Random123");

TEST_CASE("philox4x32_10 matches Random123's known-answer vectors", "[rng]") {
  struct kat {
    philox_counter ctr;
    philox_key key;
    philox_counter want;
  };
  const kat kats[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       {{0xffffffffu, 0xffffffffu}},
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       {{0xa4093822u, 0x299f31d0u}},
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const kat &k : kats) CHECK(dms::philox4x32_10(k.ctr, k.key) == k.want);

  // The 7-round lines of the same file check the round structure independently of the count.
  CHECK(dms::detail::philox4x32<7>({{0, 0, 0, 0}}, {{0, 0}}) ==
        philox_counter{{0x5f6fb709u, 0x0d893f64u, 0x4f121f81u, 0x4f730a48u}});
  CHECK(dms::detail::philox4x32<7>({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                                   {{0xa4093822u, 0x299f31d0u}}) ==
        philox_counter{{0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au}});
}

TEST_CASE("philox_stream addresses counter {index/4, stream} and word index%4", "[rng]") {
  const philox_key key{{1, 2}};
  const std::uint64_t stream = 0x123456789u;
  const dms::philox_stream s(key, stream);
  const std::uint64_t block = 0x100000002u; // exercises the high counter word
  const philox_counter c =
      dms::philox4x32_10({{2u, 1u, 0x23456789u, 0x1u}}, key); // {lo, hi, stream lo, stream hi}
  for (std::uint32_t w = 0; w < 4; ++w) CHECK(s.bits(4 * block + w) == c.v[w]);
  CHECK(s.block(block) == c);
  // Computed independently (a few lines of Python implementing Random123's philox4x32_R).
  CHECK(s.bits(4 * block + 3) == 0x7a00d079u);
  CHECK(s.key() == key);
  CHECK(s.stream_id() == stream);
  static_assert(dms::philox_stream({{0, 0}}, 0).bits(2) == 0xbc57ac4cu);
}

TEST_CASE("uniform lies in 0 <= u < 1, is a multiple of 2^-24 and has the right mean", "[rng]") {
  CHECK(dms::uniform_from_bits(0) == 0.0f);
  CHECK(dms::uniform_from_bits(0xffffffffu) == 1.0f - 0x1p-24f);
  CHECK(dms::uniform_from_bits(0x80000000u) == 0.5f);
  const dms::philox_stream s(dms::key_for(1, "mean", 0), 0);
  const std::uint64_t n = 1'000'000;
  double sum = 0, sum_sq = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const float u = s.uniform(i);
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    REQUIRE(std::ldexp(u, 24) == std::floor(std::ldexp(u, 24)));
    sum += u;
    sum_sq += static_cast<double>(u) * u;
  }
  const double mean = sum / static_cast<double>(n);
  const double var = sum_sq / static_cast<double>(n) - mean * mean;
  // Standard deviation of the mean of n uniforms is sqrt(1/12 / n); 4 sigma fails once in ~16000.
  const double sigma = std::sqrt(1.0 / 12.0 / static_cast<double>(n));
  CHECK(std::fabs(mean - 0.5) < 4 * sigma);
  CHECK(std::fabs(var - 1.0 / 12.0) < 0.002);
}

TEST_CASE("streams and keys are independent", "[rng]") {
  const philox_key k = dms::key_for(7, "w", 0);
  const dms::philox_stream a(k, 0), b(k, 1), c(dms::key_for(7, "w", 1), 0);
  const std::uint64_t n = 200'000;
  std::size_t equal_ab = 0, equal_ac = 0;
  double sab = 0, sac = 0, sa = 0, sb = 0, sc = 0, saa = 0, sbb = 0, scc = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    equal_ab += a.bits(i) == b.bits(i);
    equal_ac += a.bits(i) == c.bits(i);
    const double x = a.uniform(i), y = b.uniform(i), z = c.uniform(i);
    sa += x, sb += y, sc += z, saa += x * x, sbb += y * y, scc += z * z, sab += x * y,
        sac += x * z;
  }
  const double dn = static_cast<double>(n);
  auto corr = [&](double sxy, double sx, double sy, double sxx, double syy) {
    const double cov = sxy / dn - sx / dn * (sy / dn);
    return cov / std::sqrt((sxx / dn - sx / dn * (sx / dn)) * (syy / dn - sy / dn * (sy / dn)));
  };
  // 32-bit words coincide with probability 2^-32 each: none expected in 2e5.
  CHECK(equal_ab == 0);
  CHECK(equal_ac == 0);
  // Correlation of independent streams is ~N(0, 1/n): |r| < 5/sqrt(n) = 0.011.
  CHECK(std::fabs(corr(sab, sa, sb, saa, sbb)) < 5 / std::sqrt(dn));
  CHECK(std::fabs(corr(sac, sa, sc, saa, scc)) < 5 / std::sqrt(dn));
  // Adjacent words of one stream are not correlated either (lag 1 and lag 4).
  double s1 = 0, s4 = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    s1 += (a.uniform(i) - 0.5) * (a.uniform(i + 1) - 0.5);
    s4 += (a.uniform(i) - 0.5) * (a.uniform(i + 4) - 0.5);
  }
  CHECK(std::fabs(s1 / dn * 12) < 5 / std::sqrt(dn));
  CHECK(std::fabs(s4 / dn * 12) < 5 / std::sqrt(dn));
}

TEST_CASE("key_for is pinned, deterministic and separates names, seeds and models", "[rng]") {
  // Golden values, computed independently in Python. A change here changes every seeded merge.
  CHECK(dms::detail::fnv1a64("") == 0xcbf29ce484222325u);
  CHECK(dms::detail::fnv1a64("a") == 0xaf63dc4c8601ec8cu); // FNV reference test vectors
  CHECK(dms::detail::fnv1a64("foobar") == 0x85944171f73967e8u);
  CHECK(dms::key_for(42, "model.layers.0.self_attn.q_proj.weight", 1) ==
        philox_key{{0x277864efu, 0x95043b5du}});
  CHECK(dms::key_for(0, "", 0) == philox_key{{0xbe30928cu, 0xa6bbc8dcu}});
  static_assert(dms::key_for(3, "x", 2) == dms::key_for(3, "x", 2));

  std::set<std::uint64_t> seen;
  std::size_t count = 0;
  for (std::uint64_t seed : {0u, 1u, 2u}) {
    for (std::uint32_t model = 0; model < 4; ++model) {
      for (int layer = 0; layer < 64; ++layer) {
        for (const char *part : {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}) {
          const std::string name =
              "model.layers." + std::to_string(layer) + ".self_attn." + part + ".weight";
          const philox_key k = dms::key_for(seed, name, model);
          seen.insert(std::uint64_t{k.v[1]} << 32 | k.v[0]);
          ++count;
        }
      }
    }
  }
  CHECK(seen.size() == count); // no two (seed, name, model) share a key
}

TEST_CASE("fill_uniform equals per-index uniform for any start and length", "[rng]") {
  const dms::philox_stream s(dms::key_for(9, "fill", 3), 5);
  for (std::uint64_t first : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2},
                              std::uint64_t{3}, std::uint64_t{4}, std::uint64_t{1} << 40,
                              (std::uint64_t{1} << 34) - 3}) {
    for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 33u, 1000u}) {
      std::vector<float> out(n, -1.0f);
      dms::fill_uniform(s, first, out);
      for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == s.uniform(first + j));
    }
  }
}
