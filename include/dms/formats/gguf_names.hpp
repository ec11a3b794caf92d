// dms/formats/gguf_names.hpp: GGUF <-> Hugging Face tensor names for Llama-family models, and
// the Q/K row permutation llama.cpp applies when it converts them.
//
// The same weights travel under two naming schemes: Hugging Face checkpoints (safetensors) say
// `model.layers.3.self_attn.q_proj.weight`, GGUF files say `blk.3.attn_q.weight`. Merging a GGUF
// model with a safetensors one, applying a PEFT adapter to a GGUF model, or comparing
// activations between dms and transformers all need the mapping, and one more fact:
// convert_hf_to_gguf.py reorders the rows of q_proj and k_proj for Llama models (HF stores the
// two halves of each rotary head one after the other, ggml's rope wants them interleaved), so a
// GGUF Q/K matrix equals the HF one only after `unpermute_qk`.
//
//   convert_hf_to_gguf.py (LlamaModel.permute):
//     w.reshape(n_head, 2, rows / n_head / 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
//   with n_head = num_attention_heads for q_proj and num_key_value_heads for k_proj.
//
// Row r' = h * head_dim + 2 i + t of the GGUF matrix is row r = h * head_dim + t * head_dim / 2 + i
// of the HF matrix (h < n_head, i < head_dim / 2, t in {0, 1}). The permutation moves whole rows,
// so it applies to any element type, and to quantized rows too (GGUF rows hold whole blocks).
//
// @code
//   auto hf = dms::gguf_to_hf_name("blk.3.attn_q.weight");   // "model.layers.3.self_attn.q_proj.weight"
//   auto heads = dms::llama_qk_permute_heads("blk.3.attn_k.weight", 9, 3);   // 3 (k uses n_head_kv)
//   dms::unpermute_qk<float>(gguf_rows, hf_rows, rows, cols, *heads);
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! One tensor's name in both schemes, without the layer prefix and the .weight/.bias suffix.
struct tensor_name_pair {
  std::string_view gguf;
  std::string_view hf;
};

//! Tensors outside the blocks (the whole name, before the suffix).
inline constexpr tensor_name_pair llama_model_tensor_names[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};
//! Tensors of block N: GGUF `blk.N.<gguf>`, HF `model.layers.N.<hf>`.
inline constexpr tensor_name_pair llama_block_tensor_names[] = {
    {"attn_norm", "input_layernorm"},
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

namespace detail {
inline constexpr std::string_view gguf_block_prefix = "blk.";
inline constexpr std::string_view hf_block_prefix = "model.layers.";

//! A decimal layer number without sign or leading zeros (so the mapping is one-to-one),
//! below 10^9 (so it fits in an int32 with room).
constexpr std::optional<std::int32_t> parse_layer(std::string_view s) noexcept {
  if (s.empty() || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::int32_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

struct parsed_name {
  std::optional<std::int32_t> layer; //!< set for block tensors
  std::string_view module;           //!< between the layer prefix and the suffix
  std::string_view suffix;           //!< ".weight" or ".bias"
};

//! Splits `name` by `block_prefix` ("blk." or "model.layers.") and the suffix.
constexpr std::optional<parsed_name> split_name(std::string_view name, std::string_view block_prefix) noexcept {
  parsed_name p;
  for (std::string_view suffix : {std::string_view(".weight"), std::string_view(".bias")}) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      p.suffix = suffix;
      name.remove_suffix(suffix.size());
      break;
    }
  }
  if (p.suffix.empty()) return std::nullopt;
  if (name.starts_with(block_prefix)) {
    name.remove_prefix(block_prefix.size());
    const auto dot = name.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    p.layer = parse_layer(name.substr(0, dot));
    if (!p.layer) return std::nullopt;
    name.remove_prefix(dot + 1);
  }
  p.module = name;
  return p;
}

inline std::optional<std::string> map_name(std::string_view name, bool to_hf) {
  const std::string_view from_prefix = to_hf ? gguf_block_prefix : hf_block_prefix;
  const std::string_view to_prefix = to_hf ? hf_block_prefix : gguf_block_prefix;
  const auto p = split_name(name, from_prefix);
  if (!p) return std::nullopt;
  auto from = [&](const tensor_name_pair &x) { return to_hf ? x.gguf : x.hf; };
  auto to = [&](const tensor_name_pair &x) { return to_hf ? x.hf : x.gguf; };
  if (p->layer) {
    for (const auto &x : llama_block_tensor_names)
      if (from(x) == p->module)
        return std::string(to_prefix) + std::to_string(*p->layer) + "." + std::string(to(x)) +
               std::string(p->suffix);
  } else {
    for (const auto &x : llama_model_tensor_names)
      if (from(x) == p->module) return std::string(to(x)) + std::string(p->suffix);
  }
  return std::nullopt;
}
} // namespace detail

//! The Hugging Face name of a GGUF tensor name ("blk.0.attn_q.weight" ->
//! "model.layers.0.self_attn.q_proj.weight"), or nullopt for a name outside the Llama table.
inline std::optional<std::string> gguf_to_hf_name(std::string_view gguf_name) {
  return detail::map_name(gguf_name, true);
}
//! The GGUF name of a Hugging Face tensor name, or nullopt for a name outside the Llama table.
inline std::optional<std::string> hf_to_gguf_name(std::string_view hf_name) {
  return detail::map_name(hf_name, false);
}

//! The layer of a block tensor in either scheme ("blk.12.ffn_up.weight" and
//! "model.layers.12.mlp.up_proj.weight" give 12); nullopt for other names.
constexpr std::optional<std::int32_t> layer_index(std::string_view name) noexcept {
  for (std::string_view prefix : {detail::gguf_block_prefix, detail::hf_block_prefix}) {
    if (!name.starts_with(prefix)) continue;
    name.remove_prefix(prefix.size());
    const auto dot = name.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    return detail::parse_layer(name.substr(0, dot));
  }
  return std::nullopt;
}

//! The head count convert_hf_to_gguf.py permutes a tensor with: `n_head` for the query
//! projection, `n_head_kv` for the key projection (weights and biases, either naming scheme);
//! nullopt for every other tensor, which is not permuted.
inline std::optional<std::int64_t> llama_qk_permute_heads(std::string_view name, std::int64_t n_head,
                                                          std::int64_t n_head_kv) {
  for (std::string_view prefix : {detail::gguf_block_prefix, detail::hf_block_prefix}) {
    const auto p = detail::split_name(name, prefix);
    if (!p || !p->layer) continue;
    if (p->module == "attn_q" || p->module == "self_attn.q_proj") return n_head;
    if (p->module == "attn_k" || p->module == "self_attn.k_proj") return n_head_kv;
  }
  return std::nullopt;
}

namespace detail {
inline void check_qk_args(std::size_t in_bytes, std::size_t out_bytes, const void *in, const void *out,
                          std::int64_t rows, std::size_t row_bytes, std::int64_t n_head) {
  require(n_head > 0 && rows >= 0 && rows % (2 * n_head) == 0, errc::shape_mismatch, [&] {
    return std::to_string(rows) + " rows cannot be split into " + std::to_string(n_head) +
           " heads of two rotary halves (expected rows to be a multiple of 2 * n_head = " +
           std::to_string(2 * n_head) + ")";
  });
  const std::size_t need = static_cast<std::size_t>(rows) * row_bytes;
  require(in_bytes == need && out_bytes == need, errc::shape_mismatch, [&] {
    return "buffers of " + std::to_string(in_bytes) + " and " + std::to_string(out_bytes) +
           " bytes (expected " + std::to_string(need) + " for " + std::to_string(rows) + " rows)";
  });
  const auto *a = static_cast<const std::byte *>(in);
  const auto *b = static_cast<const std::byte *>(out);
  require(need == 0 || a + need <= b || b + need <= a, errc::invalid_argument,
          [] { return std::string("input and output must not overlap (the permutation is out of place)"); });
}

// to_gguf: out[h*hd + 2i + t] = in[h*hd + t*hd/2 + i]; otherwise the inverse.
inline void permute_rows(std::span<const std::byte> in, std::span<std::byte> out, std::int64_t rows,
                         std::size_t row_bytes, std::int64_t n_head, bool to_gguf) {
  check_qk_args(in.size(), out.size(), in.data(), out.data(), rows, row_bytes, n_head);
  const std::int64_t head_dim = rows / n_head, half = head_dim / 2;
  for (std::int64_t h = 0; h < n_head; ++h)
    for (std::int64_t t = 0; t < 2; ++t)
      for (std::int64_t i = 0; i < half; ++i) {
        const std::int64_t hf_row = h * head_dim + t * half + i;
        const std::int64_t gguf_row = h * head_dim + 2 * i + t;
        const std::int64_t src = to_gguf ? hf_row : gguf_row, dst = to_gguf ? gguf_row : hf_row;
        if (row_bytes)
          std::memcpy(out.data() + static_cast<std::size_t>(dst) * row_bytes,
                      in.data() + static_cast<std::size_t>(src) * row_bytes, row_bytes);
      }
}
} // namespace detail

//! HF -> GGUF: the permutation convert_hf_to_gguf.py applies to a row-major (rows x cols) Q or
//! K matrix (or a bias, cols = 1). `n_head` as given by llama_qk_permute_heads.
template <class T>
  requires std::is_trivially_copyable_v<T>
void permute_qk(std::span<const T> in, std::span<T> out, std::int64_t rows, std::int64_t cols,
                std::int64_t n_head) {
  require(cols >= 0, errc::invalid_argument, [] { return std::string("negative column count"); });
  detail::permute_rows(std::as_bytes(in), std::as_writable_bytes(out), rows,
                       static_cast<std::size_t>(cols) * sizeof(T), n_head, true);
}
//! GGUF -> HF: the inverse of permute_qk.
template <class T>
  requires std::is_trivially_copyable_v<T>
void unpermute_qk(std::span<const T> in, std::span<T> out, std::int64_t rows, std::int64_t cols,
                  std::int64_t n_head) {
  require(cols >= 0, errc::invalid_argument, [] { return std::string("negative column count"); });
  detail::permute_rows(std::as_bytes(in), std::as_writable_bytes(out), rows,
                       static_cast<std::size_t>(cols) * sizeof(T), n_head, false);
}
//! Either direction on rows of `row_bytes` bytes: quantized GGUF rows (whole blocks) included.
inline void permute_qk_rows(std::span<const std::byte> in, std::span<std::byte> out, std::int64_t rows,
                            std::size_t row_bytes, std::int64_t n_head) {
  detail::permute_rows(in, out, rows, row_bytes, n_head, true);
}
inline void unpermute_qk_rows(std::span<const std::byte> in, std::span<std::byte> out, std::int64_t rows,
                              std::size_t row_bytes, std::int64_t n_head) {
  detail::permute_rows(in, out, rows, row_bytes, n_head, false);
}

DMS_NAMESPACE_END
