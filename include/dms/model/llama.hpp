// dms/model/llama.hpp: the Llama-family forward pass on the CPU, with hook sites and a KV cache.
//
// llama_model is dms's reference `model_backend`: it loads a GGUF file (llama, qwen2) or a
// Hugging Face directory (config.json + safetensors, single or sharded), uses the weights in place
// from the mapping, and runs batches of tokens of several sequences through the llama.cpp graph:
//
//   x = embd[token]
//   per layer:  h = rms_norm(x) * attn_norm;  q, k, v = h Wq (+bq), h Wk (+bk), h Wv (+bv)
//               rope(q, k);  o = softmax(q K^T / sqrt(head_dim), causal) V   (GQA)
//               x += o Wo;   h = rms_norm(x) * ffn_norm;  x += (silu(h Wgate) * h Wup) Wdown
//   h = rms_norm(x) * output_norm;  logits = h Wout
//
// with the hook sites of dms/concepts/model_backend.hpp in between (resid_pre, attn_out,
// resid_mid, mlp_out, resid_post per layer; final_norm and logits once). A hook sees all rows of
// the step, in batch order, and what it leaves in them is what the model uses from then on.
// Hooks are a template parameter: with `no_hooks` every site compiles to nothing.
//
// Batches: each token names its sequence and position; a sequence's tokens must sit at the
// positions right after what its cache holds (else dms::error, and nothing changes). The
// mat-muls take all rows of the batch at once (one pass over each weight per step); attention is
// per token and head over its own sequence. Logits are computed only for the rows that want them,
// unless a hook asks for the logits site (then for every row, as the hook needs them).
//
// Memory and threads: the model owns a thread pool (model_options::n_threads) used by the mat-muls
// and by attention, a KV cache (dms/model/kv_cache.hpp) and step buffers that grow to the largest
// batch seen and are then reused, so steady-state decoding allocates nothing. Results do not
// depend on the thread count when the mat-mul's do not (attention's never do).
//
// @code
//   auto model = dms::llama_model::load("SmolLM2-135M-Instruct.Q4_1.gguf", {.n_ctx = 2048});
//   std::vector<dms::token_id> ids = {1, 504, 3575, 282, 4649, 314};
//   std::vector<dms::token_slot> slots;
//   for (int i = 0; i < 6; ++i) slots.push_back({0, i, i == 5});
//   dms::matrix_view<const float> logits = model.forward({ids, slots});   // 1 x 49152
// @endcode
//
// Thread safety: one thread at a time per model (forward and clear are not reentrant).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "dms/backend/cpu/matmul.hpp"
#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/hf_checkpoint.hpp"
#include "dms/model/attention.hpp"
#include "dms/model/hparams.hpp"
#include "dms/model/kv_cache.hpp"
#include "dms/model/ops.hpp"
#include "dms/model/rope.hpp"
#include "dms/model/weights.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! Context used when model_options::n_ctx is 0 and the model's own is larger or unknown: enough
//! for the prompts dms steers, and a KV cache that stays in the hundreds of MB for 7B models.
inline constexpr std::int32_t default_n_ctx = 4096;

//! False only for dms::no_hooks: the forward pass then contains no hook code at all.
template <class H> inline constexpr bool hooks_active = !std::is_same_v<std::remove_cvref_t<H>, no_hooks>;

//! Grows `v` to at least n elements; never shrinks (so a smaller step reuses the buffer).
template <class T> T *grow(std::vector<T> &v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}
} // namespace detail

class llama_model {
public:
  //! Loads a GGUF file, or a directory with config.json and model.safetensors (or shards with
  //! model.safetensors.index.json). Errors name the file and, for a tensor, the tensor.
  static llama_model load(const std::filesystem::path &path, const model_options &opts = {}) {
    require(opts.n_ctx >= 0 && opts.n_seq_max >= 1 && opts.n_threads >= 0, errc::invalid_argument, [&] {
      return "model_options: n_ctx " + std::to_string(opts.n_ctx) + ", n_seq_max " + std::to_string(opts.n_seq_max) +
             ", n_threads " + std::to_string(opts.n_threads) + " (expected n_ctx >= 0, n_seq_max >= 1, n_threads >= 0)";
    }, {path.string()});
    llama_model m;
    m.path_ = path;
    if (std::filesystem::is_directory(path)) {
      m.hf_ = std::make_unique<hf_checkpoint>(path);
      m.hp_ = llama_hparams::from_hf(read_hf_config(path), (path / "config.json").string());
      m.w_ = load_llama_weights(*m.hf_, m.hp_);
    } else {
      m.gguf_ = std::make_unique<gguf_file>(path.string());
      m.hp_ = llama_hparams::from_gguf(*m.gguf_);
      m.w_ = load_llama_weights(*m.gguf_, m.hp_);
    }
    m.init(opts);
    return m;
  }

  llama_model(llama_model &&) noexcept = default;
  llama_model &operator=(llama_model &&) noexcept = default;

  const llama_hparams &hparams() const noexcept { return hp_; }
  std::int32_t n_layers() const noexcept { return hp_.n_layers; }
  std::int64_t n_embd() const noexcept { return hp_.n_embd; }
  std::int64_t n_vocab() const noexcept { return hp_.n_vocab; }
  std::int32_t n_ctx() const noexcept { return cache_.n_ctx(); }
  std::int32_t n_seq_max() const noexcept { return cache_.n_seq(); }
  std::size_t n_threads() const noexcept { return pool_->size(); }
  memory_space space() const noexcept { return memory_space::host; }
  //! The mapped GGUF file (metadata, tokenizer), or nullptr for a Hugging Face checkpoint.
  const gguf_file *gguf() const noexcept { return gguf_.get(); }
  //! The Hugging Face checkpoint, or nullptr for a GGUF file.
  const hf_checkpoint *hf() const noexcept { return hf_.get(); }
  std::filesystem::path path() const { return path_; }
  const llama_weights &weights() const noexcept { return w_; }

  //! Positions cached for `seq`: the position its next token must have.
  std::int32_t seq_length(std::int32_t seq) const {
    check_seq(seq, "seq_length");
    return cache_.length(seq);
  }
  //! Forgets `seq`'s cache; its next token is at position 0.
  void clear(std::int32_t seq) {
    check_seq(seq, "clear");
    cache_.clear(seq);
  }

  //! Runs one step; see the header comment. Returns the logits of the want_logits slots, in batch
  //! order ([count, n_vocab]), valid until the next forward() or clear().
  template <hook_set H> matrix_view<const float> forward(const token_batch &batch, H &hooks);
  matrix_view<const float> forward(const token_batch &batch) {
    no_hooks none;
    return forward(batch, none);
  }

private:
  llama_model() = default;

  void init(const model_options &opts) {
    const std::int32_t n_ctx = opts.n_ctx > 0 ? opts.n_ctx
                               : hp_.n_ctx_train > 0 ? std::min(hp_.n_ctx_train, detail::default_n_ctx)
                                                     : detail::default_n_ctx;
    cache_ = kv_cache(hp_.n_layers, hp_.n_head_kv, hp_.head_dim, n_ctx, opts.n_seq_max);
    rope_ = rope_table(hp_);
    pool_ = std::make_unique<thread_pool>(static_cast<std::size_t>(opts.n_threads));
    ws_.set_precision(opts.precision);
    seq_next_.assign(static_cast<std::size_t>(opts.n_seq_max), 0);
  }

  //! Like dms::require, but the error context (the model's path) is built only on failure: the
  //! checks run on every step, which must not allocate.
  template <class MessageFn> void expect(bool condition, MessageFn &&message) const {
    if (DMS_UNLIKELY(!condition)) throw error(errc::invalid_argument, message(), {path_.string()});
  }

  void check_seq(std::int32_t seq, const char *what) const {
    expect(seq >= 0 && seq < cache_.n_seq(), [&] {
      return std::string(what) + ": sequence " + std::to_string(seq) + " out of range (the model holds " +
             std::to_string(cache_.n_seq()) + " sequences; model_options::n_seq_max)";
    });
  }

  //! Validates a batch before anything changes; fills seq_next_ with each sequence's length
  //! after the step. Returns the number of rows.
  std::int64_t check_batch(const token_batch &batch) {
    expect(batch.tokens.size() == batch.slots.size() && !batch.tokens.empty(), [&] {
      return "forward: " + std::to_string(batch.tokens.size()) + " tokens and " + std::to_string(batch.slots.size()) +
             " slots (expected the same non-zero number)";
    });
    for (std::int32_t s = 0; s < cache_.n_seq(); ++s) seq_next_[static_cast<std::size_t>(s)] = cache_.length(s);
    for (std::size_t i = 0; i < batch.tokens.size(); ++i) {
      const token_id tok = batch.tokens[i];
      const token_slot &slot = batch.slots[i];
      expect(tok >= 0 && tok < hp_.n_vocab, [&] {
        return "forward: token " + std::to_string(i) + " of the batch has id " + std::to_string(tok) +
               " (expected 0 <= id < n_vocab = " + std::to_string(hp_.n_vocab) + ")";
      });
      expect(slot.seq >= 0 && slot.seq < cache_.n_seq(), [&] {
        return "forward: token " + std::to_string(i) + " of the batch is in sequence " + std::to_string(slot.seq) +
               " (expected 0 <= seq < n_seq_max = " + std::to_string(cache_.n_seq()) + ")";
      });
      std::int32_t &next = seq_next_[static_cast<std::size_t>(slot.seq)];
      expect(slot.pos == next, [&] {
        return "forward: token " + std::to_string(i) + " of the batch is at position " + std::to_string(slot.pos) +
               " of sequence " + std::to_string(slot.seq) + ", expected " + std::to_string(next) +
               " (the sequence holds " + std::to_string(cache_.length(slot.seq)) +
               " cached positions; a step's positions must continue the cache in order)";
      });
      ++next;
    }
    for (std::int32_t s = 0; s < cache_.n_seq(); ++s) {
      const std::int32_t next = seq_next_[static_cast<std::size_t>(s)];
      expect(next <= cache_.n_ctx(), [&] {
        return "forward: sequence " + std::to_string(s) + " would hold " + std::to_string(next) + " positions (" +
               std::to_string(cache_.length(s)) + " cached + " + std::to_string(next - cache_.length(s)) +
               " in this batch), more than n_ctx = " + std::to_string(cache_.n_ctx());
      });
    }
    return static_cast<std::int64_t>(batch.tokens.size());
  }

  //! Calls the hook at `p` with `n` rows of `width` at `rows`, if the hook set wants it.
  template <class H>
  static void hook(H &hooks, hook_point p, float *rows, std::int64_t n, std::int64_t width,
                   std::span<const token_slot> slots) {
    if constexpr (detail::hooks_active<H>) {
      if (hooks.wants(p)) {
        activation_block block{p, matrix_view<float>{rows, n, width, width}, slots};
        hooks(block);
      }
    } else {
      (void)hooks, (void)p, (void)rows, (void)n, (void)width, (void)slots;
    }
  }

  void matmul(const cpu::weight_matrix &w, const float *x, std::int64_t ldx, std::int64_t n, float *y,
              std::int64_t ldy) {
    cpu::matmul(w, x, ldx, n, y, ldy, ws_, pool_.get());
  }

  //! Step buffers, grown to the largest step (rows) and reused.
  struct step_buffers {
    std::vector<float> x, h, q, k, v, o, a, gate, up, rope_cos, rope_sin, logits;
    std::vector<std::int64_t> out_rows; //!< batch rows with want_logits
  };

  std::filesystem::path path_;
  std::unique_ptr<gguf_file> gguf_;
  std::unique_ptr<hf_checkpoint> hf_;
  llama_hparams hp_;
  llama_weights w_;
  rope_table rope_;
  kv_cache cache_;
  std::unique_ptr<thread_pool> pool_;
  cpu::matmul_workspace ws_;
  step_buffers buf_;
  std::vector<std::int32_t> seq_next_; //!< per sequence: its length after the current step
};

template <hook_set H>
matrix_view<const float> llama_model::forward(const token_batch &batch, H &hooks) {
  const std::int64_t n = check_batch(batch);
  const auto slots = batch.slots;
  const std::int64_t E = hp_.n_embd, Q = hp_.q_width(), KV = hp_.kv_width(), F = hp_.n_ff, V = hp_.n_vocab;
  const std::int64_t hd = hp_.head_dim;
  const std::size_t half = rope_.pairs();
  const auto rows = static_cast<std::size_t>(n);
  float *x = detail::grow(buf_.x, rows * E), *h = detail::grow(buf_.h, rows * E);
  float *q = detail::grow(buf_.q, rows * Q), *k = detail::grow(buf_.k, rows * KV), *v = detail::grow(buf_.v, rows * KV);
  float *o = detail::grow(buf_.o, rows * Q), *a = detail::grow(buf_.a, rows * E);
  float *gate = detail::grow(buf_.gate, rows * F), *up = detail::grow(buf_.up, rows * F);
  float *rc = detail::grow(buf_.rope_cos, rows * half), *rs = detail::grow(buf_.rope_sin, rows * half);

  cpu::get_rows(w_.token_embd, batch.tokens, x);
  for (std::size_t t = 0; t < rows; ++t) rope_.angles(slots[t].pos, rc + t * half, rs + t * half);

  for (std::int32_t l = 0; l < hp_.n_layers; ++l) {
    const llama_layer_weights &L = w_.layers[static_cast<std::size_t>(l)];
    hook(hooks, {l, site::resid_pre}, x, n, E, slots);

    // Attention.
    for (std::int64_t t = 0; t < n; ++t) rms_norm(x + t * E, L.attn_norm, E, hp_.rms_eps, h + t * E);
    const cpu::matmul_target qkv[] = {{&L.wq, q, Q}, {&L.wk, k, KV}, {&L.wv, v, KV}};
    cpu::matmul_group(qkv, h, E, n, ws_, pool_.get());
    if (L.bq) {
      add_bias_rows(q, Q, n, L.bq, Q);
      add_bias_rows(k, KV, n, L.bk, KV);
      add_bias_rows(v, KV, n, L.bv, KV);
    }
    for (std::size_t t = 0; t < rows; ++t) {
      float *kt = k + t * KV, *vt = v + t * KV;
      apply_rope(q + t * Q, hp_.n_head, half, rc + t * half, rs + t * half, rope_.style());
      apply_rope(kt, hp_.n_head_kv, half, rc + t * half, rs + t * half, rope_.style());
      const token_slot &s = slots[t];
      for (std::int32_t g = 0; g < hp_.n_head_kv; ++g) {
        std::memcpy(cache_.keys(s.seq, l, g) + s.pos * hd, kt + g * hd, static_cast<std::size_t>(hd) * sizeof(float));
        std::memcpy(cache_.values(s.seq, l, g) + s.pos * hd, vt + g * hd, static_cast<std::size_t>(hd) * sizeof(float));
      }
    }
    causal_attention(q, Q, o, Q, slots, cache_, l, hp_, pool_.get());
    matmul(L.wo, o, Q, n, a, E);
    hook(hooks, {l, site::attn_out}, a, n, E, slots);
    add_in_place(x, a, n * E);
    hook(hooks, {l, site::resid_mid}, x, n, E, slots);

    // MLP.
    for (std::int64_t t = 0; t < n; ++t) rms_norm(x + t * E, L.ffn_norm, E, hp_.rms_eps, h + t * E);
    const cpu::matmul_target gate_up[] = {{&L.w_gate, gate, F}, {&L.w_up, up, F}};
    cpu::matmul_group(gate_up, h, E, n, ws_, pool_.get());
    swiglu(gate, up, n * F);
    matmul(L.w_down, gate, F, n, a, E);
    hook(hooks, {l, site::mlp_out}, a, n, E, slots);
    add_in_place(x, a, n * E);
    hook(hooks, {l, site::resid_post}, x, n, E, slots);
  }

  // Output: rows wanted by the caller, all rows when a hook asks for the final sites.
  std::int64_t *out_rows = detail::grow(buf_.out_rows, rows);
  std::int64_t n_out = 0;
  for (std::size_t t = 0; t < rows; ++t)
    if (slots[t].want_logits) out_rows[n_out++] = static_cast<std::int64_t>(t);
  bool want_final = false, want_logits = false;
  if constexpr (detail::hooks_active<H>) {
    want_final = hooks.wants({-1, site::final_norm});
    want_logits = hooks.wants({-1, site::logits});
  }
  float *logits = nullptr;
  if (want_final || want_logits) {
    for (std::int64_t t = 0; t < n; ++t) rms_norm(x + t * E, w_.output_norm, E, hp_.rms_eps, h + t * E);
    hook(hooks, {-1, site::final_norm}, h, n, E, slots);
    if (want_logits) {
      logits = detail::grow(buf_.logits, rows * static_cast<std::size_t>(V));
      matmul(w_.output, h, E, n, logits, V);
      hook(hooks, {-1, site::logits}, logits, n, V, slots);
      // Keep the wanted rows, in order, at the front (row i moves to i' <= i: no overlap issue).
      for (std::int64_t i = 0; i < n_out; ++i)
        if (out_rows[i] != i)
          std::memcpy(logits + i * V, logits + out_rows[i] * V, static_cast<std::size_t>(V) * sizeof(float));
    } else {
      for (std::int64_t i = 0; i < n_out; ++i)
        if (out_rows[i] != i)
          std::memcpy(h + i * E, h + out_rows[i] * E, static_cast<std::size_t>(E) * sizeof(float));
    }
  } else {
    for (std::int64_t i = 0; i < n_out; ++i)
      rms_norm(x + out_rows[i] * E, w_.output_norm, E, hp_.rms_eps, h + i * E);
  }
  if (logits == nullptr) {
    logits = detail::grow(buf_.logits, static_cast<std::size_t>(n_out) * static_cast<std::size_t>(V));
    if (n_out > 0) matmul(w_.output, h, E, n_out, logits, V);
  }

  for (std::int32_t s = 0; s < cache_.n_seq(); ++s) cache_.set_length(s, seq_next_[static_cast<std::size_t>(s)]);
  return {logits, n_out, V, V};
}

static_assert(model_backend<llama_model>, "llama_model must model dms::model_backend");

DMS_NAMESPACE_END
