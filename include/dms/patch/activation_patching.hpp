// dms/patch/activation_patching.hpp: which layers carry the information a prediction depends on.
//
// Activation patching (ROME's causal tracing, TransformerLens's `patching` module) runs a clean
// prompt x and a corrupted prompt x' of the same length that should be answered differently
// ("The Eiffel Tower is in" -> " Paris", "The Colosseum is in" -> " Rome"). Then, for each site s,
// layer l (and optionally position p), it reruns x' with the activation at (s, l, p) overwritten
// by x's and measures how much of the clean answer comes back (patching_result.hpp defines the
// normalized effect). DMS uses the layer with the largest mean effect as its steering layer.
//
// Cost: per pair, one forward of the clean and the corrupted prompt (as two sequences of one
// batch when the backend holds two) caches the clean activations of every patched (site, layer)
// at every position; then every patched variant is one run of x', and up to max_sequences
// variants go into one forward as different sequences, each patched at its own (site, layer,
// position): the hook looks up the variant by the slot's sequence id and overwrites only the
// target rows. Variants never share a sequence; and since a backend may round a token
// differently in a larger batch, every forward of a pair holds the same number of sequences
// (patching_options::uniform_batches), so that a patch that changes nothing scores exactly 0 and
// the clean activations are replayed through the same kernels that produced them.
//
// Compared with TransformerLens (transformer_lens/patching.py):
//   * get_act_patch_resid_pre / get_act_patch_block_every patch (layer, position) pairs and
//     return the raw metric per patch, [3, n_layers, pos] for block_every with the sites
//     resid_pre, attn_out, mlp_out in that order. dms does the same with per_position = true and
//     the default sites; per_position = false patches all positions at once (TransformerLens
//     offers that only for attention heads, `..._all_pos`).
//   * TransformerLens runs the whole batch of prompts in one forward per patch and leaves the
//     metric (usually a batch-mean logit difference, normalized by the caller) to the user; dms
//     fixes the metric to a logit difference or a log-prob at the last position and reports both
//     the per-pair normalized effect, its mean, and the TransformerLens-style pooled effect.
//   * TransformerLens requires every prompt of the batch to have the same length; dms requires
//     it within a pair, and across pairs only with per_position (the position axis must agree).
//
// Backends: any dms::model_backend whose activations are in host memory. The caller's hook set
// may ride along (a steering policy, say): it runs first at every point it wants, in the clean,
// corrupted and patched runs alike, and the patch then overwrites the target rows.
//
// @code
//   dms::patching_pair pair{tok.encode("The Eiffel Tower is located in the city of", false),
//                           tok.encode("The Colosseum is located in the city of", false),
//                           tok.encode(" Paris", false)[0], tok.encode(" Rome", false)[0]};
//   dms::patching_options opt;
//   opt.sites = {dms::site::resid_pre};
//   auto r = dms::activation_patching(model, std::span(&pair, 1), opt);
//   std::int32_t layer = dms::choose_steering_layer(r, dms::site::resid_pre);
// @endcode
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/patch/batching.hpp"
#include "dms/patch/hooks.hpp"
#include "dms/patch/patching_result.hpp"

DMS_NAMESPACE_BEGIN

//! A clean prompt, its corrupted twin of the same length, and the answers each should give.
struct patching_pair {
  std::vector<token_id> clean;
  std::vector<token_id> corrupt;
  token_id clean_target = 0;   //!< the token the clean prompt should predict next
  token_id corrupt_target = 0; //!< the token the corrupted prompt should predict next
};

//! What to do with a pair whose clean and corrupted metrics (nearly) coincide: its normalized
//! effect divides by (almost) zero.
enum class degenerate_policy : std::uint8_t {
  error, //!< throw errc::numeric naming the pair (the default: such a pair is usually a mistake)
  nan,   //!< flag the pair, skip its patched runs, give it NaN effects, leave it out of the means
};

struct patching_options {
  //! Sites to patch, in the order of the result's site axis (per-layer sites only).
  std::vector<site> sites{site::resid_pre, site::attn_out, site::mlp_out};
  std::int32_t layer_begin = 0; //!< first layer to patch
  std::int32_t layer_end = -1;  //!< one past the last layer to patch; -1: n_layers
  //! Patch each position alone (TransformerLens's per-position sweeps) instead of all at once.
  bool per_position = false;
  //! Without per_position: patch only the last position instead of all of them. Patching every
  //! position of an early layer hands the corrupted run the clean tokens themselves (an early
  //! block's output is still mostly its input token) and restores everything; at the last
  //! position only, a layer scores what it contributes to the prediction there (the DMS
  //! calibration's causal-layer search uses this).
  bool last_position_only = false;
  patching_metric metric = patching_metric::logit_diff;
  degenerate_policy on_degenerate = degenerate_policy::error;
  //! |m_clean - m_corrupt| at or below this is degenerate. 1e-6 is far below any real logit gap
  //! and above the rounding noise of an f32 forward on the same prompt.
  double min_metric_gap = 1e-6;
  //! Sequences per forward; 0: the backend's n_seq_max() if it reports one, else 1.
  std::int32_t max_sequences = 0;
  //! Tokens per forward; <= 0: no limit (see collect_options::max_batch_tokens).
  std::int64_t max_batch_tokens = 2048;
  //! Give every forward of a pair the same number of sequences, padding the baseline and the
  //! last patched forward with unpatched corrupted runs. A backend may compute a token
  //! differently depending on the size of its batch (dms::llama_model switches from 8-bit to f32
  //! mat-mul kernels at 64 tokens: about 0.3 in SmolLM2's logits), and an effect compares runs of
  //! different forwards, so without this a patch that changes nothing can score 0.03 instead of
  //! 0. Costs at most one forward's worth of extra runs per pair (result.n_padding_runs).
  bool uniform_batches = true;
  //! Reports one unit per prompt run (clean, corrupted and each patched variant).
  progress report;
};

namespace detail {

//! The metric of one logits row.
inline double patching_score(std::span<const float> logits, patching_metric metric, token_id clean_target,
                             token_id corrupt_target) {
  const auto ct = static_cast<std::size_t>(clean_target);
  if (metric == patching_metric::logit_diff)
    return static_cast<double>(logits[ct]) - static_cast<double>(logits[static_cast<std::size_t>(corrupt_target)]);
  double top = -std::numeric_limits<double>::infinity();
  for (float v : logits) top = std::max(top, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - top);
  return static_cast<double>(logits[ct]) - top - std::log(sum);
}

//! Copies the rows of one sequence at the patched points into the clean cache:
//! cache[point][pos * n_embd ...].
class clean_recorder {
public:
  clean_recorder(const hook_point_table &table, std::vector<std::vector<float>> &cache,
                 std::vector<std::int32_t> &hits, std::int64_t n_embd)
      : table_(&table), cache_(&cache), hits_(&hits), n_embd_(n_embd) {}

  //! Which sequence of the coming forward is the clean prompt (-1: none).
  void record_sequence(std::int32_t seq) noexcept { seq_ = seq; }

  bool wants(hook_point p) const noexcept { return seq_ >= 0 && table_->contains(p); }

  void operator()(activation_block &block) {
    const std::int32_t k = (*table_)[block.at];
    if (k < 0 || seq_ < 0) return;
    check_block(block, n_embd_, "activation_patching");
    auto &dst = (*cache_)[static_cast<std::size_t>(k)];
    const auto d = static_cast<std::size_t>(n_embd_);
    for (std::int64_t r = 0; r < block.rows.rows; ++r) {
      const token_slot &slot = block.slots[static_cast<std::size_t>(r)];
      if (slot.seq != seq_) continue;
      const auto pos = static_cast<std::size_t>(slot.pos);
      require(pos * d < dst.size(), errc::invalid_argument, [&] {
        return "activation_patching: the backend reported position " + std::to_string(slot.pos) +
               " beyond the clean prompt";
      });
      const float *src = block.rows.row(r);
      std::copy(src, src + d, dst.data() + pos * d);
      ++(*hits_)[static_cast<std::size_t>(k)];
    }
  }

  static void check_block(const activation_block &block, std::int64_t n_embd, const char *who) {
    require(block.space == memory_space::host, errc::unsupported,
            [&] { return std::string(who) + " works on host memory; this backend hands device rows"; });
    require(block.rows.cols == n_embd, errc::shape_mismatch, [&] {
      return std::string(who) + ": " + to_string(block.at) + " has width " + std::to_string(block.rows.cols) +
             ", expected n_embd " + std::to_string(n_embd);
    });
  }

private:
  const hook_point_table *table_;
  std::vector<std::vector<float>> *cache_;
  std::vector<std::int32_t> *hits_;
  std::int64_t n_embd_;
  std::int32_t seq_ = -1;
};

//! One patched run: overwrite point `point` (an index of the table) at position `pos`
//! (all_positions / last_position: those of the prompt).
struct patch_variant {
  static constexpr std::int32_t all_positions = -1;
  static constexpr std::int32_t last_position = -2;
  std::int32_t point = 0;
  std::int32_t pos = all_positions;
};

//! Overwrites, in sequence s of a forward, the rows that variant s targets with clean ones.
class activation_patcher {
public:
  activation_patcher(const hook_point_table &table, const std::vector<std::vector<float>> &cache,
                     std::int64_t n_embd)
      : table_(&table), cache_(&cache), n_embd_(n_embd) {}

  //! Sequence s of the coming forward runs variants[s]; writes[s] counts the rows written.
  void set_group(std::span<const patch_variant> variants, std::span<std::int32_t> writes) noexcept {
    variants_ = variants;
    writes_ = writes;
  }

  bool wants(hook_point p) const noexcept { return table_->contains(p); }

  void operator()(activation_block &block) {
    const std::int32_t k = (*table_)[block.at];
    if (k < 0) return;
    clean_recorder::check_block(block, n_embd_, "activation_patching");
    const auto &src = (*cache_)[static_cast<std::size_t>(k)];
    const auto d = static_cast<std::size_t>(n_embd_);
    for (std::int64_t r = 0; r < block.rows.rows; ++r) {
      const token_slot &slot = block.slots[static_cast<std::size_t>(r)];
      if (slot.seq < 0 || static_cast<std::size_t>(slot.seq) >= variants_.size()) continue;
      const patch_variant &v = variants_[static_cast<std::size_t>(slot.seq)];
      // The cache holds the clean prompt's rows: its length gives the last position.
      const std::int32_t target =
          v.pos == patch_variant::last_position ? static_cast<std::int32_t>(src.size() / d) - 1 : v.pos;
      if (v.point != k || (target >= 0 && target != slot.pos)) continue;
      const auto pos = static_cast<std::size_t>(slot.pos);
      require((pos + 1) * d <= src.size(), errc::invalid_argument, [&] {
        return "activation_patching: the backend reported position " + std::to_string(slot.pos) +
               " beyond the prompt";
      });
      std::copy(src.data() + pos * d, src.data() + (pos + 1) * d, block.rows.row(r));
      ++writes_[static_cast<std::size_t>(slot.seq)];
    }
  }

private:
  const hook_point_table *table_;
  const std::vector<std::vector<float>> *cache_;
  std::int64_t n_embd_;
  std::span<const patch_variant> variants_;
  std::span<std::int32_t> writes_;
};

//! The metric of each sequence of a batch built with one want_logits row per sequence.
inline void read_metrics(matrix_view<const float> logits, std::size_t n_seq, std::int64_t n_vocab,
                         const patching_pair &pair, patching_metric metric, std::span<double> out) {
  require(logits.rows == static_cast<std::int64_t>(n_seq) && logits.cols == n_vocab, errc::shape_mismatch, [&] {
    return "activation_patching: the backend returned " + std::to_string(logits.rows) + " x " +
           std::to_string(logits.cols) + " logits, expected " + std::to_string(n_seq) + " x " +
           std::to_string(n_vocab);
  });
  for (std::size_t s = 0; s < n_seq; ++s)
    out[s] = patching_score(logits.row_span(static_cast<std::int64_t>(s)), metric, pair.clean_target,
                            pair.corrupt_target);
}

} // namespace detail

//! Runs the sweep described at the top of this header over `pairs`; `extra` hooks ride along.
//!
//! Errors (dms::error, before any forward unless said otherwise): no pairs; an empty prompt, a
//! clean and corrupted prompt of different lengths, a prompt longer than n_ctx or with a token
//! outside the vocabulary, a target outside the vocabulary; with per_position, pairs of different
//! lengths; no sites, a model-level or repeated site; a layer range that is empty or outside
//! [0, n_layers); a device backend. During the sweep: a degenerate pair under
//! degenerate_policy::error (errc::numeric); a backend that never called the hook at a patched
//! point (errc::unsupported). The backend's sequences are cleared before every forward and when
//! the sweep ends, also on error.
template <model_backend Backend, hook_set Hooks>
patching_result activation_patching(Backend &backend, std::span<const patching_pair> pairs,
                                    const patching_options &options, Hooks &extra) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto n_layers = static_cast<std::int32_t>(backend.n_layers());
  const auto n_embd = static_cast<std::int64_t>(backend.n_embd());
  const auto n_vocab = static_cast<std::int64_t>(backend.n_vocab());
  require(!pairs.empty(), errc::invalid_argument, [] { return std::string("activation_patching: no pairs"); });
  require(backend.space() == memory_space::host, errc::unsupported,
          [] { return std::string("activation_patching: the backend's activations must be in host memory"); });
  require(!options.sites.empty(), errc::invalid_argument,
          [] { return std::string("activation_patching: no sites to patch"); });
  const std::int32_t lb = options.layer_begin;
  const std::int32_t le = options.layer_end < 0 ? n_layers : options.layer_end;
  require(lb >= 0 && lb < le && le <= n_layers, errc::invalid_argument, [&] {
    return "activation_patching: layer range [" + std::to_string(lb) + ", " + std::to_string(le) +
           ") is empty or outside the model's [0, " + std::to_string(n_layers) + ")";
  });
  require(std::isfinite(options.min_metric_gap) && options.min_metric_gap >= 0, errc::invalid_argument,
          [] { return std::string("activation_patching: min_metric_gap must be finite and >= 0"); });

  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const patching_pair &p = pairs[i];
    const auto name = [&](const char *which) { return "activation_patching: pair " + std::to_string(i) + " " + which; };
    detail::check_prompt(backend, p.clean, [&] { return name("clean prompt"); });
    detail::check_prompt(backend, p.corrupt, [&] { return name("corrupted prompt"); });
    require(p.clean.size() == p.corrupt.size(), errc::invalid_argument, [&] {
      return name("") + "has a clean prompt of " + std::to_string(p.clean.size()) + " tokens and a corrupted one of " +
             std::to_string(p.corrupt.size()) + " (patching needs the same length)";
    });
    for (token_id t : {p.clean_target, p.corrupt_target})
      require(t >= 0 && t < n_vocab, errc::invalid_argument, [&] {
        return name("") + "target " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(n_vocab);
      });
    require(!options.per_position || p.clean.size() == pairs[0].clean.size(), errc::invalid_argument, [&] {
      return name("") + "has " + std::to_string(p.clean.size()) + " tokens, pair 0 has " +
             std::to_string(pairs[0].clean.size()) + " (per-position patching needs one length for all pairs)";
    });
  }

  patching_result res;
  res.sites = options.sites;
  res.layer_begin = lb;
  res.layer_end = le;
  res.per_position = options.per_position;
  res.n_positions = options.per_position ? static_cast<std::int32_t>(pairs[0].clean.size()) : 1;
  res.metric = options.metric;

  // Table index of (site i, layer l) = i * n_patched_layers + (l - lb): the same order as the
  // result's [site][layer] axes.
  const std::int32_t n_pl = le - lb;
  hook_point_table table(n_layers);
  for (std::size_t i = 0; i < options.sites.size(); ++i) {
    const site s = options.sites[i];
    require(!is_model_level(s), errc::invalid_argument, [&] {
      return "activation_patching: site " + std::string(name_of(s)) + " exists once per model, not per layer";
    });
    for (std::size_t j = 0; j < i; ++j)
      require(options.sites[j] != s, errc::invalid_argument,
              [&] { return "activation_patching: site " + std::string(name_of(s)) + " listed twice"; });
    for (std::int32_t l = lb; l < le; ++l)
      table.set({l, s}, static_cast<std::int32_t>(i) * n_pl + (l - lb));
  }
  const std::size_t n_points = options.sites.size() * static_cast<std::size_t>(n_pl);
  const std::size_t block = res.block_size();
  const std::size_t n_pairs = pairs.size();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  res.clean_metric.assign(n_pairs, nan);
  res.corrupt_metric.assign(n_pairs, nan);
  res.degenerate.assign(n_pairs, 0);
  res.patched_metric.assign(n_pairs * block, nan);
  res.effect.assign(n_pairs * block, nan);

  // The variants of one pair, in result order: [site][layer][position].
  std::vector<detail::patch_variant> variants;
  variants.reserve(block);
  for (std::size_t k = 0; k < n_points; ++k)
    for (std::int32_t p = 0; p < res.n_positions; ++p)
      variants.push_back({static_cast<std::int32_t>(k), options.per_position       ? p
                                                        : options.last_position_only ? detail::patch_variant::last_position
                                                                                     : detail::patch_variant::all_positions});

  const std::int32_t n_seq = parallel_sequences(backend, options.max_sequences);
  std::vector<std::vector<float>> cache(n_points);
  std::vector<std::int32_t> hits(n_points);
  detail::clean_recorder recorder(table, cache, hits, n_embd);
  detail::activation_patcher patcher(table, cache, n_embd);
  chained_hooks<Hooks, detail::clean_recorder> record_hooks(extra, recorder);
  chained_hooks<Hooks, detail::activation_patcher> patch_hooks(extra, patcher);
  std::vector<std::int32_t> writes(static_cast<std::size_t>(n_seq));
  std::vector<double> metrics(static_cast<std::size_t>(n_seq));

  options.report.start("activation patching", n_pairs * (2 + variants.size()));
  sequence_guard<Backend> guard(backend, n_seq);
  batch_builder batch;
  for (std::size_t pi = 0; pi < n_pairs; ++pi) {
    const patching_pair &pair = pairs[pi];
    const std::size_t n = pair.clean.size();
    for (auto &c : cache) c.assign(n * static_cast<std::size_t>(n_embd), 0.0f);
    std::fill(hits.begin(), hits.end(), 0);

    // Every forward of this pair holds `width` sequences of n tokens (see uniform_batches).
    const std::size_t fit = options.max_batch_tokens > 0
                                ? std::max<std::size_t>(1, static_cast<std::size_t>(options.max_batch_tokens) / n)
                                : static_cast<std::size_t>(n_seq);
    const std::size_t width = std::min(static_cast<std::size_t>(n_seq), fit);
    const auto run = [&](std::size_t count, auto &hooks) {
      detail::read_metrics(backend.forward(batch.view(), hooks), count, n_vocab, pair, options.metric,
                           std::span(metrics).first(count));
      ++res.n_forwards;
    };
    const auto fill_padding = [&](std::size_t count) {
      const std::size_t total = options.uniform_batches ? width : count;
      for (std::size_t s = count; s < total; ++s) {
        backend.clear(static_cast<std::int32_t>(s));
        batch.add_sequence(static_cast<std::int32_t>(s), pair.corrupt);
      }
      res.n_padding_runs += total - count;
      return total;
    };

    // Clean and corrupted runs: one forward when two sequences fit, else one each.
    if (width >= 2) {
      batch.clear();
      backend.clear(0);
      backend.clear(1);
      batch.add_sequence(0, pair.clean);
      batch.add_sequence(1, pair.corrupt);
      recorder.record_sequence(0);
      run(fill_padding(2), record_hooks);
      res.clean_metric[pi] = metrics[0];
      res.corrupt_metric[pi] = metrics[1];
    } else {
      for (int which = 0; which < 2; ++which) {
        batch.clear();
        backend.clear(0);
        batch.add_sequence(0, which == 0 ? pair.clean : pair.corrupt);
        recorder.record_sequence(which == 0 ? 0 : -1);
        run(1, record_hooks);
        (which == 0 ? res.clean_metric : res.corrupt_metric)[pi] = metrics[0];
      }
    }
    res.n_runs += 2;
    options.report.advance(2);
    for (std::size_t k = 0; k < n_points; ++k)
      require(hits[k] == static_cast<std::int32_t>(n), errc::unsupported, [&] {
        const hook_point p{lb + static_cast<std::int32_t>(k % static_cast<std::size_t>(n_pl)),
                           options.sites[k / static_cast<std::size_t>(n_pl)]};
        return "activation_patching: the backend called the hook at " + to_string(p) + " for " +
               std::to_string(hits[k]) + " of the " + std::to_string(n) +
               " clean positions (does it implement this hook site?)";
      });

    const double gap = res.clean_metric[pi] - res.corrupt_metric[pi];
    if (!(std::abs(gap) > options.min_metric_gap)) {
      require(options.on_degenerate == degenerate_policy::nan, errc::numeric, [&] {
        return "activation_patching: pair " + std::to_string(pi) + " is degenerate: clean metric " +
               std::to_string(res.clean_metric[pi]) + " and corrupted metric " + std::to_string(res.corrupt_metric[pi]) +
               " differ by at most min_metric_gap, so no effect can be normalized (check the targets, or set "
               "on_degenerate = degenerate_policy::nan to skip such pairs)";
      });
      res.degenerate[pi] = 1;
      options.report.advance(variants.size());
      continue;
    }

    // Patched variants, `width` per forward; the last forward is padded with unpatched runs.
    for (std::size_t first = 0; first < variants.size(); first += width) {
      const std::size_t count = std::min(width, variants.size() - first);
      batch.clear();
      for (std::size_t s = 0; s < count; ++s) {
        backend.clear(static_cast<std::int32_t>(s));
        batch.add_sequence(static_cast<std::int32_t>(s), pair.corrupt);
      }
      const std::size_t total = fill_padding(count);
      std::fill(writes.begin(), writes.end(), 0);
      // Sequences count .. total-1 have no variant: the patcher leaves them alone.
      patcher.set_group(std::span(variants).subspan(first, count), std::span(writes).first(count));
      run(total, patch_hooks);
      res.n_runs += count;
      for (std::size_t s = 0; s < count; ++s) {
        const detail::patch_variant &v = variants[first + s];
        const std::int32_t expected = v.pos == detail::patch_variant::all_positions ? static_cast<std::int32_t>(n) : 1;
        require(writes[s] == expected, errc::unsupported, [&] {
          return "activation_patching: a patched run overwrote " + std::to_string(writes[s]) + " rows, expected " +
                 std::to_string(expected) + " (the backend skipped or repeated a hook call)";
        });
        res.patched_metric[pi * block + first + s] = metrics[s];
        res.effect[pi * block + first + s] = (metrics[s] - res.corrupt_metric[pi]) / gap;
      }
      options.report.advance(count);
    }
  }
  guard.release();
  options.report.finish();

  // Averages over the usable pairs.
  res.mean_effect.assign(block, nan);
  res.pooled_effect.assign(block, nan);
  std::size_t usable = 0;
  double clean_sum = 0, corrupt_sum = 0;
  for (std::size_t pi = 0; pi < n_pairs; ++pi)
    if (!res.degenerate[pi]) {
      ++usable;
      clean_sum += res.clean_metric[pi];
      corrupt_sum += res.corrupt_metric[pi];
    }
  if (usable > 0) {
    const double u = static_cast<double>(usable);
    const double pooled_gap = (clean_sum - corrupt_sum) / u;
    for (std::size_t j = 0; j < block; ++j) {
      double effect_sum = 0, patched_sum = 0;
      for (std::size_t pi = 0; pi < n_pairs; ++pi)
        if (!res.degenerate[pi]) {
          effect_sum += res.effect[pi * block + j];
          patched_sum += res.patched_metric[pi * block + j];
        }
      res.mean_effect[j] = effect_sum / u;
      // Pairs whose gaps cancel (opposite signs) leave no pooled scale: NaN rather than noise.
      res.pooled_effect[j] = std::abs(pooled_gap) > options.min_metric_gap
                                 ? (patched_sum / u - corrupt_sum / u) / pooled_gap
                                 : nan;
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

//! activation_patching without caller hooks.
template <model_backend Backend>
patching_result activation_patching(Backend &backend, std::span<const patching_pair> pairs,
                                    const patching_options &options = {}) {
  no_hooks none;
  return activation_patching(backend, pairs, options, none);
}

DMS_NAMESPACE_END
