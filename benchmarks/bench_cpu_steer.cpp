// Steering on the real model (SmolLM2-135M-Instruct Q4_1, or $DMS_MODEL) and probe fitting:
//   BM_decode_policy/<policy>/<threads>   decode tokens/s under a policy; policy 0 none (no hooks
//                                         at all), 1 constant, 2 dms, 3 conditional (CAST)
//   BM_decode_paired/<policy>/<threads>   the policy's decode overhead, measured step by step:
//                                         unsteered (sequence 0) and steered (sequence 1) steps
//                                         alternate, so both see the same machine load and the
//                                         same context lengths; overhead_pct = median steered
//                                         step / median unsteered step - 1 (noisy on a shared
//                                         machine), in_policy_pct = time spent inside the
//                                         policy's hook calls / steered step time (its direct
//                                         cost); policy 4 is one read-only hook (the sum of a
//                                         row at the probe point), as bench_cpu_forward's
//   BM_probe_fit/<threads>/<t>            fitting the logistic probe as `dms steer calibrate` does
//                                         (standardized, C = 1, balanced classes) on the training
//                                         rows of $DMS_PROBE_DATA (`calibrate --probe-data`) until
//                                         the largest gradient component is <= 10^-t: t = 8 is
//                                         calibrate's tolerance, t = 4 scikit-learn's default
//                                         (its lbfgs stops on the same quantity); counters:
//                                         held-out accuracy and AUC, iterations
// The policies come from $DMS_BUNDLE (a `dms steer calibrate` bundle); without one, a probe and
// vectors of random values at the same points as SmolLM2's calibration (probe at layer 16,
// steering at layer 23: the cost does not depend on the values). Without $DMS_PROBE_DATA the
// probe is fitted on two Gaussian classes of the same shape as SmolLM2's calibration rows.
// benchmarks/peers/steer_vs_llama_cpp.py runs these next to llama.cpp with a control vector and
// scikit-learn's LogisticRegression, and prints the ratios recorded in BENCHMARKS.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dms/core/thread_pool.hpp"
#include "dms/model/llama.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/probe/metrics.hpp"
#include "dms/steer/bundle.hpp"
#include "dms/steer/conditional_policy.hpp"
#include "dms/steer/constant_policy.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/policy_hooks.hpp"
#include "dms/steer/probe_data.hpp"
#include "real_model.hpp"

namespace {

using dms::bench::read_one_hook;
using dms::bench::tokens;

//! Two sequences: BM_decode_paired alternates an unsteered and a steered one.
dms::llama_model &model_for(int threads) { return dms::bench::model_for(threads, 2); }

//! The bundle of $DMS_BUNDLE, or random values at SmolLM2's calibrated points.
const dms::steering_bundle &bundle() {
  static const dms::steering_bundle b = [] {
    if (const char *path = std::getenv("DMS_BUNDLE")) return dms::load_bundle(path);
    const std::int64_t d = model_for(1).n_embd();
    std::mt19937 gen(2024);
    std::normal_distribution<float> g;
    auto random_vector = [&](float scale) {
      std::vector<float> v(static_cast<std::size_t>(d));
      for (float &x : v) x = scale * g(gen);
      return v;
    };
    dms::steering_bundle s;
    s.probe = dms::logistic_probe(random_vector(0.05f), -1.0f, random_vector(0.1f), std::vector<float>(d, 1.0f),
                                  {.at = {16, dms::site::resid_post}});
    s.steering.vector = {23, dms::site::resid_post, random_vector(4.0f)};
    s.condition = dms::bundle_condition{{16, dms::site::resid_post}, random_vector(1.0f), 0.0f,
                                        dms::condition_compare::above, dms::condition_mode::last_token, 1.4f};
    return s;
  }();
  return b;
}

bool missing(benchmark::State &state) { return dms::bench::model_missing(state); }

//! Runs `fn(hooks)` with the hooks of policy `kind` (1 constant, 2 dms, 3 conditional) at the
//! bundle's alpha, or with no hooks (0). The hooks keep state for two sequences.
//! Forwards to `inner`, adding the time spent in its calls to `seconds`.
template <class H> struct timed_hooks {
  H &inner;
  double seconds = 0;
  bool wants(dms::hook_point p) const { return inner.wants(p); }
  void operator()(dms::activation_block &b) {
    const auto t0 = std::chrono::steady_clock::now();
    inner(b);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

template <class Fn> void with_policy(std::int64_t kind, Fn &&fn) {
  const auto &b = bundle();
  const float alpha = b.steering.alpha;
  auto run = [&](const auto &policy) {
    using Policy = std::decay_t<decltype(policy)>;
    std::vector<typename Policy::state_type> states(2);
    std::vector<float> scratch(dms::policy_hooks<Policy>::scratch_floats(policy, 1024));
    dms::policy_hooks<Policy> hooks(policy, std::span(states), std::span(scratch));
    fn(hooks);
  };
  switch (kind) {
  case 1: run(dms::constant_policy(b.steering_at(), b.steering.vector.values, alpha)); break;
  case 2: run(dms::dms_policy<>(b.probe, b.probe_at(), b.steering.vector, alpha)); break;
  case 3: {
    const auto &c = *b.condition;
    run(dms::conditional_policy(c.at, c.vector, c.threshold, c.compare, b.steering.vector, alpha, c.mode));
    break;
  }
  case 4: {
    read_one_hook hook{b.probe_at()};
    fn(hook);
    benchmark::DoNotOptimize(hook.sink);
    break;
  }
  default: {
    dms::no_hooks none;
    fn(none);
  }
  }
}

template <class Hooks>
void prefill(dms::llama_model &m, std::int32_t seq, const std::vector<dms::token_id> &ids, Hooks &hooks) {
  dms::bench::run_prompt(m, seq, ids, hooks);
}

constexpr std::int32_t prompt_len = 64, max_decoded = 448; // as bench_cpu_forward's decode

void BM_decode_policy(benchmark::State &state) {
  if (missing(state)) return;
  auto &m = model_for(static_cast<int>(state.range(1)));
  const auto prompt = tokens(prompt_len, m.n_vocab()), next = tokens(512, m.n_vocab(), 7);
  with_policy(state.range(0), [&](auto &hooks) {
    prefill(m, 0, prompt, hooks);
    std::int32_t pos = prompt_len;
    std::size_t i = 0;
    for (auto _ : state) {
      if (pos >= prompt_len + max_decoded) {
        state.PauseTiming();
        prefill(m, 0, prompt, hooks);
        pos = prompt_len;
        state.ResumeTiming();
      }
      const dms::token_id id = next[i++ % next.size()];
      const dms::token_slot slot{0, pos++, true};
      benchmark::DoNotOptimize(m.forward(dms::token_batch{{&id, 1}, {&slot, 1}}, hooks).data);
    }
  });
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

void BM_decode_paired(benchmark::State &state) {
  if (missing(state)) return;
  auto &m = model_for(static_cast<int>(state.range(1)));
  const auto prompt = tokens(prompt_len, m.n_vocab()), next = tokens(512, m.n_vocab(), 7);
  std::vector<double> plain, steered;
  double in_policy = 0, steered_total = 0;
  with_policy(state.range(0), [&](auto &policy_hooks) {
    timed_hooks<std::remove_reference_t<decltype(policy_hooks)>> hooks{policy_hooks};
    dms::no_hooks none;
    prefill(m, 0, prompt, none);
    prefill(m, 1, prompt, hooks);
    std::int32_t pos = prompt_len;
    std::size_t i = 0;
    using clock = std::chrono::steady_clock;
    auto step = [&](std::int32_t seq, auto &h, dms::token_id id, std::int32_t at) {
      const dms::token_slot slot{seq, at, true};
      const double hooked = hooks.seconds;
      const auto t0 = clock::now();
      benchmark::DoNotOptimize(m.forward(dms::token_batch{{&id, 1}, {&slot, 1}}, h).data);
      const double t = std::chrono::duration<double>(clock::now() - t0).count();
      if (seq == 1) {
        in_policy += hooks.seconds - hooked; // decode steps only, not the prefills
        steered_total += t;
      }
      return t;
    };
    for (auto _ : state) {
      if (pos >= prompt_len + max_decoded) {
        state.PauseTiming();
        prefill(m, 0, prompt, none);
        prefill(m, 1, prompt, hooks);
        pos = prompt_len;
        state.ResumeTiming();
      }
      const dms::token_id id = next[i++ % next.size()];
      // Alternate which goes first, so neither always follows the other's cache footprint.
      if (i % 2) {
        plain.push_back(step(0, none, id, pos));
        steered.push_back(step(1, hooks, id, pos));
      } else {
        steered.push_back(step(1, hooks, id, pos));
        plain.push_back(step(0, none, id, pos));
      }
      ++pos;
    }
  });
  if (plain.empty()) return;
  state.counters["in_policy_pct"] = 100.0 * in_policy / steered_total;
  const double p = median(plain), s = median(steered);
  state.counters["plain_ms"] = 1e3 * p;
  state.counters["steered_ms"] = 1e3 * s;
  state.counters["overhead_pct"] = 100.0 * (s / p - 1.0);
}

//! The probe data: $DMS_PROBE_DATA, or two Gaussian classes (n = 320, d = 576; 60 of class 1,
//! shifted by 0.3 per feature) with a stratified 30% held out.
const dms::probe_data &probe_rows() {
  static const dms::probe_data d = [] {
    if (const char *path = std::getenv("DMS_PROBE_DATA")) return dms::read_probe_data(path);
    dms::probe_data s;
    s.n_rows = 320;
    s.n_features = 576;
    std::mt19937 gen(5);
    std::normal_distribution<float> g;
    for (std::int64_t i = 0; i < s.n_rows; ++i) {
      const int y = i % 16 < 3;
      for (std::int64_t j = 0; j < s.n_features; ++j) s.x.push_back(g(gen) + 0.3f * static_cast<float>(y));
      s.y.push_back(y);
    }
    s.heldout = dms::stratified_split(s.y, 0.3, 0);
    return s;
  }();
  return d;
}

void BM_probe_fit(benchmark::State &state) {
  const auto &d = probe_rows();
  const auto train = d.part(false), test = d.part(true);
  dms::logistic_options opt{.C = 1.0, .class_weight = dms::class_weight_mode::balanced}; // as calibrate
  opt.tol = std::pow(10.0, -static_cast<double>(state.range(1)));
  dms::thread_pool pool(static_cast<std::size_t>(state.range(0)));
  opt.pool = &pool;
  std::optional<dms::logistic_fit> fit;
  for (auto _ : state) {
    fit.emplace(dms::fit_logistic(train.matrix(), train.y, opt));
    benchmark::DoNotOptimize(fit->probe.bias());
  }
  const auto m = dms::evaluate(fit->probe, test.matrix(), test.y);
  state.counters["train_rows"] = static_cast<double>(train.n_rows);
  state.counters["features"] = static_cast<double>(d.n_features);
  state.counters["heldout_accuracy"] = m.accuracy;
  state.counters["heldout_auc"] = m.roc_auc;
  state.counters["iterations"] = fit->report.iterations;
}

} // namespace

BENCHMARK(BM_decode_policy)->ArgsProduct({{0, 1, 2, 3}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_paired)->ArgsProduct({{1, 2, 3, 4}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_probe_fit)->ArgsProduct({{1, 2}, {8, 4}})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
