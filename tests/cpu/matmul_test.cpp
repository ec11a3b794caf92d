// dms::cpu::matmul and get_rows (dms/backend/cpu/matmul.hpp) for every weight type, at every
// dispatch level this CPU runs, against a double-precision dequantize-and-dot reference.
//
// Tolerances, per output y[t][r] (W = the scalar reference dequantization of the weights,
// x the f32 activations, S = sum_c |W[r][c] x[t][c]|):
//   fused types (Q4_0, Q4_1, Q8_0: 32-element activation blocks; Q4_K, Q6_K: 256):
//     |y - exact| <= 1.001 * sum_b (sum_{c in b} |W[r][c]|) * amax_b(x_t) / 254 + 1e-5 * S.
//     The kernels compute sum_c W[r][c] * xq[c] exactly in integers per block, where xq is x
//     rounded to amax_b / 127 steps (error <= amax_b / 254 per element); the f32 scaling and
//     summation of at most cols / 32 block sums adds a relative error far below 1e-5 here. The
//     scales d (and Q4_1's s) are rounded to f16 as ggml stores them (relative error <= 2^-11
//     on a block's contribution): not part of the bound, which is loose enough to absorb it on
//     these blocks (checked: every case passes; a layout or scale bug is off by the order of S).
//   dense types (F32, F16, BF16) and the dequantize-then-dot fallback (Q5_0, Q5_1, Q2_K, Q3_K,
//     Q5_K): |y - exact| <= 2 * cols * FLT_EPSILON * S (f32 dot products, Higham's gamma_n).
//   From 64 tokens on the AVX2 level runs every type through f32 panels (error within the dense
//   bound, hence within the fused one too); 64 and 130 tokens with 70 rows cover full and partial
//   16-row panels and 6-token tiles.
// A wrong block layout or scale is off by the order of S, far beyond either bound.
// Sizes stay small (rows 70, cols 256/512): the suite also runs under qemu (Haswell, Nehalem).
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/backend/cpu/matmul.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/formats/quant.hpp"
#include "support/isa_levels.hpp"
#include "support/quant_blocks.hpp"
#include "support/random_floats.hpp"

namespace {

using dms::ggml_type;
using dms::cpu::isa_level;

//! Activation block size of the fused path, or 0 for the f32 paths.
std::size_t act_block(ggml_type t) {
  switch (t) {
  case ggml_type::q4_0:
  case ggml_type::q4_1:
  case ggml_type::q8_0: return 32;
  case ggml_type::q4_k:
  case ggml_type::q6_k: return 256;
  default: return 0;
  }
}

struct weights {
  ggml_type type;
  std::int64_t rows, cols;
  std::vector<std::byte> storage; // raw bytes at `offset`
  std::size_t offset = 0;
  std::vector<float> dense;       // scalar-reference dequantization, rows x cols

  dms::cpu::weight_matrix view() const { return {type, storage.data() + offset, rows, cols}; }
  std::size_t row_bytes() const { return *dms::storage_bytes(type, static_cast<std::uint64_t>(cols)); }
};

weights make_weights(ggml_type t, std::int64_t rows, std::int64_t cols, std::uint32_t seed, std::size_t offset = 0) {
  weights w{t, rows, cols, {}, offset, {}};
  const std::size_t n = static_cast<std::size_t>(rows * cols);
  auto raw = dms::test::random_blocks(t, n / dms::traits_of(t).block_size, seed);
  if (t == ggml_type::bf16) // random bit patterns reach 3e38 and overflow the sums: keep |w| < 2
    for (std::size_t i = 1; i < raw.size(); i += 2) raw[i] = std::uint8_t((raw[i] & 0x80) | (0x3C + (raw[i] & 3)));
  w.storage.resize(raw.size() + offset);
  std::memcpy(w.storage.data() + offset, raw.data(), raw.size());
  w.dense.resize(n);
  dms::dequantize(t, std::span<const std::byte>(w.storage.data() + offset, raw.size()), w.dense);
  return w;
}

//! Counts outputs outside the tolerance of the header comment; reports the first.
//! `exact`: the workspace ran at matmul_precision::exact, so every type gets the f32 bound.
std::size_t count_errors(const weights &w, const std::vector<float> &x, std::int64_t n_tokens,
                         const std::vector<float> &y, std::string &first, bool exact_precision = false) {
  const auto rows = static_cast<std::size_t>(w.rows), cols = static_cast<std::size_t>(w.cols);
  const std::size_t ab = exact_precision ? 0 : act_block(w.type);
  std::size_t bad = 0;
  for (std::size_t t = 0; t < static_cast<std::size_t>(n_tokens); ++t) {
    const float *xt = x.data() + t * cols;
    for (std::size_t r = 0; r < rows; ++r) {
      const float *wr = w.dense.data() + r * cols;
      double exact = 0, s = 0, qerr = 0;
      for (std::size_t c = 0; c < cols; ++c) {
        exact += double(wr[c]) * double(xt[c]);
        s += std::fabs(double(wr[c]) * double(xt[c]));
      }
      double tol;
      if (ab != 0) {
        for (std::size_t b = 0; b < cols; b += ab) {
          double amax = 0, wsum = 0;
          for (std::size_t c = b; c < b + ab; ++c) {
            amax = std::max(amax, std::fabs(double(xt[c])));
            wsum += std::fabs(double(wr[c]));
          }
          qerr += wsum * amax / 254.0;
        }
        tol = 1.001 * qerr + 1e-5 * s;
      } else {
        tol = 2.0 * double(cols) * FLT_EPSILON * s;
      }
      const double got = y[t * rows + r];
      if (!(std::fabs(got - exact) <= tol + 1e-30)) {
        if (bad++ == 0)
          first = "token " + std::to_string(t) + " row " + std::to_string(r) + ": got " + std::to_string(got) +
                  ", exact " + std::to_string(exact) + ", tolerance " + std::to_string(tol);
      }
    }
  }
  return bad;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

} // namespace

TEST_CASE("matmul matches dequantize + dot for every type, level, shape and thread count", "[cpu][matmul]") {
  dms::thread_pool two(2);
  dms::cpu::matmul_workspace ws;
  const std::int64_t token_counts[] = {1, 2, 3, 7, 64, 130};
  dms::test::for_each_level([&](isa_level level) {
    for (ggml_type t : dms::test::all_quant_types) {
      for (int k : {1, 2}) {
        const std::int64_t rows = k == 1 ? 70 : 37; // not multiples of a chunk (16, 64 or 32 rows)
        const std::int64_t cols = 256 * k; // whole blocks of 32 and of 256
        const weights w = make_weights(t, rows, cols, 100u + static_cast<std::uint32_t>(t) * 7u + k);
        for (std::int64_t n_tokens : token_counts) {
          if (k == 2 && n_tokens > 7) continue; // keep the qemu runs short
          const auto x = dms::test::random_floats(static_cast<std::size_t>(n_tokens * cols),
                                                  static_cast<std::uint32_t>(n_tokens) + 11u);
          std::vector<float> y1(static_cast<std::size_t>(n_tokens * rows), -1.0f), y2(y1.size(), -2.0f);
          dms::cpu::matmul(w.view(), x.data(), cols, n_tokens, y1.data(), rows, ws, nullptr);
          dms::cpu::matmul(w.view(), x.data(), cols, n_tokens, y2.data(), rows, ws, &two);
          std::string first;
          const std::size_t bad = count_errors(w, x, n_tokens, y1, first);
          INFO("level " << dms::cpu::name_of(level) << ", " << dms::traits_of(t).name << ", " << rows << " x "
                        << cols << ", " << n_tokens << " tokens: " << bad << " outputs off; first: " << first);
          CHECK(bad == 0);
          CHECK(same_bits(y1, y2)); // 1 and 2 threads
        }
      }
    }
  });
}

TEST_CASE("matmul at matmul_precision::exact meets the f32 bound for every type", "[cpu][matmul]") {
  dms::thread_pool two(2);
  dms::cpu::matmul_workspace ws(dms::cpu::matmul_precision::exact);
  dms::test::for_each_level([&](isa_level level) {
    for (ggml_type t : dms::test::all_quant_types) {
      const weights w = make_weights(t, 70, 256, 500u + static_cast<std::uint32_t>(t));
      for (std::int64_t n_tokens : {1, 5}) {
        const auto x = dms::test::random_floats(static_cast<std::size_t>(n_tokens * 256), 77u);
        std::vector<float> y1(static_cast<std::size_t>(n_tokens * 70)), y2(y1.size());
        dms::cpu::matmul(w.view(), x.data(), 256, n_tokens, y1.data(), 70, ws, nullptr);
        dms::cpu::matmul(w.view(), x.data(), 256, n_tokens, y2.data(), 70, ws, &two);
        std::string first;
        const std::size_t bad = count_errors(w, x, n_tokens, y1, first, /*exact_precision=*/true);
        INFO("level " << dms::cpu::name_of(level) << ", " << dms::traits_of(t).name << ", " << n_tokens
                      << " tokens: " << bad << " outputs off; first: " << first);
        CHECK(bad == 0);
        CHECK(same_bits(y1, y2));
      }
    }
  });
}

TEST_CASE("matmul: grouping of tokens, strides and misaligned weights do not change results", "[cpu][matmul]") {
  dms::cpu::matmul_workspace ws;
  dms::test::for_each_level([&](isa_level level) {
    for (ggml_type t : dms::test::all_quant_types) {
      const std::int64_t rows = 21, cols = 256, n_tokens = 7, ldx = cols + 5, ldy = rows + 3;
      const weights w = make_weights(t, rows, cols, 900u + static_cast<std::uint32_t>(t));
      const weights wodd = make_weights(t, rows, cols, 900u + static_cast<std::uint32_t>(t), 1); // same bytes at +1
      const auto x = dms::test::random_floats(static_cast<std::size_t>(n_tokens * ldx), 77u);
      std::vector<float> all(static_cast<std::size_t>(n_tokens * ldy), 0.0f), odd(all.size(), 0.0f);
      dms::cpu::matmul(w.view(), x.data(), ldx, n_tokens, all.data(), ldy, ws);
      dms::cpu::matmul(wodd.view(), x.data(), ldx, n_tokens, odd.data(), ldy, ws);
      INFO("level " << dms::cpu::name_of(level) << ", " << dms::traits_of(t).name);
      CHECK(same_bits(all, odd));
      bool same = true;
      for (std::int64_t i = 0; i < n_tokens; ++i) { // one token per call
        std::vector<float> one(static_cast<std::size_t>(rows), 0.0f);
        dms::cpu::matmul(w.view(), x.data() + i * ldx, cols, 1, one.data(), rows, ws);
        same = same && std::memcmp(one.data(), all.data() + i * ldy, one.size() * sizeof(float)) == 0;
      }
      CHECK(same);
      // The padding between rows of y is not written.
      for (std::int64_t i = 0; i < n_tokens; ++i)
        for (std::int64_t r = rows; r < ldy; ++r) CHECK(all[static_cast<std::size_t>(i * ldy + r)] == 0.0f);
    }
  });
}

TEST_CASE("matmul_group equals one matmul per target, bit for bit", "[cpu][matmul]") {
  // Q, K, V-like shapes (a chunk spans two targets), mixed activation kinds (the group falls back
  // to one call per target), decode and prefill token counts, several pool sizes.
  dms::cpu::matmul_workspace ws;
  dms::thread_pool pool3(3);
  dms::test::for_each_level([&](isa_level level) {
    const std::vector<std::vector<ggml_type>> groups = {
        {ggml_type::q4_1, ggml_type::q4_1, ggml_type::q4_1}, {ggml_type::q8_0, ggml_type::q4_0},
        {ggml_type::q4_k, ggml_type::q6_k}, {ggml_type::q4_1, ggml_type::q8_0}, {ggml_type::f16, ggml_type::q4_0}};
    const std::int64_t cols = 256, row_counts[] = {37, 21, 21};
    for (const auto &types : groups)
      for (const std::int64_t n_tokens : {1, 3, 8, 9})
        for (dms::thread_pool *pool : {static_cast<dms::thread_pool *>(nullptr), &pool3}) {
          std::vector<weights> ws_in;
          std::vector<std::vector<float>> grouped, single;
          std::vector<dms::cpu::weight_matrix> views;
          for (std::size_t i = 0; i < types.size(); ++i) {
            ws_in.push_back(make_weights(types[i], row_counts[i], cols, 40u + static_cast<std::uint32_t>(i)));
            grouped.emplace_back(static_cast<std::size_t>(n_tokens * row_counts[i]), -1.0f);
            single.emplace_back(grouped.back().size(), -2.0f);
          }
          for (const auto &w : ws_in) views.push_back(w.view());
          std::vector<dms::cpu::matmul_target> targets;
          for (std::size_t i = 0; i < types.size(); ++i) targets.push_back({&views[i], grouped[i].data(), row_counts[i]});
          const auto x = dms::test::random_floats(static_cast<std::size_t>(n_tokens * cols), 5u);
          dms::cpu::matmul_group(targets, x.data(), cols, n_tokens, ws, pool);
          for (std::size_t i = 0; i < types.size(); ++i)
            dms::cpu::matmul(views[i], x.data(), cols, n_tokens, single[i].data(), row_counts[i], ws, pool);
          INFO("level " << dms::cpu::name_of(level) << ", first type " << dms::traits_of(types[0]).name << ", "
                        << n_tokens << " tokens, pool " << (pool ? 3 : 0));
          for (std::size_t i = 0; i < types.size(); ++i) CHECK(same_bits(grouped[i], single[i]));
        }
  });
}

TEST_CASE("matmul: the workspace stops growing after the first call", "[cpu][matmul]") {
  dms::thread_pool two(2);
  dms::cpu::matmul_workspace ws;
  for (ggml_type t : {ggml_type::q4_1, ggml_type::f16, ggml_type::q5_k}) {
    const weights w = make_weights(t, 40, 512, 5u);
    const auto x = dms::test::random_floats(512 * 9, 3u);
    std::vector<float> y(40 * 9);
    dms::cpu::matmul(w.view(), x.data(), 512, 9, y.data(), 40, ws, &two);
    const std::size_t after_first = ws.capacity_bytes();
    CHECK(after_first > 0);
    for (int i = 0; i < 3; ++i) dms::cpu::matmul(w.view(), x.data(), 512, 9, y.data(), 40, ws, &two);
    CHECK(ws.capacity_bytes() == after_first);
    ws = dms::cpu::matmul_workspace{};
  }
}

TEST_CASE("get_rows equals dequantize of the selected rows", "[cpu][matmul]") {
  dms::test::for_each_level([&](isa_level level) {
    for (ggml_type t : dms::test::all_quant_types) {
      const weights w = make_weights(t, 9, 512, 31u + static_cast<std::uint32_t>(t), 3);
      const std::vector<std::int32_t> ids = {8, 0, 3, 3, 7};
      std::vector<float> out(ids.size() * 512, -1.0f);
      dms::cpu::get_rows(w.view(), ids, out.data());
      bool same = true;
      for (std::size_t i = 0; i < ids.size(); ++i)
        same = same && std::memcmp(out.data() + i * 512, w.dense.data() + std::size_t(ids[i]) * 512,
                                   512 * sizeof(float)) == 0;
      INFO("level " << dms::cpu::name_of(level) << ", " << dms::traits_of(t).name);
      CHECK(same);
    }
  });
}

TEST_CASE("matmul and get_rows reject bad input with dms::error", "[cpu][matmul]") {
  dms::cpu::matmul_workspace ws;
  std::vector<std::byte> data(4096);
  std::vector<float> x(1024), y(1024);
  auto code_of = [](auto &&f) {
    try {
      f();
    } catch (const dms::error &e) {
      return std::make_pair(e.code(), std::string(e.what()));
    }
    return std::make_pair(dms::errc::device, std::string("no error"));
  };
  // A type dms cannot decode: the message names it.
  for (ggml_type t : {ggml_type::iq2_xxs, ggml_type::q8_k, ggml_type::i32}) {
    const dms::cpu::weight_matrix w{t, data.data(), 2, 256};
    auto [code, what] = code_of([&] { dms::cpu::matmul(w, x.data(), 256, 1, y.data(), 2, ws); });
    CHECK(code == dms::errc::unsupported);
    CHECK(what.find(std::string(dms::traits_of(t).name)) != std::string::npos);
    const std::int32_t id = 0;
    CHECK(code_of([&] { dms::cpu::get_rows(w, {&id, 1}, y.data()); }).first == dms::errc::unsupported);
  }
  // cols not a whole number of blocks.
  {
    const dms::cpu::weight_matrix w{ggml_type::q4_1, data.data(), 2, 48};
    auto [code, what] = code_of([&] { dms::cpu::matmul(w, x.data(), 48, 1, y.data(), 2, ws); });
    CHECK(code == dms::errc::shape_mismatch);
    CHECK(what.find("Q4_1") != std::string::npos);
    const dms::cpu::weight_matrix wk{ggml_type::q4_k, data.data(), 2, 128};
    CHECK(code_of([&] { dms::cpu::matmul(wk, x.data(), 128, 1, y.data(), 2, ws); }).first ==
          dms::errc::shape_mismatch);
  }
  const dms::cpu::weight_matrix w{ggml_type::q8_0, data.data(), 4, 64};
  CHECK(code_of([&] { dms::cpu::matmul(w, x.data(), 64, -1, y.data(), 4, ws); }).first == dms::errc::invalid_argument);
  CHECK(code_of([&] { dms::cpu::matmul(w, x.data(), 32, 2, y.data(), 4, ws); }).first == dms::errc::invalid_argument);
  CHECK(code_of([&] { dms::cpu::matmul(w, x.data(), 64, 2, y.data(), 3, ws); }).first == dms::errc::invalid_argument);
  CHECK(code_of([&] { dms::cpu::matmul(w, nullptr, 64, 1, y.data(), 4, ws); }).first == dms::errc::invalid_argument);
  CHECK(code_of([&] { dms::cpu::matmul({ggml_type::q8_0, data.data(), -1, 64}, x.data(), 64, 1, y.data(), 4, ws); })
            .first == dms::errc::invalid_argument);
  const std::int32_t bad_ids[] = {0, 4};
  CHECK(code_of([&] { dms::cpu::get_rows(w, bad_ids, y.data()); }).first == dms::errc::invalid_argument);
  const std::int32_t neg_id = -1;
  CHECK(code_of([&] { dms::cpu::get_rows(w, {&neg_id, 1}, y.data()); }).first == dms::errc::invalid_argument);
}
