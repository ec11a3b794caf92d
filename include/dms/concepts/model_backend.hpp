// dms/concepts/model_backend.hpp: what dms needs from a transformer forward pass.
//
// Everything dms does to a running model (probing, steering, activation patching, delta
// activations, SAE feature reading) happens at named hook sites inside the forward pass. A
// backend is anything that runs a batch of tokens through the model and, at each hook site a
// hook set asks for, hands the hook a mutable view of the activations of the tokens of that step.
// The engine owns the graph, the KV cache and the memory; dms only sees views, one step at a time.
//
// Hook sites follow TransformerLens (`blocks.{l}.hook_resid_pre`, ...). Per layer l:
//   resid_pre  input of block l            attn_out  output of attention, before the residual add
//   resid_mid  after the attention add     mlp_out   output of the MLP, before the residual add
//   resid_post output of block l (= resid_pre of l + 1)
// and once per model: final_norm (after the last norm, before the output matrix) and logits.
//
// Hooks are a template parameter of forward(), so a backend compiled with `no_hooks` pays
// nothing: `wants()` is a constant false and the calls vanish (gemma.cpp's `if constexpr
// (kObserver)` pattern). There is no virtual call per token.
//
// @code
//   // A user backend over the engine's own tensors (see examples/custom_tensor for a full one).
//   class my_engine_backend {
//   public:
//     std::int32_t n_layers() const; std::int64_t n_embd() const; std::int64_t n_vocab() const;
//     std::int32_t n_ctx() const;  dms::memory_space space() const;
//     template <dms::hook_set Hooks>
//     dms::matrix_view<const float> forward(const dms::token_batch &batch, Hooks &hooks) {
//       for (layer l ...) {
//         if (hooks.wants({l, dms::site::resid_pre})) {
//           dms::activation_block blk{{l, dms::site::resid_pre}, residual_rows, batch.slots};
//           hooks(blk);
//         }
//         ...
//       }
//       return logits_rows;   // one row per slot with want_logits, in batch order
//     }
//     void clear(std::int32_t seq);
//   };
//   static_assert(dms::model_backend<my_engine_backend>);
// @endcode
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

using token_id = std::int32_t;

//! A hook site inside a transformer (see the table at the top of this header).
enum class site : std::uint8_t { resid_pre, attn_out, resid_mid, mlp_out, resid_post, final_norm, logits };

inline constexpr site all_sites[] = {site::resid_pre, site::attn_out,   site::resid_mid, site::mlp_out,
                                     site::resid_post, site::final_norm, site::logits};

//! TransformerLens-style name of a site ("resid_pre", ..., "final_norm", "logits").
constexpr std::string_view name_of(site s) noexcept {
  switch (s) {
  case site::resid_pre: return "resid_pre";
  case site::attn_out: return "attn_out";
  case site::resid_mid: return "resid_mid";
  case site::mlp_out: return "mlp_out";
  case site::resid_post: return "resid_post";
  case site::final_norm: return "final_norm";
  case site::logits: return "logits";
  }
  return "?";
}

//! True for the sites that exist once per model rather than once per layer.
constexpr bool is_model_level(site s) noexcept { return s == site::final_norm || s == site::logits; }

//! A (layer, site) pair. For model-level sites the layer is -1.
struct hook_point {
  std::int32_t layer = 0;
  site where = site::resid_post;
  friend constexpr bool operator==(const hook_point &, const hook_point &) = default;
};

//! "blocks.3.hook_resid_post", or "hook_final_norm" / "hook_logits".
inline std::string to_string(hook_point p) {
  if (is_model_level(p.where)) return "hook_" + std::string(name_of(p.where));
  return "blocks." + std::to_string(p.layer) + ".hook_" + std::string(name_of(p.where));
}

//! Where one token of a batch belongs: its sequence, its position in that sequence, and whether
//! the caller wants its logits. Positions of a sequence continue from what the backend has
//! cached for it (append-only KV cache), as in llama.cpp's llama_batch.
struct token_slot {
  std::int32_t seq = 0;
  std::int32_t pos = 0;
  bool want_logits = false;
};

//! The tokens of one forward step, flattened over sequences: tokens[i] goes to slots[i].
struct token_batch {
  std::span<const token_id> tokens;
  std::span<const token_slot> slots;
};

//! What a hook receives: the activations of the tokens of the current step at one hook point,
//! one row per token in batch order (all prompt tokens in prefill, one per sequence in decode).
//! `rows` is mutable: a hook may read, record or overwrite it. The view is valid only during the
//! call; a hook that wants to keep data copies it.
struct activation_block {
  hook_point at;
  matrix_view<float> rows;             //!< [n_tokens, width]; width = n_embd (n_vocab for logits)
  std::span<const token_slot> slots;   //!< slots[r] describes rows.row(r)
  memory_space space = memory_space::host; //!< where rows.data lives
  void *stream = nullptr;              //!< the backend's native stream (cudaStream_t), or null
};

//! A set of hooks: says which hook points it wants (`wants`, asked at every hook point of every
//! step, so keep it cheap: a bitmask or a constant) and is called with each of those blocks.
template <class H>
concept hook_set = requires(H &h, const H &ch, hook_point p, activation_block &b) {
  { ch.wants(p) } -> std::same_as<bool>;
  h(b);
};

//! The empty hook set: a backend instantiated with it compiles the hooks away.
struct no_hooks {
  static constexpr bool wants(hook_point) noexcept { return false; }
  constexpr void operator()(activation_block &) const noexcept {}
};

namespace archetypes {
//! A hook set that wants everything and does nothing; used to check that a backend's forward()
//! accepts arbitrary hook sets, not only no_hooks.
struct hook_set {
  bool wants(hook_point) const noexcept { return true; }
  void operator()(activation_block &) noexcept {}
};
} // namespace archetypes

//! A model backend.
//!
//! Members (`b` a backend, `cb` a const one):
//! - `cb.n_layers()`, `cb.n_embd()`, `cb.n_vocab()`: the model's depth, residual width and
//!   vocabulary size. `cb.n_ctx()`: the most positions one sequence may hold.
//! - `cb.space()`: where activation blocks and returned logits live (host or cuda).
//! - `b.forward(batch, hooks)`: runs one step for every token of `batch` (tokens of several
//!   sequences may be mixed; positions must continue each sequence's cache, else dms::error).
//!   At every hook point for which `hooks.wants(p)` is true it calls `hooks(block)` with the rows
//!   of this step, synchronously, and uses the rows as the hook left them. Returns the logits of
//!   the slots with `want_logits`, one row each, in batch order; the view is valid until the next
//!   call to forward() or clear().
//! - `b.clear(seq)`: forgets sequence `seq` (its KV cache), so it may start again at position 0.
//!
//! Threads: a backend is used by one thread at a time (forward and clear are not reentrant);
//! hooks run on the thread that called forward(), or for device backends on that thread with
//! `block.stream` to enqueue work on. A backend may use its own worker threads inside forward().
//! Allocation: a backend may allocate when constructed and when a step needs larger buffers than
//! any step before; in steady-state decoding it allocates nothing. Hooks must not allocate on the
//! per-token path either (dms's own policies don't).
template <class B>
concept model_backend = requires(B &b, const B &cb, const token_batch &batch, no_hooks &none,
                                 archetypes::hook_set &any, std::int32_t seq) {
  { cb.n_layers() } -> std::convertible_to<std::int32_t>;
  { cb.n_embd() } -> std::convertible_to<std::int64_t>;
  { cb.n_vocab() } -> std::convertible_to<std::int64_t>;
  { cb.n_ctx() } -> std::convertible_to<std::int32_t>;
  { cb.space() } -> std::same_as<memory_space>;
  { b.forward(batch, none) } -> std::same_as<matrix_view<const float>>;
  { b.forward(batch, any) } -> std::same_as<matrix_view<const float>>;
  b.clear(seq);
};

namespace detail {
template <class B> concept has_sizes = requires(const B &cb) {
  { cb.n_layers() } -> std::convertible_to<std::int32_t>;
  { cb.n_embd() } -> std::convertible_to<std::int64_t>;
  { cb.n_vocab() } -> std::convertible_to<std::int64_t>;
  { cb.n_ctx() } -> std::convertible_to<std::int32_t>;
};
template <class B> concept has_space = requires(const B &cb) {
  { cb.space() } -> std::same_as<memory_space>;
};
template <class B> concept has_forward = requires(B &b, const token_batch &batch, no_hooks &none,
                                                  archetypes::hook_set &any) {
  { b.forward(batch, none) } -> std::same_as<matrix_view<const float>>;
  { b.forward(batch, any) } -> std::same_as<matrix_view<const float>>;
};
template <class B> concept has_clear = requires(B &b, std::int32_t seq) { b.clear(seq); };
} // namespace detail

//! Names the first missing member of a would-be backend: `static_assert(diagnose_model_backend<B>())`.
template <class B> consteval bool diagnose_model_backend() {
  static_assert(detail::has_sizes<B>, "dms::model_backend: needs const members n_layers(), n_embd(), "
                                      "n_vocab() and n_ctx() returning integers");
  static_assert(detail::has_space<B>, "dms::model_backend: needs `dms::memory_space space() const`");
  static_assert(detail::has_forward<B>,
                "dms::model_backend: needs `template <dms::hook_set H> dms::matrix_view<const float> "
                "forward(const dms::token_batch &, H &hooks)` accepting any hook set");
  static_assert(detail::has_clear<B>, "dms::model_backend: needs `void clear(std::int32_t seq)`");
  return model_backend<B>;
}

namespace archetypes {
//! The least a model backend provides; every member exists only to satisfy the concept.
struct model_backend {
  std::int32_t n_layers() const noexcept { return 1; }
  std::int64_t n_embd() const noexcept { return 1; }
  std::int64_t n_vocab() const noexcept { return 1; }
  std::int32_t n_ctx() const noexcept { return 1; }
  memory_space space() const noexcept { return memory_space::host; }
  template <dms::hook_set H> matrix_view<const float> forward(const token_batch &, H &) { return {}; }
  void clear(std::int32_t) {}
};
} // namespace archetypes

DMS_NAMESPACE_END
