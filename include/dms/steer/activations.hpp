// dms/steer/activations.hpp: datasets of activations at chosen hook points over many prompts.
//
// Probes are trained on activations, steering vectors are differences of their means, delta
// activations compare them across models: all of it starts with "run these prompts and keep the
// residual stream at these hook points, at these positions". collect_activations does that over
// any dms::model_backend:
//   * prompts are token ids; several run as different sequences of one forward when the backend
//     allows (see dms/patch/batching.hpp). Sequences never interact, so the grouping changes a
//     value only where the backend's rounding depends on the batch size (dms::llama_model:
//     bit-identical below 64 tokens per forward, f32 instead of 8-bit mat-mul kernels above;
//     lower max_batch_tokens to stay on one side);
//   * a position_selector says which rows to keep per prompt: the last token, every token, the
//     mean over a span [begin, end), or explicit positions; negative positions count from the
//     end (-1 is the last token), as Python indexing does;
//   * the result holds, per hook point, a float matrix [n_rows, width] (width = n_embd, n_vocab
//     for the logits site) and, per row, which example and which positions it came from;
//   * a dataset saves to and loads from safetensors: one F32 tensor per hook point named as
//     TransformerLens names it (`blocks.3.hook_resid_post`), the rest as JSON in __metadata__
//     under the key "dms.activations", so Python reads the matrices with safetensors alone.
// The backend's sequences 0 .. k-1 are cleared before each forward and when collection ends.
// Host backends only: the hook copies rows with the CPU. Needs dms::io (safetensors, JSON).
//
// @code
//   std::vector<std::vector<dms::token_id>> prompts = {tok.encode("The sky is", false), ...};
//   dms::hook_point points[] = {{12, dms::site::resid_post}, {20, dms::site::resid_post}};
//   dms::collect_options opt;
//   opt.positions = dms::position_selector::mean_over(-4);     // mean of the last 4 tokens
//   auto ds = dms::collect_activations(model, prompts, points, opt);
//   dms::matrix_view<const float> h12 = ds.matrix({12, dms::site::resid_post});   // [n_prompts, n_embd]
//   ds.save("acts.safetensors");
// @endcode
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/patch/batching.hpp"
#include "dms/patch/hooks.hpp"

DMS_NAMESPACE_BEGIN

//! Which token positions of each prompt become rows of a dataset.
struct position_selector {
  enum class mode : std::uint8_t {
    last,      //!< one row per prompt: its last token
    every,     //!< one row per token
    mean,      //!< one row per prompt: the mean over positions [begin, end)
    positions, //!< one row per entry of `positions`, in that order
  };
  //! `end` value meaning "through the last token" (a prompt's length is not known in advance).
  static constexpr std::int32_t to_end = std::numeric_limits<std::int32_t>::max();

  mode how = mode::last;
  std::int32_t begin = 0;              //!< mean: first position (negative: from the end)
  std::int32_t end = to_end;           //!< mean: one past the last (negative: from the end)
  std::vector<std::int32_t> positions; //!< positions mode (negative: from the end)

  static position_selector last_token() { return {}; }
  static position_selector every_token() { return {mode::every, 0, to_end, {}}; }
  //! Mean over [begin, end): mean_over(0) is the whole prompt, mean_over(-3) its last 3 tokens,
  //! mean_over(1, -1) all but the first and the last.
  static position_selector mean_over(std::int32_t begin, std::int32_t end = to_end) {
    return {mode::mean, begin, end, {}};
  }
  static position_selector at(std::vector<std::int32_t> positions) {
    return {mode::positions, 0, to_end, std::move(positions)};
  }

  //! "last", "every", "mean[-3:]", "mean[1:-1]", "positions[0,-1]" (stored in saved datasets).
  std::string describe() const {
    switch (how) {
    case mode::last: return "last";
    case mode::every: return "every";
    case mode::mean:
      return "mean[" + std::to_string(begin) + ":" + (end == to_end ? std::string() : std::to_string(end)) + "]";
    case mode::positions: {
      std::string s = "positions[";
      for (std::size_t i = 0; i < positions.size(); ++i) s += (i ? "," : "") + std::to_string(positions[i]);
      return s + "]";
    }
    }
    return "?";
  }
};

//! Where one row of a dataset comes from: the mean over positions [begin, end) of prompt
//! `example` (end = begin + 1 for a single position, so every row reads the same way).
struct activation_row {
  std::int32_t example = 0;
  std::int32_t begin = 0;
  std::int32_t end = 1;
  friend bool operator==(const activation_row &, const activation_row &) = default;
};

//! Appends to `out` the rows `sel` picks from prompt `example` of `n_tokens` tokens. Errors
//! (invalid_argument, naming the example): a position or span outside the prompt, an empty
//! span, an empty position list.
inline void select_rows(const position_selector &sel, std::int32_t example, std::int32_t n_tokens,
                        std::vector<activation_row> &out) {
  const auto where = [&] {
    return "example " + std::to_string(example) + " (" + std::to_string(n_tokens) + " tokens): selector " +
           sel.describe() + ": ";
  };
  const auto resolve = [&](std::int32_t p) { return p < 0 ? n_tokens + p : p; };
  require(n_tokens > 0, errc::invalid_argument, [&] { return where() + "empty prompt"; });
  switch (sel.how) {
  case position_selector::mode::last: out.push_back({example, n_tokens - 1, n_tokens}); return;
  case position_selector::mode::every:
    for (std::int32_t p = 0; p < n_tokens; ++p) out.push_back({example, p, p + 1});
    return;
  case position_selector::mode::mean: {
    const std::int32_t b = resolve(sel.begin);
    const std::int32_t e = sel.end == position_selector::to_end ? n_tokens : resolve(sel.end);
    require(b >= 0 && e <= n_tokens && b < e, errc::invalid_argument, [&] {
      return where() + "span [" + std::to_string(b) + ", " + std::to_string(e) +
             ") is empty or outside the prompt [0, " + std::to_string(n_tokens) + ")";
    });
    out.push_back({example, b, e});
    return;
  }
  case position_selector::mode::positions:
    require(!sel.positions.empty(), errc::invalid_argument, [&] { return where() + "no positions given"; });
    for (std::int32_t p : sel.positions) {
      const std::int32_t q = resolve(p);
      require(q >= 0 && q < n_tokens, errc::invalid_argument, [&] {
        return where() + "position " + std::to_string(p) + " is outside the prompt [0, " +
               std::to_string(n_tokens) + ")";
      });
      out.push_back({example, q, q + 1});
    }
    return;
  }
}

//! Activations at several hook points over the same rows: per hook point a row-major float
//! matrix [n_rows, width], plus the provenance of each row.
class activation_dataset {
public:
  //! Key of the JSON document in a saved file's __metadata__.
  static constexpr std::string_view metadata_key = "dms.activations";

  activation_dataset() = default;
  //! Checks that every matrix has n_rows x width values and every row lies inside its prompt.
  activation_dataset(std::vector<hook_point> points, std::vector<std::int64_t> widths,
                     std::vector<activation_row> rows, std::vector<std::int32_t> prompt_lengths,
                     std::string selector, std::vector<std::vector<float>> values)
      : points_(std::move(points)), widths_(std::move(widths)), rows_(std::move(rows)),
        prompt_lengths_(std::move(prompt_lengths)), selector_(std::move(selector)), values_(std::move(values)) {
    validate();
  }

  std::span<const hook_point> points() const noexcept { return points_; }
  std::size_t n_points() const noexcept { return points_.size(); }
  std::int64_t n_rows() const noexcept { return static_cast<std::int64_t>(rows_.size()); }
  std::span<const activation_row> rows() const noexcept { return rows_; }
  //! Token count of each prompt (example) the rows refer to.
  std::span<const std::int32_t> prompt_lengths() const noexcept { return prompt_lengths_; }
  std::size_t n_examples() const noexcept { return prompt_lengths_.size(); }
  //! How the rows were selected (position_selector::describe()).
  const std::string &selector() const noexcept { return selector_; }
  std::int64_t width(std::size_t i) const { return widths_.at(i); }

  //! Index of hook point `p` (model-level sites match whatever layer they carry), or nullopt.
  std::optional<std::size_t> find(hook_point p) const noexcept {
    p = canonical_hook_point(p);
    for (std::size_t i = 0; i < points_.size(); ++i)
      if (points_[i] == p) return i;
    return std::nullopt;
  }
  //! The matrix of the i-th hook point.
  matrix_view<const float> matrix(std::size_t i) const {
    require(i < points_.size(), errc::invalid_argument, [&] {
      return "activation_dataset: hook point index " + std::to_string(i) + " out of range (" +
             std::to_string(points_.size()) + " points)";
    });
    return {values_[i].data(), n_rows(), widths_[i], widths_[i]};
  }
  //! The matrix of hook point `p`; invalid_argument when the dataset does not hold it.
  matrix_view<const float> matrix(hook_point p) const {
    const auto i = find(p);
    require(i.has_value(), errc::invalid_argument,
            [&] { return "activation_dataset holds no activations at " + to_string(p); });
    return matrix(*i);
  }

  //! Writes the dataset as a safetensors file (atomically); returns its size in bytes.
  std::uint64_t save(const std::filesystem::path &path) const {
    ordered_json meta;
    meta["version"] = 1;
    meta["selector"] = selector_;
    ordered_json pts = ordered_json::array();
    for (std::size_t i = 0; i < points_.size(); ++i)
      pts.push_back({{"name", to_string(points_[i])},
                     {"layer", points_[i].layer},
                     {"site", std::string(name_of(points_[i].where))},
                     {"width", widths_[i]}});
    meta["hook_points"] = std::move(pts);
    meta["prompt_lengths"] = prompt_lengths_;
    ordered_json ex = ordered_json::array(), b = ordered_json::array(), e = ordered_json::array();
    for (const auto &r : rows_) {
      ex.push_back(r.example);
      b.push_back(r.begin);
      e.push_back(r.end);
    }
    meta["rows"] = {{"example", std::move(ex)}, {"begin", std::move(b)}, {"end", std::move(e)}};

    safetensors_writer w;
    w.set_metadata(std::string(metadata_key), meta.dump());
    for (std::size_t i = 0; i < points_.size(); ++i)
      w.add(to_string(points_[i]), dtype::f32, {n_rows(), widths_[i]}, std::as_bytes(std::span(values_[i])));
    return w.write(path);
  }

  //! Reads a file written by save(). Errors name the file: not safetensors, no dms metadata, a
  //! missing or misshapen tensor, rows outside their prompts.
  static activation_dataset load(const std::filesystem::path &path) {
    safetensors_file f(path.string());
    const auto text = f.metadata(metadata_key);
    const error_context where{f.path(), std::nullopt, std::string(metadata_key)};
    require(text.has_value(), errc::invalid_format, [] {
      return "no '" + std::string(metadata_key) + "' entry in __metadata__ (not an activation dataset)";
    }, {f.path()});
    const json_document doc = parse_json(*text, f.path());
    const ordered_json &meta = json_require_object(doc.value, "metadata", where);
    // Version 1 is the only layout so far; a later one is refused rather than misread.
    (void)json_as_int(json_at(meta, "version", where), "version", where, 1, 1);
    std::string selector = json_as_string(json_at(meta, "selector", where), "selector", where);

    const ordered_json &lens = json_at(meta, "prompt_lengths", where);
    if (!lens.is_array()) json_type_error("prompt_lengths", "an array", lens, where);
    std::vector<std::int32_t> prompt_lengths;
    for (const auto &v : lens)
      prompt_lengths.push_back(static_cast<std::int32_t>(
          json_as_int(v, "prompt_lengths[]", where, 1, std::numeric_limits<std::int32_t>::max())));

    const ordered_json &rows_json = json_require_object(json_at(meta, "rows", where), "rows", where);
    const auto column = [&](std::string_view key) {
      const ordered_json &c = json_at(rows_json, key, where);
      if (!c.is_array()) json_type_error("rows." + std::string(key), "an array", c, where);
      std::vector<std::int32_t> out;
      out.reserve(c.size());
      for (const auto &v : c)
        out.push_back(static_cast<std::int32_t>(json_as_int(v, "rows." + std::string(key) + "[]", where,
                                                            std::numeric_limits<std::int32_t>::min(),
                                                            std::numeric_limits<std::int32_t>::max())));
      return out;
    };
    const auto ex = column("example"), b = column("begin"), e = column("end");
    require(ex.size() == b.size() && b.size() == e.size(), errc::invalid_format, [&] {
      return "rows.example, rows.begin and rows.end have different lengths (" + std::to_string(ex.size()) + ", " +
             std::to_string(b.size()) + ", " + std::to_string(e.size()) + ")";
    }, where);
    std::vector<activation_row> rows(ex.size());
    for (std::size_t i = 0; i < ex.size(); ++i) rows[i] = {ex[i], b[i], e[i]};

    const ordered_json &pts = json_at(meta, "hook_points", where);
    if (!pts.is_array()) json_type_error("hook_points", "an array", pts, where);
    std::vector<hook_point> points;
    std::vector<std::int64_t> widths;
    std::vector<std::vector<float>> values;
    for (const auto &pj : pts) {
      json_require_object(pj, "hook_points[]", where);
      const std::string site_name = json_as_string(json_at(pj, "site", where), "hook_points[].site", where);
      const site *s = nullptr;
      for (const site &candidate : all_sites)
        if (name_of(candidate) == site_name) s = &candidate;
      require(s != nullptr, errc::invalid_format, [&] { return "unknown hook site '" + site_name + "'"; }, where);
      const hook_point p = canonical_hook_point(
          {static_cast<std::int32_t>(json_as_int(json_at(pj, "layer", where), "hook_points[].layer", where, -1,
                                                 std::numeric_limits<std::int32_t>::max())),
           *s});
      const std::int64_t width = json_as_int(json_at(pj, "width", where), "hook_points[].width", where, 1);
      const std::string name = to_string(p);
      const safetensors_tensor &t = f.at(name);
      const std::vector<std::int64_t> expected{static_cast<std::int64_t>(rows.size()), width};
      require(t.shape == expected, errc::shape_mismatch, [&] {
        return "expected shape " + detail::shape_string(expected) + ", got " + detail::shape_string(t.shape);
      }, {f.path(), t.file_offset, name});
      points.push_back(p);
      widths.push_back(width);
      values.push_back(f.to_f32(t));
    }
    try {
      return activation_dataset(std::move(points), std::move(widths), std::move(rows), std::move(prompt_lengths),
                                std::move(selector), std::move(values));
    } catch (const error &err) {
      throw error(errc::invalid_format, err.message(), {f.path()});
    }
  }

private:
  void validate() const {
    require(widths_.size() == points_.size() && values_.size() == points_.size(), errc::shape_mismatch, [&] {
      return "activation_dataset: " + std::to_string(points_.size()) + " hook points, " +
             std::to_string(widths_.size()) + " widths, " + std::to_string(values_.size()) + " matrices";
    });
    for (std::size_t i = 0; i < points_.size(); ++i) {
      require(widths_[i] > 0 && values_[i].size() == static_cast<std::size_t>(n_rows() * widths_[i]),
              errc::shape_mismatch, [&] {
                return "activation_dataset: " + to_string(points_[i]) + " holds " + std::to_string(values_[i].size()) +
                       " values, expected " + std::to_string(n_rows()) + " rows x " + std::to_string(widths_[i]);
              });
      for (std::size_t j = 0; j < i; ++j)
        require(!(points_[j] == points_[i]), errc::invalid_argument,
                [&] { return "activation_dataset: hook point " + to_string(points_[i]) + " appears twice"; });
    }
    for (std::size_t r = 0; r < rows_.size(); ++r) {
      const auto &row = rows_[r];
      const bool ok = row.example >= 0 && static_cast<std::size_t>(row.example) < prompt_lengths_.size() &&
                      row.begin >= 0 && row.begin < row.end && row.end <= prompt_lengths_[static_cast<std::size_t>(row.example)];
      require(ok, errc::invalid_argument, [&] {
        return "activation_dataset: row " + std::to_string(r) + " (example " + std::to_string(row.example) +
               ", positions [" + std::to_string(row.begin) + ", " + std::to_string(row.end) +
               ")) lies outside the " + std::to_string(prompt_lengths_.size()) + " prompts";
      });
    }
  }

  std::vector<hook_point> points_;
  std::vector<std::int64_t> widths_;
  std::vector<activation_row> rows_;
  std::vector<std::int32_t> prompt_lengths_;
  std::string selector_;
  std::vector<std::vector<float>> values_;
};

struct collect_options {
  position_selector positions = position_selector::last_token();
  //! Sequences per forward; 0: the backend's n_seq_max() if it reports one, else 1.
  std::int32_t max_sequences = 0;
  //! Tokens per forward (bounds the activation buffers of a step); <= 0: no limit. 2048 keeps a
  //! step of SmolLM2-sized models well under 100 MB of scratch while batching dozens of prompts.
  std::int64_t max_batch_tokens = 2048;
  //! Reports one unit per prompt done.
  progress report;
};

namespace detail {

//! The hook that sums the selected rows of the sequences of one forward into a dataset.
class activation_recorder {
public:
  activation_recorder(const hook_point_table &table, std::span<const std::int64_t> widths,
                      std::span<const activation_row> rows, std::span<const std::size_t> row_first, bool every,
                      std::vector<std::vector<float>> &values, std::vector<std::vector<std::int32_t>> &hits)
      : table_(&table), widths_(widths), rows_(rows), row_first_(row_first), every_(every), values_(&values),
        hits_(&hits) {}

  //! Sequence s of the coming forward holds example first + s, for s < count.
  void set_group(std::size_t first, std::size_t count) noexcept {
    first_ = first;
    count_ = count;
  }

  bool wants(hook_point p) const noexcept { return table_->contains(p); }

  void operator()(activation_block &block) {
    const std::int32_t k = (*table_)[block.at];
    if (k < 0) return;
    const auto i = static_cast<std::size_t>(k);
    require(block.space == memory_space::host, errc::unsupported,
            [] { return std::string("collect_activations reads host memory; this backend hands device rows"); });
    require(block.rows.cols == widths_[i], errc::shape_mismatch, [&] {
      return "collect_activations: " + to_string(block.at) + " has width " + std::to_string(block.rows.cols) +
             ", expected " + std::to_string(widths_[i]);
    });
    auto &out = (*values_)[i];
    auto &hit = (*hits_)[i];
    const auto width = static_cast<std::size_t>(widths_[i]);
    for (std::int64_t r = 0; r < block.rows.rows; ++r) {
      const token_slot &slot = block.slots[static_cast<std::size_t>(r)];
      require(slot.seq >= 0 && static_cast<std::size_t>(slot.seq) < count_, errc::invalid_argument, [&] {
        return "collect_activations: the backend reported sequence " + std::to_string(slot.seq) +
               ", not one of this step's " + std::to_string(count_);
      });
      const std::size_t example = first_ + static_cast<std::size_t>(slot.seq);
      std::size_t lo = row_first_[example], hi = row_first_[example + 1];
      if (every_) { // one row per position: index it directly instead of scanning the prompt's rows
        lo += static_cast<std::size_t>(slot.pos);
        hi = std::min(hi, lo + 1);
      }
      const float *src = block.rows.row(r);
      for (std::size_t j = lo; j < hi; ++j) {
        if (slot.pos < rows_[j].begin || slot.pos >= rows_[j].end) continue;
        float *dst = out.data() + j * width;
        for (std::size_t c = 0; c < width; ++c) dst[c] += src[c];
        ++hit[j];
      }
    }
  }

private:
  const hook_point_table *table_;
  std::span<const std::int64_t> widths_;
  std::span<const activation_row> rows_;
  std::span<const std::size_t> row_first_;
  bool every_;
  std::vector<std::vector<float>> *values_;
  std::vector<std::vector<std::int32_t>> *hits_;
  std::size_t first_ = 0, count_ = 0;
};

} // namespace detail

//! Runs every prompt through `backend` and keeps the activations at `points`, at the positions
//! `options.positions` selects. `extra` runs first at every hook point it wants (a steering
//! policy, say), so the recorded rows are what the model computed with it.
//!
//! Errors (dms::error, before any forward): no prompts, no hook points, an empty prompt, a prompt
//! longer than n_ctx or with a token outside the vocabulary, a hook point whose layer is outside
//! [0, n_layers), the same hook point twice, a selector outside a prompt, a device backend. After
//! collection: errc::unsupported if the backend never called the hook at some requested point.
template <model_backend Backend, hook_set Hooks>
activation_dataset collect_activations(Backend &backend, std::span<const std::vector<token_id>> prompts,
                                       std::span<const hook_point> points, const collect_options &options,
                                       Hooks &extra) {
  require(!prompts.empty(), errc::invalid_argument, [] { return std::string("collect_activations: no prompts"); });
  require(!points.empty(), errc::invalid_argument,
          [] { return std::string("collect_activations: no hook points"); });
  require(backend.space() == memory_space::host, errc::unsupported,
          [] { return std::string("collect_activations: the backend's activations must be in host memory"); });

  const auto n_layers = static_cast<std::int32_t>(backend.n_layers());
  hook_point_table table(n_layers);
  std::vector<hook_point> pts;
  std::vector<std::int64_t> widths;
  bool wants_logits_site = false;
  for (const hook_point &raw : points) {
    const hook_point p = canonical_hook_point(raw);
    require(!table.contains(p), errc::invalid_argument,
            [&] { return "collect_activations: hook point " + to_string(p) + " requested twice"; });
    table.set(p, static_cast<std::int32_t>(pts.size()));
    pts.push_back(p);
    widths.push_back(p.where == site::logits ? static_cast<std::int64_t>(backend.n_vocab())
                                             : static_cast<std::int64_t>(backend.n_embd()));
    wants_logits_site = wants_logits_site || p.where == site::logits;
  }

  std::vector<activation_row> rows;
  std::vector<std::size_t> row_first{0};
  std::vector<std::int32_t> lengths;
  std::vector<std::size_t> token_counts;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    detail::check_prompt(backend, prompts[i], [&] { return "collect_activations: prompt " + std::to_string(i); });
    const auto n = static_cast<std::int32_t>(prompts[i].size());
    select_rows(options.positions, static_cast<std::int32_t>(i), n, rows);
    row_first.push_back(rows.size());
    lengths.push_back(n);
    token_counts.push_back(prompts[i].size());
  }

  const std::int32_t n_seq = parallel_sequences(backend, options.max_sequences);
  const auto groups = pack_sequences(token_counts, n_seq, options.max_batch_tokens);

  std::vector<std::vector<float>> values(pts.size());
  std::vector<std::vector<std::int32_t>> hits(pts.size());
  for (std::size_t i = 0; i < pts.size(); ++i) {
    values[i].assign(rows.size() * static_cast<std::size_t>(widths[i]), 0.0f);
    hits[i].assign(rows.size(), 0);
  }
  detail::activation_recorder recorder(table, widths, rows, row_first,
                                       options.positions.how == position_selector::mode::every, values, hits);
  chained_hooks<Hooks, detail::activation_recorder> hooks(extra, recorder);

  options.report.start("collecting activations", prompts.size());
  sequence_guard<Backend> guard(backend, n_seq);
  batch_builder batch;
  for (const batch_group &g : groups) {
    batch.clear();
    for (std::size_t i = g.begin; i < g.end; ++i) {
      const auto s = static_cast<std::int32_t>(i - g.begin);
      backend.clear(s);
      batch.add_sequence(s, prompts[i], wants_logits_site);
    }
    recorder.set_group(g.begin, g.end - g.begin);
    (void)backend.forward(batch.view(), hooks);
    options.report.advance(g.end - g.begin);
  }
  guard.release();
  options.report.finish();

  // Every selected position must have been seen exactly once; then spans become means.
  for (std::size_t i = 0; i < pts.size(); ++i) {
    const auto width = static_cast<std::size_t>(widths[i]);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const std::int32_t span = rows[r].end - rows[r].begin;
      require(hits[i][r] == span, errc::unsupported, [&] {
        return "collect_activations: the backend called the hook at " + to_string(pts[i]) + " for " +
               std::to_string(hits[i][r]) + " of the " + std::to_string(span) + " selected positions of example " +
               std::to_string(rows[r].example) + " (does it implement this hook site?)";
      });
      if (span > 1) {
        const float inv = 1.0f / static_cast<float>(span);
        float *v = values[i].data() + r * width;
        for (std::size_t c = 0; c < width; ++c) v[c] *= inv;
      }
    }
  }
  return activation_dataset(std::move(pts), std::move(widths), std::move(rows), std::move(lengths),
                            options.positions.describe(), std::move(values));
}

//! collect_activations without caller hooks.
template <model_backend Backend>
activation_dataset collect_activations(Backend &backend, std::span<const std::vector<token_id>> prompts,
                                       std::span<const hook_point> points, const collect_options &options = {}) {
  no_hooks none;
  return collect_activations(backend, prompts, points, options, none);
}

DMS_NAMESPACE_END
