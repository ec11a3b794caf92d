// dms/model/weights.hpp: the tensors of a Llama-family model, found, checked and used in place.
//
// The big matrices are never copied: a `cpu::weight_matrix` points into the GGUF or safetensors
// mapping (quantized blocks, f16, bf16 or f32, as stored), so loading a model costs its page
// cache and nothing more. Only the small vectors (norm weights, biases, llama3 rope factors) are
// converted to owned f32 arrays, because the element-wise kernels read them as floats.
//
// Every tensor is checked when the model loads, not when a forward pass first touches it: present,
// of the shape the hyper-parameters imply, of a type the mat-mul can read. A failure is a
// dms::error naming the file, the tensor and what was expected.
//
// GGUF names (llama.cpp): token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
// ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output (absent: tied to token_embd), and for
// qwen2 blk.N.attn_{q,k,v}.bias. HF names follow dms/formats/gguf_names.hpp. HF Q/K rows stay in
// HF order; hparams.rope says how RoPE pairs them (see dms/model/rope.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dms/backend/cpu/matmul.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/formats/hf_checkpoint.hpp"
#include "dms/formats/quant.hpp"
#include "dms/model/hparams.hpp"

DMS_NAMESPACE_BEGIN

//! The weights of one transformer block. Vectors are n_embd (norms) or the projection's width
//! (biases); a bias pointer is null when the model has none.
struct llama_layer_weights {
  cpu::weight_matrix wq{}, wk{}, wv{}, wo{};       //!< [q_width, n_embd], [kv_width, n_embd] x2, [n_embd, q_width]
  cpu::weight_matrix w_gate{}, w_up{}, w_down{};   //!< [n_ff, n_embd] x2, [n_embd, n_ff]
  const float *attn_norm = nullptr, *ffn_norm = nullptr;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
};

//! All weights of a model. Movable; the matrices point into a mapping the owner keeps alive.
struct llama_weights {
  cpu::weight_matrix token_embd{}; //!< [n_vocab, n_embd]
  cpu::weight_matrix output{};     //!< [n_vocab, n_embd]; equals token_embd when tied
  const float *output_norm = nullptr;
  std::vector<llama_layer_weights> layers;
  //! Owned f32 copies of the small vectors. Each inner vector keeps its buffer when the outer one
  //! grows or is moved, so the pointers above stay valid.
  std::vector<std::vector<float>> owned;

  const float *own(std::vector<float> v) {
    owned.push_back(std::move(v));
    return owned.back().data();
  }
};

namespace detail {

//! Whether dms's CPU mat-mul reads weights stored as `t` (it takes every type dms can decode).
inline bool matmul_reads(ggml_type t) noexcept { return can_dequantize(t); }

inline std::string matrix_shape_string(std::int64_t rows, std::int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// --- GGUF ---------------------------------------------------------------------------------------

inline const gguf_tensor &gguf_require_tensor(const gguf_file &f, const std::string &name) {
  const gguf_tensor *t = f.find_tensor(name);
  require(t != nullptr, errc::invalid_format,
          [&] { return "missing tensor '" + name + "' (every " + std::string(f.architecture()) +
                       " model needs it)"; },
          {f.path(), std::nullopt, name});
  return *t;
}

//! A [rows, cols] matrix (GGUF ne = {cols, rows}) used in place.
inline cpu::weight_matrix gguf_matrix(const gguf_file &f, const std::string &name, std::int64_t rows,
                                      std::int64_t cols) {
  const gguf_tensor &t = gguf_require_tensor(f, name);
  const error_context where{f.path(), t.info_offset, name};
  require(t.n_dims == 2 && t.ne[0] == static_cast<std::uint64_t>(cols) && t.ne[1] == static_cast<std::uint64_t>(rows),
          errc::shape_mismatch, [&] {
            std::string got = "[";
            for (std::uint32_t d = t.n_dims; d-- > 0;) got += std::to_string(t.ne[d]) + (d ? ", " : "");
            return "shape " + got + "] (expected " + matrix_shape_string(rows, cols) + ", row-major)";
          }, where);
  require(matmul_reads(t.type), errc::unsupported, [&] {
    return "type " + std::string(t.traits().name) + " cannot be multiplied by dms's CPU mat-mul";
  }, where);
  return {t.type, t.data.data(), rows, cols};
}

//! An n-element vector (norm weight, bias, rope factors) as owned f32.
inline std::vector<float> gguf_vector(const gguf_file &f, const gguf_tensor &t, std::int64_t n) {
  const error_context where{f.path(), t.info_offset, t.name};
  require(t.n_elements == static_cast<std::uint64_t>(n) && t.ne[0] == static_cast<std::uint64_t>(n),
          errc::shape_mismatch, [&] {
            return std::to_string(t.n_elements) + " elements in " + std::to_string(t.n_dims) + " dims (expected a vector of " +
                   std::to_string(n) + ")";
          }, where);
  std::vector<float> out(static_cast<std::size_t>(n));
  dequantize(t.type, t.data, out, where);
  return out;
}
inline std::vector<float> gguf_vector(const gguf_file &f, const std::string &name, std::int64_t n) {
  return gguf_vector(f, gguf_require_tensor(f, name), n);
}

// --- safetensors ----------------------------------------------------------------------------------

inline const safetensors_tensor &hf_require_tensor(const hf_checkpoint &ck, const std::string &name) {
  const safetensors_tensor *t = ck.find(name);
  require(t != nullptr, errc::invalid_format, [&] { return "missing tensor '" + name + "'"; },
          {ck.directory().string(), std::nullopt, name});
  return *t;
}

inline ggml_type hf_ggml_type(const hf_checkpoint &ck, const safetensors_tensor &t) {
  const error_context where{ck.file_of(t.name).path(), t.header_offset, t.name};
  require(t.type.has_value() && (*t.type == dtype::f32 || *t.type == dtype::f16 || *t.type == dtype::bf16),
          errc::unsupported, [&] { return "dtype " + t.dtype_name + " (dms runs F32, F16 and BF16 checkpoints)"; },
          where);
  return *t.type == dtype::f32 ? ggml_type::f32 : *t.type == dtype::f16 ? ggml_type::f16 : ggml_type::bf16;
}

inline cpu::weight_matrix hf_matrix(const hf_checkpoint &ck, const std::string &name, std::int64_t rows,
                                    std::int64_t cols) {
  const safetensors_tensor &t = hf_require_tensor(ck, name);
  const error_context where{ck.file_of(name).path(), t.header_offset, name};
  require(t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols, errc::shape_mismatch, [&] {
    return "shape " + shape_string(t.shape) + " (expected " + matrix_shape_string(rows, cols) + ")";
  }, where);
  const ggml_type type = hf_ggml_type(ck, t);
  require(matmul_reads(type), errc::unsupported,
          [&] { return "dtype " + t.dtype_name + " cannot be multiplied by dms's CPU mat-mul"; }, where);
  return {type, ck.raw(name).data(), rows, cols};
}

inline std::vector<float> hf_vector(const hf_checkpoint &ck, const std::string &name, std::int64_t n) {
  const safetensors_tensor &t = hf_require_tensor(ck, name);
  const error_context where{ck.file_of(name).path(), t.header_offset, name};
  require(t.shape.size() == 1 && t.shape[0] == n, errc::shape_mismatch, [&] {
    return "shape " + shape_string(t.shape) + " (expected [" + std::to_string(n) + "])";
  }, where);
  hf_ggml_type(ck, t);
  return ck.to_f32(name);
}

} // namespace detail

//! Finds and checks every tensor of a GGUF model; fills the tensor-derived fields of `hp`
//! (n_vocab, tied_output, attn_bias, rope_freq_factors).
inline llama_weights load_llama_weights(const gguf_file &f, llama_hparams &hp) {
  using namespace detail;
  llama_weights w;
  const gguf_tensor &embd = gguf_require_tensor(f, "token_embd.weight");
  require(embd.n_dims == 2 && embd.ne[0] == static_cast<std::uint64_t>(hp.n_embd), errc::shape_mismatch, [&] {
    return "token embedding rows hold " + std::to_string(embd.ne[0]) + " values (expected embedding_length " +
           std::to_string(hp.n_embd) + ")";
  }, {f.path(), embd.info_offset, embd.name});
  hp.n_vocab = static_cast<std::int64_t>(embd.ne[1]);
  w.token_embd = gguf_matrix(f, "token_embd.weight", hp.n_vocab, hp.n_embd);
  hp.tied_output = f.find_tensor("output.weight") == nullptr;
  w.output = hp.tied_output ? w.token_embd : gguf_matrix(f, "output.weight", hp.n_vocab, hp.n_embd);
  w.output_norm = w.own(gguf_vector(f, "output_norm.weight", hp.n_embd));
  if (const gguf_tensor *rf = f.find_tensor("rope_freqs.weight"))
    hp.rope_freq_factors = gguf_vector(f, *rf, hp.head_dim / 2);
  // Biases are required for qwen2 and used when a llama file has them (some fine-tunes do).
  hp.attn_bias = hp.arch == "qwen2" || f.find_tensor("blk.0.attn_q.bias") != nullptr;

  w.owned.reserve(static_cast<std::size_t>(hp.n_layers) * 5 + 2);
  w.layers.resize(static_cast<std::size_t>(hp.n_layers));
  for (std::int32_t l = 0; l < hp.n_layers; ++l) {
    llama_layer_weights &L = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    L.attn_norm = w.own(gguf_vector(f, p + "attn_norm.weight", hp.n_embd));
    L.wq = gguf_matrix(f, p + "attn_q.weight", hp.q_width(), hp.n_embd);
    L.wk = gguf_matrix(f, p + "attn_k.weight", hp.kv_width(), hp.n_embd);
    L.wv = gguf_matrix(f, p + "attn_v.weight", hp.kv_width(), hp.n_embd);
    L.wo = gguf_matrix(f, p + "attn_output.weight", hp.n_embd, hp.q_width());
    if (hp.attn_bias) {
      L.bq = w.own(gguf_vector(f, p + "attn_q.bias", hp.q_width()));
      L.bk = w.own(gguf_vector(f, p + "attn_k.bias", hp.kv_width()));
      L.bv = w.own(gguf_vector(f, p + "attn_v.bias", hp.kv_width()));
    }
    L.ffn_norm = w.own(gguf_vector(f, p + "ffn_norm.weight", hp.n_embd));
    L.w_gate = gguf_matrix(f, p + "ffn_gate.weight", hp.n_ff, hp.n_embd);
    L.w_up = gguf_matrix(f, p + "ffn_up.weight", hp.n_ff, hp.n_embd);
    L.w_down = gguf_matrix(f, p + "ffn_down.weight", hp.n_embd, hp.n_ff);
  }
  return w;
}

//! Finds and checks every tensor of a Hugging Face checkpoint (names of gguf_names.hpp).
inline llama_weights load_llama_weights(const hf_checkpoint &ck, llama_hparams &hp) {
  using namespace detail;
  llama_weights w;
  w.token_embd = hf_matrix(ck, "model.embed_tokens.weight", hp.n_vocab, hp.n_embd);
  // transformers ties when the config says so, whatever the file holds; otherwise lm_head is needed.
  w.output = hp.tied_output ? w.token_embd : hf_matrix(ck, "lm_head.weight", hp.n_vocab, hp.n_embd);
  w.output_norm = w.own(hf_vector(ck, "model.norm.weight", hp.n_embd));
  hp.attn_bias = hp.attn_bias || ck.contains("model.layers.0.self_attn.q_proj.bias");

  w.owned.reserve(static_cast<std::size_t>(hp.n_layers) * 5 + 2);
  w.layers.resize(static_cast<std::size_t>(hp.n_layers));
  for (std::int32_t l = 0; l < hp.n_layers; ++l) {
    llama_layer_weights &L = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.attn_norm = w.own(hf_vector(ck, p + "input_layernorm.weight", hp.n_embd));
    L.wq = hf_matrix(ck, p + "self_attn.q_proj.weight", hp.q_width(), hp.n_embd);
    L.wk = hf_matrix(ck, p + "self_attn.k_proj.weight", hp.kv_width(), hp.n_embd);
    L.wv = hf_matrix(ck, p + "self_attn.v_proj.weight", hp.kv_width(), hp.n_embd);
    L.wo = hf_matrix(ck, p + "self_attn.o_proj.weight", hp.n_embd, hp.q_width());
    if (hp.attn_bias) {
      L.bq = w.own(hf_vector(ck, p + "self_attn.q_proj.bias", hp.q_width()));
      L.bk = w.own(hf_vector(ck, p + "self_attn.k_proj.bias", hp.kv_width()));
      L.bv = w.own(hf_vector(ck, p + "self_attn.v_proj.bias", hp.kv_width()));
    }
    L.ffn_norm = w.own(hf_vector(ck, p + "post_attention_layernorm.weight", hp.n_embd));
    L.w_gate = hf_matrix(ck, p + "mlp.gate_proj.weight", hp.n_ff, hp.n_embd);
    L.w_up = hf_matrix(ck, p + "mlp.up_proj.weight", hp.n_ff, hp.n_embd);
    L.w_down = hf_matrix(ck, p + "mlp.down_proj.weight", hp.n_embd, hp.n_ff);
  }
  return w;
}

DMS_NAMESPACE_END
