// Test support: small tokenizer vocabularies written into in-memory GGUF files, so that BPE and
// SentencePiece behaviour can be checked on inputs whose right answer is known by hand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <dms/formats/gguf.hpp>
#include <dms/formats/gguf_writer.hpp>
#include <dms/tokenizer/tokenizer.hpp>
#include <dms/tokenizer/unicode.hpp>

namespace dms::test {

struct vocab_spec {
  std::string model = "gpt2";
  std::string pre = "smollm";
  std::vector<std::string> tokens;
  std::vector<std::int32_t> types;
  std::vector<float> scores;
  std::vector<std::string> merges;
  std::vector<std::pair<std::string, gguf_value>> extra; //!< more keys (special ids, flags)

  std::int32_t add(std::string text, gguf_token_type type = gguf_token_type::normal, float score = 0.0f) {
    tokens.push_back(std::move(text));
    types.push_back(static_cast<std::int32_t>(type));
    scores.push_back(score);
    return static_cast<std::int32_t>(tokens.size() - 1);
  }
  std::int32_t id(const std::string &text) const {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == text) return static_cast<std::int32_t>(i);
    return -1;
  }

  //! The GGUF bytes (metadata only; no tensors).
  std::vector<std::byte> bytes() const {
    gguf_writer w;
    w.set("general.architecture", "llama");
    w.set("tokenizer.ggml.model", model);
    if (!pre.empty()) w.set("tokenizer.ggml.pre", pre);
    w.set("tokenizer.ggml.tokens", gguf_value(gguf_array(tokens)));
    w.set("tokenizer.ggml.token_type", gguf_value(gguf_array(types)));
    if (model == "llama") w.set("tokenizer.ggml.scores", gguf_value(gguf_array(scores)));
    if (model == "gpt2") w.set("tokenizer.ggml.merges", gguf_value(gguf_array(merges)));
    for (const auto &[k, v] : extra) w.set(k, v);
    auto b = w.header_bytes();
    b.resize((b.size() + 31) / 32 * 32, std::byte{0});
    return b;
  }
  tokenizer load() const {
    const auto b = bytes();
    return tokenizer::from_gguf(gguf_file::parse(b, "synthetic.gguf"));
  }
};

//! UTF-8 of GPT-2's character for byte `b` (what a byte-level vocabulary stores).
inline std::string gpt2_char(unsigned char b) {
  std::string s;
  append_utf8(s, byte_to_unicode()[b]);
  return s;
}
//! `text`'s bytes as GPT-2 characters.
inline std::string gpt2_text(std::string_view text) {
  std::string s;
  for (unsigned char b : text) s += gpt2_char(b);
  return s;
}

//! A byte-level BPE vocabulary: 4 special tokens, the 256 byte characters, then one token per
//! merge in `merges` (plain text pairs like {"h", "e"}; rank = position).
inline vocab_spec bpe_vocab(const std::vector<std::pair<std::string, std::string>> &merges, std::string pre = "smollm") {
  vocab_spec v;
  v.pre = std::move(pre);
  v.add("<|endoftext|>", gguf_token_type::control);
  v.add("<|im_start|>", gguf_token_type::control);
  v.add("<|im_end|>", gguf_token_type::control);
  v.add("<tool>", gguf_token_type::user_defined);
  for (int b = 0; b < 256; ++b) v.add(gpt2_char(static_cast<unsigned char>(b)));
  for (const auto &[a, b] : merges) {
    v.merges.push_back(gpt2_text(a) + " " + gpt2_text(b));
    if (v.id(gpt2_text(a + b)) < 0) v.add(gpt2_text(a + b));
  }
  v.extra.emplace_back("tokenizer.ggml.bos_token_id", std::uint32_t{1});
  v.extra.emplace_back("tokenizer.ggml.eos_token_id", std::uint32_t{2});
  return v;
}

} // namespace dms::test
