// dms/backend/cuda/merge.cuh against the CPU merge building blocks (weighted_sum,
// weighted_task_sum, trim_magnitude, drop_random, mix_task_vectors), assembled as the CPU
// strategies assemble them.
//
// Exactness:
//  * sparsified task vectors (task_vectors): bit-identical to trim_magnitude / drop_random for
//    rescale none and inverse_density (same masks, same single roundings); for l1_norm the mask
//    is identical and values within 2 ulps (the norms are summed in another order).
//  * merged tensors: the GPU accumulates in fp32, the CPU in double, so
//    |gpu - cpu| <= 4 (N + 2) eps (|base| + S), S = sum_i |c_i d_i| (the magnitude of the sum,
//    divided by the smallest possible divisor under normalize). Entries whose elected sign is
//    within rounding of zero (0 < |sum w d| <= 1e-4 sum |w d|) may legitimately elect differently
//    and are not compared; the test checks that they are rare.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "dms/backend/cuda/device.cuh"
#include "dms/backend/cuda/merge.cuh"
#include "dms/core/half.hpp"
#include "dms/core/rng.hpp"
#include "dms/merge/consensus.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies/weighted_sum.hpp"
#include "gpu_guard.hpp"
#include "support/random_floats.hpp"

using dms::test::random_floats;
namespace cu = dms::cuda;

namespace {

struct stream_guard {
  cudaStream_t s = nullptr;
  stream_guard() { DMS_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~stream_guard() { (void)cudaStreamDestroy(s); }
};

//! Values on a coarse grid (multiples of 1/32 in [-2, 2)), so that many magnitudes tie and the
//! index tie-break of the selection is exercised.
std::vector<float> coarse_floats(std::size_t n, std::uint32_t seed) {
  auto v = random_floats(n, seed);
  for (float &x : v) x = std::round(x * 32.0f) / 32.0f;
  return v;
}

struct device_models {
  std::vector<cu::device_buffer<float>> buffers;
  std::vector<cu::merge_source> sources;
  device_models(const std::vector<std::vector<float>> &host, cudaStream_t s) {
    for (const auto &h : host) {
      buffers.emplace_back(h.size(), s);
      buffers.back().copy_from_host(h);
    }
    for (auto &b : buffers) sources.emplace_back(static_cast<const float *>(b.data()));
  }
};

std::vector<float> cpu_task_vector(const std::vector<float> &x, const std::vector<float> &base) {
  std::vector<float> d(x.size());
  for (std::size_t j = 0; j < x.size(); ++j) d[j] = x[j] - base[j];
  return d;
}

std::size_t count_bit_mismatches(const std::vector<float> &a, const float *b, std::size_t n) {
  std::size_t bad = 0;
  for (std::size_t j = 0; j < n; ++j) bad += std::memcmp(&a[j], &b[j], sizeof(float)) != 0;
  return bad;
}

//! The GPU's sparsified task vectors computed on the host: run_gta's passes, with each kernel
//! replaced by a loop over the same DMS_HOST_DEVICE functions (select_key, apply_pick,
//! keep_entry, sparse_delta, group_bits), and the parallel histogram scan by a sequential one.
std::vector<float> emulate_task_vectors(const std::vector<float> &base, const std::vector<std::vector<float>> &xs,
                                        const std::vector<double> &densities, bool random, const cu::dare_stream &rng,
                                        dms::rescale_mode rescale) {
  namespace d = cu::detail;
  const std::size_t n = base.size(), n_models = xs.size();
  std::vector<cu::merge_source> src;
  for (const auto &x : xs) src.emplace_back(x.data());
  std::vector<std::byte> ws(cu::merge_workspace_bytes(n_models) + 8);
  const auto misalign = reinterpret_cast<std::uintptr_t>(ws.data()) % 8;
  const std::span<std::byte> workspace{ws.data() + (8 - misalign) % 8, cu::merge_workspace_bytes(n_models)};
  const std::vector<float> ones(n_models, 1.0f);
  cu::gta_options opt;
  opt.consensus = dms::consensus_method::none;
  opt.rescale = rescale;
  const d::gta_params P =
      d::make_gta_params("emulate", base.data(), src, ones, densities,
                         random ? d::sparsify_kind::random : d::sparsify_kind::magnitude, rng, opt, workspace, n);
  std::vector<float> out(n * n_models);
  for (std::size_t m = 0; m < n_models; ++m) {
    const d::gta_model &model = P.models[m];
    d::select_state st{};
    st.k_rem = P.k_keep[m];
    st.done = model.sparsify == d::sparsify_kind::magnitude ? 0u : 1u;
    st.l1_factor = 1.0f;
    unsigned consumed = 0;
    for (unsigned width : d::digit_widths) { // select_histogram_kernel + select_pick_kernel
      if (st.done) break;
      const unsigned shift = d::key_bits - consumed - width, bins = 1u << width;
      std::vector<unsigned long long> hist(bins, 0);
      for (std::size_t j = 0; j < n; ++j) {
        const unsigned long long key = d::select_key(xs[m][j] - base[j], j);
        if ((key >> (shift + width)) == st.prefix) ++hist[(key >> shift) & (bins - 1)];
      }
      unsigned long long above = 0;
      for (unsigned b = bins; b-- > 0;) {
        if (above + hist[b] >= st.k_rem) {
          d::apply_pick(st, b, above, hist[b], width);
          break;
        }
        above += hist[b];
      }
      consumed += width;
    }
    REQUIRE(st.done == 1u);
    const std::uint64_t groups = d::group_count(n, P.lead);
    if (model.rescale_l1) { // l1_norms_kernel + l1_factor_kernel
      double before = 0.0, after = 0.0;
      for (std::uint64_t q = 0; q < groups; ++q) {
        const dms::philox_counter c = d::group_bits(P, model, q);
        for (unsigned e = 0; e < 4; ++e) {
          std::uint64_t j;
          if (!d::group_element(q, e, P.lead, n, j)) continue;
          const float dv = xs[m][j] - base[j];
          before += std::fabs(static_cast<double>(dv));
          if (d::keep_entry(model, st, dv, j, c.v[e])) after += std::fabs(static_cast<double>(dv * model.keep_scale));
        }
      }
      st.l1_factor = before < 1e-7 || after < 1e-7 ? 1.0f : static_cast<float>(before / after);
    }
    for (std::uint64_t q = 0; q < groups; ++q) { // gta_mix_kernel's task_out
      const dms::philox_counter c = d::group_bits(P, model, q);
      for (unsigned e = 0; e < 4; ++e) {
        std::uint64_t j;
        if (!d::group_element(q, e, P.lead, n, j)) continue;
        out[m * n + j] = d::sparse_delta(model, st, xs[m][j] - base[j], j, c.v[e]);
      }
    }
  }
  return out;
}

} // namespace

TEST_CASE("the GPU's TIES selection and DARE masks reproduce the CPU (run on the host)", "[cuda][merge]") {
  // Runs everywhere: the kernels' per-element and per-pass logic, executed on the CPU.
  const std::vector<double> densities = {0.2, 0.5, 1.0, 0.01, 0.999};
  for (std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{97}, std::size_t{20000}}) {
    for (bool coarse : {false, true}) {
      std::vector<std::vector<float>> xs;
      for (std::uint32_t i = 0; i < densities.size(); ++i)
        xs.push_back(coarse ? coarse_floats(n, 500 + i) : random_floats(n, 500 + i));
      auto base = coarse ? coarse_floats(n, 599u) : random_floats(n, 599u);
      if (coarse) std::fill(xs[0].begin(), xs[0].end(), 0.5f); // |d| of model 0 = |0.5 - base|: many ties
      for (auto rescale : {dms::rescale_mode::none, dms::rescale_mode::inverse_density, dms::rescale_mode::l1_norm}) {
        for (bool random : {false, true}) {
          for (std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{3}, (std::uint64_t{1} << 32) - 1}) {
            if (!random && offset != 0) continue;
            INFO("n " << n << (coarse ? ", repeated magnitudes" : "") << ", rescale " << static_cast<int>(rescale)
                      << (random ? ", DARE" : ", TIES") << ", offset " << offset);
            const cu::dare_stream rng{42, "blk.7.ffn_gate.weight", offset};
            const auto got = emulate_task_vectors(base, xs, densities, random, rng, rescale);
            std::vector<float> scratch;
            for (std::size_t i = 0; i < densities.size(); ++i) {
              INFO("model " << i << ", density " << densities[i]);
              auto d = cpu_task_vector(xs[i], base);
              if (random)
                dms::drop_random(d, densities[i], rescale,
                                 dms::philox_stream(dms::key_for(42, "blk.7.ffn_gate.weight", static_cast<std::uint32_t>(i)), 0),
                                 offset);
              else
                dms::trim_magnitude(d, densities[i], rescale, scratch);
              const float *gi = got.data() + i * n;
              if (rescale != dms::rescale_mode::l1_norm) {
                CHECK(count_bit_mismatches(d, gi, n) == 0);
              } else {
                std::size_t bad = 0;
                for (std::size_t j = 0; j < n; ++j) {
                  bad += (d[j] == 0.0f) != (gi[j] == 0.0f);
                  bad += !(std::fabs(gi[j] - d[j]) <= 2.0f * FLT_EPSILON * std::fabs(d[j]));
                }
                CHECK(bad == 0);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("merge_linear and merge_task_arithmetic on the GPU match the CPU", "[cuda][merge]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::vector<float> weights = {0.5f, 1.25f, -0.25f};
  for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{(1u << 20) + 7}}) {
    INFO("n " << n);
    std::vector<std::vector<float>> xs;
    for (std::uint32_t i = 0; i < weights.size(); ++i) xs.push_back(random_floats(n, 100 + i));
    const auto base = random_floats(n, 99u);
    device_models dm(xs, g.s);
    cu::device_buffer<float> d_base(n, g.s), d_out(n, g.s), d_out2(n, g.s);
    d_base.copy_from_host(base);
    for (bool normalize : {false, true}) {
      INFO("normalize " << normalize);
      cu::merge_linear(dm.sources, weights, normalize, d_out.span(), g.s);
      cu::merge_task_arithmetic(d_base.data(), dm.sources, weights, 0.75, normalize, d_out2.span(), g.s);
      std::vector<float> got(n), got2(n);
      d_out.copy_to_host(got);
      d_out2.copy_to_host(got2);
      cu::synchronize(g.s);

      // The CPU strategies' coefficients (linear_merge::merge, task_arithmetic_family::merge).
      double total = 0.0;
      for (float w : weights) total += w;
      std::vector<double> coef(weights.size()), coef2(weights.size());
      for (std::size_t i = 0; i < weights.size(); ++i) {
        coef[i] = static_cast<double>(weights[i]) / (normalize ? total : 1.0);
        coef2[i] = 0.75 * static_cast<double>(weights[i]) / (normalize ? total : 1.0);
      }
      std::vector<std::span<const float>> views(xs.begin(), xs.end());
      std::vector<float> want(n), want2(n);
      dms::detail::weighted_sum(views, coef, want, 0, n);
      dms::detail::weighted_task_sum(views, coef2, base, want2, 0, n);
      std::size_t bad = 0;
      const double eps = 4.0 * (weights.size() + 2) * FLT_EPSILON;
      for (std::size_t j = 0; j < n; ++j) {
        double s = 0.0, s2 = 0.0;
        for (std::size_t i = 0; i < weights.size(); ++i) {
          s += std::fabs(coef[i] * xs[i][j]);
          s2 += std::fabs(coef2[i] * (xs[i][j] - base[j]));
        }
        bad += !(std::fabs(static_cast<double>(got[j]) - want[j]) <= eps * s);
        bad += !(std::fabs(static_cast<double>(got2[j]) - want2[j]) <= eps * (std::fabs(base[j]) + s2));
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("GPU merges read f16 and bf16 inputs exactly", "[cuda][merge]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::size_t n = 4099;
  const auto a = random_floats(n, 1u), b = random_floats(n, 2u);
  std::vector<dms::f16_bits> ah(n);
  std::vector<dms::bf16_bits> bh(n);
  std::vector<float> a_back(n), b_back(n);
  for (std::size_t j = 0; j < n; ++j) {
    ah[j] = dms::to_f16(a[j]);
    bh[j] = dms::to_bf16(b[j]);
    a_back[j] = dms::to_f32(ah[j]);
    b_back[j] = dms::to_f32(bh[j]);
  }
  cu::device_buffer<dms::f16_bits> d_a(n, g.s);
  cu::device_buffer<dms::bf16_bits> d_b(n, g.s);
  cu::device_buffer<float> d_out(n, g.s);
  d_a.copy_from_host(ah);
  d_b.copy_from_host(bh);
  // Weights 1 and 0: the output is the first input's f32 value, exactly.
  const std::vector<cu::merge_source> src = {d_a.data(), d_b.data()};
  const std::vector<cu::merge_source> src_rev = {d_b.data(), d_a.data()};
  const float w[] = {1.0f, 0.0f};
  std::vector<float> got(n), got_rev(n);
  cu::merge_linear(src, w, false, d_out.span(), g.s);
  d_out.copy_to_host(got);
  cu::synchronize(g.s);
  cu::merge_linear(src_rev, w, false, d_out.span(), g.s);
  d_out.copy_to_host(got_rev);
  cu::synchronize(g.s);
  CHECK(count_bit_mismatches(a_back, got.data(), n) == 0);
  CHECK(count_bit_mismatches(b_back, got_rev.data(), n) == 0);
}

TEST_CASE("TIES masks on the GPU are the CPU's, bit for bit", "[cuda][merge]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::vector<double> densities = {0.2, 0.5, 1.0, 0.01};
  cu::device_buffer<std::byte> ws(cu::merge_workspace_bytes(densities.size()), g.s);
  for (std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{97}, std::size_t{4096},
                        std::size_t{(1u << 20) + 5}}) {
    for (bool coarse : {false, true}) {
      INFO("n " << n << (coarse ? ", repeated magnitudes" : ""));
      std::vector<std::vector<float>> xs;
      for (std::uint32_t i = 0; i < densities.size(); ++i)
        xs.push_back(coarse ? coarse_floats(n, 200 + i) : random_floats(n, 200 + i));
      const auto base = coarse ? coarse_floats(n, 299u) : random_floats(n, 299u);
      device_models dm(xs, g.s);
      cu::device_buffer<float> d_base(n, g.s), d_tv(n * densities.size(), g.s);
      d_base.copy_from_host(base);
      for (auto rescale : {dms::rescale_mode::none, dms::rescale_mode::inverse_density, dms::rescale_mode::l1_norm}) {
        INFO("rescale " << static_cast<int>(rescale));
        cu::task_vectors(d_base.data(), dm.sources, densities, false, {}, rescale, ws.span(), d_tv.span(), g.s);
        std::vector<float> got(d_tv.size());
        d_tv.copy_to_host(got);
        cu::synchronize(g.s);
        std::vector<float> scratch;
        for (std::size_t i = 0; i < densities.size(); ++i) {
          INFO("model " << i << ", density " << densities[i]);
          auto d = cpu_task_vector(xs[i], base);
          dms::trim_magnitude(d, densities[i], rescale, scratch);
          const float *gi = got.data() + i * n;
          if (rescale != dms::rescale_mode::l1_norm) {
            CHECK(count_bit_mismatches(d, gi, n) == 0);
          } else {
            std::size_t bad = 0;
            for (std::size_t j = 0; j < n; ++j) {
              bad += (d[j] == 0.0f) != (gi[j] == 0.0f); // same mask
              bad += !(std::fabs(gi[j] - d[j]) <= 2.0f * FLT_EPSILON * std::fabs(d[j]));
            }
            CHECK(bad == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("DARE masks on the GPU are the CPU's, bit for bit", "[cuda][merge]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::vector<double> densities = {0.1, 0.5, 0.9, 1.0};
  cu::device_buffer<std::byte> ws(cu::merge_workspace_bytes(densities.size()), g.s);
  const std::uint64_t offsets[] = {0, 1, 3, (std::uint64_t{1} << 32) - 2};
  for (std::size_t n : {std::size_t{1}, std::size_t{6}, std::size_t{5000}, std::size_t{(1u << 20) + 3}}) {
    std::vector<std::vector<float>> xs;
    for (std::uint32_t i = 0; i < densities.size(); ++i) xs.push_back(random_floats(n, 300 + i));
    const auto base = random_floats(n, 399u);
    device_models dm(xs, g.s);
    cu::device_buffer<float> d_base(n, g.s), d_tv(n * densities.size(), g.s);
    d_base.copy_from_host(base);
    for (std::uint64_t offset : offsets) {
      for (auto rescale : {dms::rescale_mode::none, dms::rescale_mode::inverse_density}) {
        INFO("n " << n << ", element_offset " << offset << ", rescale " << static_cast<int>(rescale));
        const cu::dare_stream rng{1234, "blk.3.attn_q.weight", offset};
        cu::task_vectors(d_base.data(), dm.sources, densities, true, rng, rescale, ws.span(), d_tv.span(), g.s);
        std::vector<float> got(d_tv.size());
        d_tv.copy_to_host(got);
        cu::synchronize(g.s);
        for (std::size_t i = 0; i < densities.size(); ++i) {
          INFO("model " << i);
          auto d = cpu_task_vector(xs[i], base);
          const dms::philox_stream s(dms::key_for(1234, "blk.3.attn_q.weight", static_cast<std::uint32_t>(i)), 0);
          dms::drop_random(d, densities[i], rescale, s, offset);
          CHECK(count_bit_mismatches(d, got.data() + i * n, n) == 0);
        }
      }
    }
  }
}

TEST_CASE("merge_ties and merge_dare on the GPU match the CPU mix", "[cuda][merge]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::vector<float> weights = {0.7f, 0.3f, 1.1f};
  const std::vector<double> densities = {0.3, 0.6, 0.45};
  const std::size_t n = (1u << 19) + 11;
  std::vector<std::vector<float>> xs;
  for (std::uint32_t i = 0; i < weights.size(); ++i) xs.push_back(random_floats(n, 400 + i));
  const auto base = random_floats(n, 499u);
  device_models dm(xs, g.s);
  cu::device_buffer<float> d_base(n, g.s), d_out(n, g.s);
  cu::device_buffer<std::byte> ws(cu::merge_workspace_bytes(weights.size()), g.s);
  d_base.copy_from_host(base);
  const cu::dare_stream rng{77, "blk.0.ffn_down.weight", 12345};
  for (bool dare : {false, true}) {
    for (auto consensus : {dms::consensus_method::none, dms::consensus_method::sum, dms::consensus_method::count}) {
      for (bool normalize : {false, true}) {
        for (auto rescale : {dms::rescale_mode::none, dms::rescale_mode::l1_norm}) {
          INFO((dare ? "dare" : "ties") << ", consensus " << static_cast<int>(consensus) << ", normalize "
                                        << normalize << ", rescale " << static_cast<int>(rescale));
          cu::gta_options opt;
          opt.consensus = consensus;
          opt.normalize = normalize;
          opt.lambda = 0.9;
          opt.rescale = rescale;
          if (dare)
            cu::merge_dare(d_base.data(), dm.sources, weights, densities, rng, opt, ws.span(), d_out.span(), g.s);
          else
            cu::merge_ties(d_base.data(), dm.sources, weights, densities, opt, ws.span(), d_out.span(), g.s);
          std::vector<float> got(n);
          d_out.copy_to_host(got);
          cu::synchronize(g.s);

          // The CPU: task_arithmetic_family::merge's sparsify_model and mix_task_vectors.
          std::vector<std::vector<float>> deltas;
          std::vector<float> scratch;
          for (std::size_t i = 0; i < weights.size(); ++i) {
            auto d = cpu_task_vector(xs[i], base);
            if (dare)
              dms::drop_random(d, densities[i], rescale,
                               dms::philox_stream(dms::key_for(rng.seed, rng.tensor_name, static_cast<std::uint32_t>(i)), 0),
                               rng.element_offset);
            else
              dms::trim_magnitude(d, densities[i], rescale, scratch);
            deltas.push_back(std::move(d));
          }
          std::vector<double> w(weights.begin(), weights.end());
          std::vector<std::span<const float>> views(deltas.begin(), deltas.end());
          dms::mix_options mix{consensus, normalize, 0.9};
          std::vector<float> want(n);
          dms::mix_task_vectors(views, w, base, mix, want, 0, n);

          std::size_t bad = 0, ambiguous = 0;
          const double min_divisor = 0.3; // the smallest weight (a divisor of 0 becomes 1)
          for (std::size_t j = 0; j < n; ++j) {
            double s = 0.0, elect = 0.0;
            for (std::size_t i = 0; i < weights.size(); ++i) {
              const double wd = w[i] * deltas[i][j];
              s += std::fabs(wd);
              elect += consensus == dms::consensus_method::count ? static_cast<double>((wd > 0) - (wd < 0)) : wd;
            }
            if (consensus == dms::consensus_method::sum && s > 0.0 && std::fabs(elect) <= 1e-4 * s) {
              ++ambiguous;
              continue;
            }
            const double scale = 0.9 / (normalize ? min_divisor : 1.0);
            const double tol = 4.0 * (weights.size() + 2) * FLT_EPSILON * (std::fabs(base[j]) + scale * s) * 1.01;
            bad += !(std::fabs(static_cast<double>(got[j]) - want[j]) <= tol);
          }
          CHECK(bad == 0);
          CHECK(ambiguous <= n / 1000);
        }
      }
    }
  }
}

TEST_CASE("GPU merges check their arguments on the host", "[cuda][merge]") {
  // Runs without a GPU: every check throws before any CUDA call.
  using Catch::Contains;
  const float *f = nullptr;
  float *out_p = nullptr;
  const std::span<float> out{out_p, 8};
  std::vector<cu::merge_source> two = {f, f};
  const std::vector<float> w2 = {0.5f, 0.5f};
  const std::vector<double> d2 = {0.5, 0.5};
  std::vector<std::byte> fake_ws_storage(cu::merge_workspace_bytes(2) + 8);
  // Host memory stands in for the workspace: only its size and alignment are checked.
  const auto ws_begin = reinterpret_cast<std::uintptr_t>(fake_ws_storage.data());
  std::byte *aligned = fake_ws_storage.data() + ((8 - ws_begin % 8) % 8);
  const std::span<std::byte> ws{aligned, cu::merge_workspace_bytes(2)};

  CHECK_THROWS_WITH(cu::merge_linear({}, {}, true, out, nullptr), Contains("merge_linear: no models to merge"));
  CHECK_THROWS_WITH(cu::merge_linear(two, std::vector<float>{1.0f}, true, out, nullptr),
                    Contains("2 models but 1 weights"));
  CHECK_THROWS_WITH(cu::merge_linear(two, std::vector<float>{1.0f, -1.0f}, true, out, nullptr),
                    Contains("normalize would divide by zero"));
  std::vector<cu::merge_source> many(cu::max_merge_models + 1, cu::merge_source{f});
  std::vector<float> wmany(many.size(), 1.0f);
  CHECK_THROWS_WITH(cu::merge_linear(many, wmany, true, out, nullptr), Contains("merges at most 16 per call"));
  cu::merge_source bad_type{f};
  bad_type.type = dms::dtype::i32;
  CHECK_THROWS_WITH(cu::merge_linear(std::vector<cu::merge_source>{bad_type}, std::vector<float>{1.0f}, true, out,
                                     nullptr),
                    Contains("model 0 has dtype i32"));
  CHECK_THROWS_WITH(cu::merge_task_arithmetic(bad_type, two, w2, 1.0, false, out, nullptr),
                    Contains("the base has dtype i32"));

  CHECK_THROWS_WITH(cu::merge_ties(f, two, w2, std::vector<double>{0.5}, {}, ws, out, nullptr),
                    Contains("2 models but 1 densities"));
  CHECK_THROWS_WITH(cu::merge_ties(f, two, w2, std::vector<double>{0.5, 0.0}, {}, ws, out, nullptr),
                    Contains("density of model 1 is 0.000000, expected (0, 1]"));
  CHECK_THROWS_WITH(cu::merge_dare(f, two, w2, std::vector<double>{1.5, 0.5}, {}, {}, ws, out, nullptr),
                    Contains("merge_dare: density of model 0 is 1.5"));
  CHECK_THROWS_WITH(cu::merge_ties(f, two, w2, d2, {}, ws.first(ws.size() - 1), out, nullptr),
                    Contains("2 models need " + std::to_string(cu::merge_workspace_bytes(2))));
  CHECK_THROWS_WITH(cu::merge_ties(f, two, w2, d2, {}, {aligned + 1, ws.size()}, out, nullptr),
                    Contains("8-byte aligned"));
  CHECK_THROWS_WITH(cu::task_vectors(f, two, d2, true, {}, dms::rescale_mode::none, ws, {out_p, 7}, nullptr),
                    Contains("not a whole number of task vectors of 2 models"));
  // Empty tensors are valid and queue nothing.
  CHECK_NOTHROW(cu::merge_ties(f, two, w2, d2, {}, ws, {out_p, 0}, nullptr));
  CHECK_NOTHROW(cu::merge_linear(two, w2, true, {out_p, 0}, nullptr));
}
