// dms/merge/engine.hpp: the streaming merge engine: config + strategy -> a merged model on disk.
//
// Steps (each fails early, before anything is written, when it can):
//  1. open every model the config names (headers only: safetensors, GGUF, LoRA adapters; see
//     dms/merge/sources.hpp) in one naming scheme;
//  2. build the plan (dms/merge/plan.hpp): every output tensor, its inputs, resolved parameters,
//     output type; `dms merge --dry-run` stops here and prints it;
//  3. refuse an output path that is (or contains, or lies inside) an input, remove temporaries of
//     earlier killed runs, check the free disk space;
//  4. stream: the writer (dms/merge/writer.hpp) asks for one tensor at a time; the engine reads
//     its inputs from the mappings into reusable f32 buffers, calls the strategy, and the writer
//     converts and writes the result. Peak memory is one tensor's inputs and output (an
//     elementwise method on a tensor above `chunk_elements` runs chunk by chunk, so even less),
//     whatever the size of the model: such a chunk goes to the writer as soon as it is merged, and
//     the mapped pages of the inputs it read are dropped from the process
//     (model_source::release), or the resident set would grow to the size of every input file.
//
// Whole-model TIES (`trim_scope: model` in the config): before step 4, one more streaming pass
// (two reads of every ties tensor, chunk by chunk, as kth_magnitude_finder needs) finds, for each
// model, the magnitude of its k-th largest task-vector entry over all of its tensors, k =
// max(1, floor(density * entries)); every planned tensor then gets that model's `trim_threshold`
// and the ties strategy keeps |d| >= threshold. Memory: the same chunk buffers as the merge plus
// 768 KiB of histograms per model and thread.
//
// Threads: a dms::thread_pool reads and dequantizes the inputs of a tensor in parallel (fixed
// 1 Mi-element pieces) and is lent to the strategy, which splits its own work the same way. The
// result never depends on the thread count: chunk boundaries depend only on sizes, and random
// masks are keyed by (seed, tensor name, model index, element index).
//
// Cancellation: set `*options.cancel` (the CLI does it from SIGINT); the engine checks it between
// pieces of work and throws, and the writer's temporary directory is removed on the way out.
//
// @code
//   dms::merge_config cfg = dms::read_merge_config("ties.yaml");
//   dms::merge_engine engine(cfg, dms::builtin_strategy(cfg.merge_method), {.output = "merged"});
//   std::cout << engine.plan().describe();
//   engine.run();
// @endcode
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/formats/json.hpp"
#include "dms/merge/config.hpp"
#include "dms/merge/plan.hpp"
#include "dms/merge/sources.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategy_handle.hpp"
#include "dms/merge/writer.hpp"

DMS_NAMESPACE_BEGIN

//! The progress handle type (merge_options has a member named `progress`).
using merge_progress = progress;

//! How to run a merge.
struct merge_options {
  std::filesystem::path output{};                      //!< directory (safetensors) or file (GGUF); must not exist
  output_format format = output_format::safetensors;
  std::optional<output_type> out_type{};               //!< overrides the config's out_dtype / dtype
  std::uint64_t seed = 0;                              //!< seeds DARE / DELLA masks
  std::size_t threads = 0;                             //!< 0: every hardware thread
  std::uint64_t max_shard_bytes = 5'000'000'000;       //!< transformers' default "5GB"
  vocab_policy vocab = vocab_policy::truncate;
  //! Elementwise methods merge larger tensors in chunks of this many elements (a multiple of
  //! 256, so chunks start on whole quantization blocks). 256 Ki elements is 1 MiB of f32 per
  //! input: a chunk's inputs, its result and its encoded bytes stay in cache from conversion to
  //! write, where 16 Mi-element chunks made every step a trip to DRAM (linear on SmolLM2 BF16 was
  //! memory-bound); the per-chunk overhead (a few microseconds) is far below the chunk's work.
  std::uint64_t chunk_elements = std::uint64_t{1} << 18;
  merge_progress progress{};                           //!< bytes read, with ETA
  const std::atomic<bool> *cancel = nullptr;           //!< set to stop; nothing is written
};

//! Files of a Hugging Face model directory that describe the tokenizer (copied to the output).
inline constexpr std::string_view hf_tokenizer_files[] = {
    "tokenizer.json",     "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json",         "merges.txt",            "added_tokens.json",       "chat_template.jinja",
    "chat_template.json",
};

class merge_engine {
public:
  //! Opens the inputs and builds the plan (nothing is written).
  merge_engine(merge_config config, strategy_handle strategy, merge_options options)
      : config_(std::move(config)), strategy_(std::move(strategy)), options_(std::move(options)) {
    require(static_cast<bool>(strategy_.merge), errc::invalid_argument,
            [] { return std::string("the strategy handle has no merge function"); });
    require(options_.chunk_elements >= 256 && options_.chunk_elements % 256 == 0, errc::invalid_argument,
            [] { return std::string("chunk_elements must be a positive multiple of 256"); });
    refs_ = config_.referenced_models();
    bool all_gguf = options_.format == output_format::gguf;
    for (const auto &r : refs_) all_gguf = all_gguf && is_plain_gguf(r);
    naming_ = all_gguf ? tensor_naming::gguf : tensor_naming::hf;
    for (const auto &r : refs_) sources_.push_back(open_model_source(r, naming_));
    std::vector<const model_source *> raw;
    for (const auto &s : sources_) raw.push_back(s.get());
    plan_ = build_merge_plan(config_, refs_, raw, strategy_, naming_,
                             {.format = options_.format, .out_type = options_.out_type, .vocab = options_.vocab});
    if (options_.format == output_format::gguf) {
      require(metadata_source() != nullptr, errc::unsupported, [] {
        return std::string("GGUF output takes its metadata (tokenizer, hyper-parameters) from a GGUF input, and "
                           "this merge has none: write safetensors, or make the base model a GGUF file");
      }, {config_.file});
    } else {
      collect_hf_files();
    }
    if (!options_.output.empty()) check_output_path();
  }

  const merge_plan &plan() const noexcept { return plan_; }
  const merge_config &config() const noexcept { return config_; }
  tensor_naming naming() const noexcept { return naming_; }
  std::span<const std::unique_ptr<model_source>> sources() const noexcept { return sources_; }
  //! Extra files the safetensors output gets (config.json, tokenizer files, ...).
  const std::map<std::string, std::string> &extra_files() const noexcept { return files_; }
  //! Temporaries of killed runs that run() removed.
  const std::vector<std::filesystem::path> &removed_temporaries() const noexcept { return removed_; }
  //! Bytes the output will take (tensor data plus extra files).
  std::uint64_t output_size() const {
    std::uint64_t n = output_bytes(plan_);
    for (const auto &f : files_) n += f.second.size();
    return n;
  }

  //! Merges and writes the output.
  void run() {
    require(!options_.output.empty(), errc::invalid_argument, [] { return std::string("no output path given"); });
    removed_ = remove_stale_temporaries(options_.output);
    require(!std::filesystem::exists(options_.output), errc::io,
            [] { return std::string("already exists; refusing to overwrite (remove it or choose another path)"); },
            {options_.output.string()});
    // Headers, metadata and padding: 64 MiB is far above any real model's (SmolLM2's GGUF header
    // with its 49152-token vocabulary is 2 MiB).
    check_free_space(options_.output, output_size() + (std::uint64_t{64} << 20));
    thread_pool pool(options_.threads);
    pool_ = &pool;
    if (strategy_.set_thread_pool) strategy_.set_thread_pool(&pool);
    struct reset {
      merge_engine *e;
      ~reset() {
        if (e->strategy_.set_thread_pool) e->strategy_.set_thread_pool(nullptr);
        e->pool_ = nullptr;
      }
    } reset_pool{this};
    prepare_trim_thresholds();
    options_.progress.start("merging", plan_.read_bytes(), progress_unit::bytes);
    const tensor_provider provide = [this](std::size_t i, const tensor_chunk_sink &emit) {
      merge_tensor(i, {}, emit);
    };
    if (options_.format == output_format::gguf)
      write_gguf_output(plan_, options_.output, provide, *metadata_source(), pool_);
    else
      write_safetensors_output(plan_, options_.output, provide, options_.max_shard_bytes, files_, pool_);
    options_.progress.finish();
  }

  //! Under `trim_scope: model`: finds each model's whole-model trim threshold (one streaming
  //! pass over the inputs, see the header comment) and sets it as `trim_threshold` in every
  //! planned tensor. run() and compute() call it; it does its work once. No-op otherwise.
  void prepare_trim_thresholds() {
    if (thresholds_ready_ || plan_.trim_scope != magnitude_trim_scope::model) return;
    // Models (by source index) that are trimmed, with their density (one per model: the plan checked).
    std::map<std::size_t, double> density;
    std::vector<std::size_t> tensors; // planned tensors that hold a trimmed model
    for (std::size_t ti = 0; ti < plan_.tensors.size(); ++ti) {
      const planned_tensor &t = plan_.tensors[ti];
      if (!t.base) continue;
      bool any = false;
      for (std::size_t i = 0; i < t.models.size(); ++i) {
        const double d = t.params.find("density", static_cast<std::int32_t>(i)).value_or(1.0);
        if (d < 1.0) density[t.models[i].source] = d, any = true;
      }
      if (any) tensors.push_back(ti);
    }
    if (density.empty()) {
      thresholds_ready_ = true;
      return;
    }
    // One finder per (model, lane); lanes split each chunk so threads never share a histogram.
    const std::size_t lanes = pool_ ? pool_->size() : 1;
    std::map<std::size_t, std::vector<kth_magnitude_finder>> finders;
    for (const auto &[src, d] : density) finders.emplace(src, std::vector(lanes, kth_magnitude_finder::from_density(d)));
    std::uint64_t bytes = 0;
    for (std::size_t ti : tensors) bytes += plan_.tensors[ti].read_bytes;
    constexpr std::size_t block = 4096; // task-vector entries a lane computes before adding them
    std::vector<std::vector<float>> scratch(lanes, std::vector<float>(block));
    for (int pass = 0; pass < 2; ++pass) {
      options_.progress.start(pass == 0 ? "ties thresholds 1/2" : "ties thresholds 2/2", bytes, progress_unit::bytes);
      for (std::size_t ti : tensors) {
        const planned_tensor &t = plan_.tensors[ti];
        const std::uint64_t n = t.numel();
        std::vector<const plan_input *> inputs;
        for (const auto &m : t.models) inputs.push_back(&m);
        inputs.push_back(&*t.base);
        if (buffers_.size() < inputs.size()) buffers_.resize(inputs.size());
        const error_context where{{}, std::nullopt, t.name};
        for (std::uint64_t b = 0; b < n; b += options_.chunk_elements) {
          check_cancel();
          const std::uint64_t e = std::min(n, b + options_.chunk_elements);
          read_inputs(t, inputs, b, e);
          release_inputs(inputs, b, e);
          const std::size_t len = static_cast<std::size_t>(e - b);
          const float *base = buffers_[t.models.size()].data();
          auto run_lanes = [&](std::size_t l0, std::size_t l1) {
            for (std::size_t lane = l0; lane < l1; ++lane) {
              const std::size_t begin = len * lane / lanes, end = len * (lane + 1) / lanes;
              float *d = scratch[lane].data();
              for (std::size_t k = 0; k < t.models.size(); ++k) {
                auto f = finders.find(t.models[k].source);
                if (f == finders.end()) continue;
                const float *x = buffers_[k].data();
                for (std::size_t j = begin; j < end; j += block) {
                  const std::size_t m = std::min(block, end - j);
                  for (std::size_t q = 0; q < m; ++q) d[q] = x[j + q] - base[j + q]; // as the strategy does
                  f->second[lane].add(std::span<const float>(d, m), where);
                }
              }
            }
          };
          if (pool_) pool_->parallel_for(lanes, 1, run_lanes);
          else run_lanes(0, lanes);
          options_.progress.advance(static_cast<std::uint64_t>(static_cast<double>(t.read_bytes) *
                                                               static_cast<double>(len) / static_cast<double>(n)));
        }
      }
      options_.progress.finish();
      for (auto &[src, f] : finders) {
        for (std::size_t lane = 1; lane < lanes; ++lane) f[0].merge(f[lane]);
        f[0].finish_pass();
        for (std::size_t lane = 1; lane < lanes; ++lane) f[lane] = f[0]; // same bin, empty fine histogram
      }
    }
    for (auto &[src, f] : finders) thresholds_[src] = f[0].threshold();
    for (std::size_t ti : tensors) {
      planned_tensor &t = plan_.tensors[ti];
      for (std::size_t i = 0; i < t.models.size(); ++i)
        if (auto it = thresholds_.find(t.models[i].source); it != thresholds_.end())
          t.params.set("trim_threshold", static_cast<std::int32_t>(i), static_cast<double>(it->second));
    }
    thresholds_ready_ = true;
  }

  //! Whole-model trim thresholds by source index (after prepare_trim_thresholds; empty under
  //! trim_scope: tensor).
  const std::map<std::size_t, float> &trim_thresholds() const noexcept { return thresholds_; }

  //! Computes planned tensor i into `out` (numel floats). Usable without run() (single thread).
  void compute(std::size_t i, std::span<float> out) {
    const planned_tensor &t = plan_.tensors.at(i);
    require(out.size() == t.numel(), errc::invalid_argument, [&] { return "output buffer of the wrong size"; },
            {{}, std::nullopt, t.name});
    merge_tensor(i, out, [](std::span<const float>) {});
  }
  std::vector<float> compute(std::size_t i) {
    std::vector<float> out(static_cast<std::size_t>(plan_.tensors.at(i).numel()));
    compute(i, out);
    return out;
  }

private:
  //! Merges planned tensor i chunk by chunk (elementwise methods; others in one piece) into `out`,
  //! or, when `out` is empty, into a chunk-sized buffer; hands each finished chunk to `emit`. The
  //! mapped input pages of a chunk are dropped as soon as they are converted to f32.
  template <class Emit> void merge_tensor(std::size_t i, std::span<float> out, Emit &&emit) {
    prepare_trim_thresholds();
    const planned_tensor &t = plan_.tensors.at(i);
    const std::uint64_t n = t.numel();
    const std::uint64_t chunk = strategy_.elementwise ? options_.chunk_elements : std::max<std::uint64_t>(n, 1);
    std::vector<const plan_input *> inputs;
    for (const auto &m : t.models) inputs.push_back(&m);
    if (t.base) inputs.push_back(&*t.base);
    if (buffers_.size() < inputs.size()) buffers_.resize(inputs.size());
    if (out.empty()) output_.resize(static_cast<std::size_t>(std::min(n, chunk)));
    std::uint64_t released = 0; // inputs' mapped pages dropped below this element
    std::vector<const source_tensor *> st(inputs.size());
    bool fused = strategy_.elementwise; // each thread reads the inputs of the part it merges
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      st[k] = &sources_[inputs[k]->source]->at(inputs[k]->name);
      fused = fused && !sources_[inputs[k]->source]->reads_whole(*st[k]);
    }
    for (std::uint64_t b = 0; b < n || (n == 0 && b == 0); b += chunk) {
      check_cancel();
      const std::uint64_t e = std::min(n, b + chunk);
      if (fused)
        for (auto &buf : std::span(buffers_).first(inputs.size())) buf.resize(static_cast<std::size_t>(e - b));
      else
        read_inputs(t, inputs, b, e);
      std::vector<std::span<const float>> models;
      for (std::size_t k = 0; k < t.models.size(); ++k) models.emplace_back(buffers_[k].data(), e - b);
      merge_inputs in;
      in.name = t.name;
      in.shape = t.shape;
      in.layer = t.layer;
      in.n_layers = static_cast<std::int32_t>(plan_.n_layers);
      in.models = models;
      if (t.base) in.base = std::span<const float>(buffers_[t.models.size()].data(), e - b);
      in.params = &t.params;
      in.seed = options_.seed;
      in.element_offset = static_cast<std::int64_t>(b);
      const auto len = static_cast<std::size_t>(e - b);
      const std::span<float> dst = out.empty() ? std::span<float>(output_.data(), len)
                                               : out.subspan(static_cast<std::size_t>(b), len);
      if (fused)
        merge_chunk(in, dst, [&](std::size_t lo, std::size_t hi) {
          check_cancel();
          for (std::size_t k = 0; k < inputs.size(); ++k)
            sources_[inputs[k]->source]->read(*st[k], b + lo, std::span<float>(buffers_[k].data() + lo, hi - lo));
        });
      else
        merge_chunk(in, dst, [](std::size_t, std::size_t) {});
      // Converted to f32 in buffers_: the mapped pages are not needed. Dropped a few MiB at a
      // time, not per chunk: each madvise costs a page-table walk and a TLB shoot-down on every
      // CPU running a pool thread, and per 1 MiB chunk that was a fifth of a linear merge's time.
      if (e == n || e - released >= release_elements) {
        release_inputs(inputs, released, e);
        released = e;
      }
      emit(std::span<const float>(dst));
      if (n > 0)
        options_.progress.advance(static_cast<std::uint64_t>(static_cast<double>(t.read_bytes) *
                                                             static_cast<double>(e - b) / static_cast<double>(n)));
      if (n == 0) break;
    }
  }

  //! read(lo, hi) (the inputs' elements [lo, hi) of the chunk into buffers_, or nothing when
  //! they are there already), then strategy_.merge(in, dst); an elementwise method's chunk split
  //! over the pool: each thread reads and merges a contiguous part (a multiple of 256 elements)
  //! with its element_offset, so the result is the same bits as in one call, and the part's
  //! inputs are still in the thread's cache when it merges them (reading them in one parallel
  //! pass and merging in another moved every input across cores: linear merges spent a fifth of
  //! their time in the weighted sums, bound by those transfers).
  template <class Read> void merge_chunk(const merge_inputs &in, std::span<float> dst, Read &&read) {
    const std::size_t len = dst.size(), threads = pool_ ? pool_->size() : 1;
    constexpr std::size_t min_part = std::size_t{1} << 15;
    if (!strategy_.elementwise || threads < 2 || len < 2 * min_part) {
      read(std::size_t{0}, len);
      strategy_.merge(in, dst);
      return;
    }
    const std::size_t part = std::max(min_part, (len / threads + 255) / 256 * 256);
    pool_->parallel_for(len, part, [&](std::size_t lo, std::size_t hi) {
      read(lo, hi);
      std::vector<std::span<const float>> models;
      models.reserve(in.models.size());
      for (const auto &m : in.models) models.push_back(m.subspan(lo, hi - lo));
      merge_inputs sub = in;
      sub.models = models;
      if (!in.base.empty()) sub.base = in.base.subspan(lo, hi - lo);
      sub.element_offset = in.element_offset + static_cast<std::int64_t>(lo);
      strategy_.merge(sub, dst.subspan(lo, hi - lo));
    });
  }

  void check_cancel() const {
    if (options_.cancel && options_.cancel->load(std::memory_order_relaxed))
      throw error(errc::io, "interrupted: the merge was cancelled and nothing was written", {options_.output.string()});
  }

  //! Mapped input pages are dropped (model_source::release) every this many elements of a
  //! tensor: the resident set grows by at most that much per input (8 MiB of BF16, 16 of F32).
  static constexpr std::uint64_t release_elements = std::uint64_t{1} << 22;

  //! Drops the mapped pages of elements [b, e) of a tensor's inputs from the process (see
  //! model_source::release).
  void release_inputs(const std::vector<const plan_input *> &inputs, std::uint64_t b, std::uint64_t e) const {
    for (const plan_input *in : inputs) {
      const model_source &src = *sources_[in->source];
      src.release(src.at(in->name), b, e - b);
    }
  }

  //! Reads elements [b, e) of every input into buffers_, in 1 Mi-element pieces over the pool.
  void read_inputs(const planned_tensor &t, const std::vector<const plan_input *> &inputs, std::uint64_t b,
                   std::uint64_t e) {
    constexpr std::uint64_t piece = std::uint64_t{1} << 20; // a multiple of every block size
    struct item {
      std::size_t k;
      std::uint64_t begin, end;
    };
    std::vector<item> items;
    std::vector<const source_tensor *> st(inputs.size());
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      buffers_[k].resize(static_cast<std::size_t>(e - b));
      st[k] = &sources_[inputs[k]->source]->at(inputs[k]->name);
      for (std::uint64_t p = b; p < e; p += piece) items.push_back({k, p, std::min(e, p + piece)});
    }
    auto run_item = [&](const item &it) {
      check_cancel();
      const model_source &src = *sources_[inputs[it.k]->source];
      src.read(*st[it.k], it.begin,
               std::span<float>(buffers_[it.k].data() + (it.begin - b), static_cast<std::size_t>(it.end - it.begin)));
    };
    // Sources that must produce a whole tensor at once (un-permuted GGUF Q/K, LoRA deltas) are
    // read in one piece so that the work is not repeated per piece.
    bool whole = false;
    for (std::size_t k = 0; k < inputs.size(); ++k)
      whole = whole || sources_[inputs[k]->source]->reads_whole(*st[k]);
    if (whole) {
      items.clear();
      for (std::size_t k = 0; k < inputs.size(); ++k) items.push_back({k, b, e});
    }
    if (pool_) pool_->parallel_for(items.size(), 1, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) run_item(items[i]);
    });
    else
      for (const auto &it : items) run_item(it);
    (void)t;
  }

  const model_source *base_source() const {
    return plan_.base ? sources_[*plan_.base].get() : nullptr;
  }
  const gguf_file *metadata_source() const {
    if (const auto *b = base_source(); b && b->gguf()) return b->gguf();
    for (const auto &s : sources_)
      if (s->gguf()) return s->gguf();
    return nullptr;
  }

  //! config.json (depth and dtype updated), generation_config.json and the tokenizer files of the
  //! base model (or the first model that is a Hugging Face directory).
  void collect_hf_files() {
    std::optional<std::filesystem::path> dir;
    if (const auto *b = base_source()) dir = b->hf_directory();
    for (const auto &s : sources_)
      if (!dir) dir = s->hf_directory();
    if (!dir) {
      plan_.warnings.push_back("no input is a Hugging Face directory: the output has weights but no config.json "
                               "or tokenizer files");
      return;
    }
    auto slurp = [](const std::filesystem::path &p) {
      std::ifstream in(p, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      return ss.str();
    };
    if (std::filesystem::is_regular_file(*dir / "config.json")) {
      const std::string file = (*dir / "config.json").string();
      ordered_json j = parse_json(slurp(*dir / "config.json"), file).value;
      if (j.is_object()) {
        if (j.contains("num_hidden_layers")) j["num_hidden_layers"] = plan_.n_layers;
        output_type main = output_type::f32;
        for (const auto &t : plan_.tensors)
          if (t.shape.size() >= 2) main = t.type;
        const char *torch = main == output_type::bf16 ? "bfloat16" : main == output_type::f16 ? "float16" : "float32";
        for (const char *k : {"torch_dtype", "dtype"})
          if (j.contains(k)) j[k] = torch;
        for (const auto &t : plan_.tensors)
          if (t.name.find("embed_tokens") != std::string::npos && j.contains("vocab_size")) j["vocab_size"] = t.shape[0];
      }
      files_["config.json"] = j.dump(2) + "\n";
    }
    if (std::filesystem::is_regular_file(*dir / "generation_config.json"))
      files_["generation_config.json"] = slurp(*dir / "generation_config.json");
    for (auto name : hf_tokenizer_files)
      if (std::filesystem::is_regular_file(*dir / name)) files_[std::string(name)] = slurp(*dir / name);
  }

  //! The output must not be an input, contain one, or lie inside one.
  void check_output_path() const {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path out = fs::weakly_canonical(fs::absolute(options_.output), ec);
    auto inside = [](const fs::path &p, const fs::path &dir) {
      auto [a, b] = std::mismatch(dir.begin(), dir.end(), p.begin(), p.end());
      return a == dir.end();
    };
    for (std::size_t i = 0; i < refs_.size(); ++i) {
      std::vector<fs::path> paths = sources_[i]->files();
      paths.push_back(refs_[i].path);
      if (refs_[i].lora) paths.push_back(*refs_[i].lora);
      for (const auto &p : paths) {
        const fs::path in = fs::weakly_canonical(fs::absolute(p), ec);
        require(!inside(in, out) && !inside(out, in), errc::invalid_argument, [&] {
          return "the output path overlaps the input " + p.string() + " (inputs are never written)";
        }, {options_.output.string()});
      }
    }
  }

  merge_config config_;
  strategy_handle strategy_;
  merge_options options_;
  std::vector<model_reference> refs_;
  std::vector<std::unique_ptr<model_source>> sources_;
  tensor_naming naming_ = tensor_naming::hf;
  merge_plan plan_;
  std::map<std::string, std::string> files_;
  std::vector<std::filesystem::path> removed_;
  thread_pool *pool_ = nullptr;
  std::vector<std::vector<float>> buffers_; //!< one per input, reused across tensors
  std::vector<float> output_;               //!< the tensor being written, reused
  std::map<std::size_t, float> thresholds_; //!< whole-model trim thresholds, by source index
  bool thresholds_ready_ = false;
};

DMS_NAMESPACE_END
