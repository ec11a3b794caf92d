// dms/tokenizer/vocab.hpp: a tokenizer vocabulary as GGUF stores it, read and validated once.
//
// GGUF keeps the tokenizer in metadata: `tokenizer.ggml.model` ("gpt2" = byte-level BPE, "llama" =
// SentencePiece), the token strings, per-token types and scores, BPE merges, the special token
// ids and flags. `vocab_data` holds a copy of what encoding and decoding need (the gguf_file may
// be closed afterwards), with llama.cpp's load-time rules applied so that dms agrees with it on
// which tokens are special (llama_vocab::impl::load): defaults per model type, EOT/EOG/FIM tokens
// recognised by their text and forced to "control", the special-token list sorted longest first.
// Where llama.cpp only warns about a broken vocabulary (an out-of-range special id, a merge naming
// a token that does not exist) dms refuses it with an error naming the key and the index.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/tokenizer/pretokenize.hpp"
#include "dms/tokenizer/unicode.hpp"

DMS_NAMESPACE_BEGIN

//! Token attributes (llama.cpp's llama_token_attr bits).
enum token_attr : std::uint16_t {
  token_attr_undefined = 0,
  token_attr_unknown = 1 << 0,
  token_attr_unused = 1 << 1,
  token_attr_normal = 1 << 2,
  token_attr_control = 1 << 3,
  token_attr_user_defined = 1 << 4,
  token_attr_byte = 1 << 5,
};

//! Token types as `tokenizer.ggml.token_type` stores them (llama.cpp's llama_token_type).
enum class gguf_token_type : std::int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

enum class vocab_kind : std::uint8_t {
  bpe, //!< `tokenizer.ggml.model` = "gpt2": byte-level BPE with merge ranks
  spm, //!< `tokenizer.ggml.model` = "llama": SentencePiece, merged by token score
};

inline constexpr token_id no_token = -1;

namespace detail {

//! Everything a tokenizer reads; immutable once built and shared between tokenizer copies (the
//! lookup table holds views into `text`, so the object never moves after construction).
struct vocab_data {
  vocab_kind kind = vocab_kind::bpe;
  std::string model_name, pre_name, chat_template;
  pre_tokenizer_config pre;

  std::vector<std::string> text;   //!< token strings as stored ("[EMPTY_i]" for empty ones)
  std::vector<float> score;        //!< SentencePiece scores (0 when absent)
  std::vector<std::uint16_t> attr; //!< token_attr bits
  std::unordered_map<std::string_view, token_id> to_id;
  std::vector<std::string> piece;  //!< the bytes each token renders to (control tokens: their text)

  //! BPE merges: (left id << 32 | right id) -> rank and the merged token.
  struct merge {
    std::int32_t rank;
    token_id result;
  };
  std::unordered_map<std::uint64_t, merge> merges;
  std::array<token_id, 256> byte_token{};                  //!< BPE: the token of a byte's GPT-2 character
  std::array<std::string, 256> byte_chars;                 //!< BPE: a byte's GPT-2 character, UTF-8
  std::array<std::vector<token_id>, 256> byte_fallback{};  //!< BPE: llama.cpp's per-byte fallback tokens

  token_id bos = no_token, eos = no_token, eot = no_token, eom = no_token, unk = no_token, sep = no_token,
           pad = no_token, fim_pad = no_token, fim_rep = no_token, fim_sep = no_token;
  bool add_bos = false, add_eos = false, add_space_prefix = false, clean_spaces = false;
  std::vector<token_id> special; //!< control, user-defined and unknown tokens, longest text first
  std::vector<token_id> eog;     //!< sorted

  std::string source; //!< file name, for messages

  token_id find(std::string_view s) const {
    const auto it = to_id.find(s);
    return it == to_id.end() ? no_token : it->second;
  }
  std::int64_t size() const noexcept { return static_cast<std::int64_t>(text.size()); }
};

inline void build_pieces(vocab_data &v) {
  v.piece.resize(v.text.size());
  for (std::size_t id = 0; id < v.text.size(); ++id) {
    const std::string &t = v.text[id];
    const std::uint16_t a = v.attr[id];
    std::string &p = v.piece[id];
    if (a & (token_attr_unknown | token_attr_control | token_attr_user_defined)) {
      p = t;
    } else if (a & token_attr_normal) {
      if (v.kind == vocab_kind::spm) {
        for (std::size_t i = 0; i < t.size(); ++i) {
          if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
            p.push_back(' ');
            i += 2;
          } else {
            p.push_back(t[i]);
          }
        }
      } else { // GPT-2 characters back to bytes (llama.cpp's llama_decode_text, odd fallback included)
        for (std::size_t i = 0; i < t.size();) {
          const char32_t c = decode_utf8_lenient(t, i);
          const int b = unicode_to_byte(c);
          if (b >= 0) {
            p.push_back(static_cast<char>(b));
          } else {
            std::string utf8;
            append_utf8(utf8, c);
            p += "[UNK_BYTE_0x";
            static constexpr char hex[] = "0123456789abcdef";
            for (unsigned char x : utf8) {
              p.push_back(hex[x >> 4]);
              p.push_back(hex[x & 15]);
            }
            p += t + "]";
          }
        }
      }
    } else if (a & token_attr_byte) { // "<0xXX>": strtol of the two hex digits, as llama.cpp
      unsigned value = 0;
      if (t.size() >= 5) std::from_chars(t.data() + 3, t.data() + 5, value, 16);
      p.push_back(static_cast<char>(value & 0xFF));
    }
  }
}

//! A special id from metadata key `key`, or `fallback` when absent. Out-of-range ids are errors.
inline token_id read_special_id(const gguf_file &f, std::string_view key, token_id fallback, std::int64_t n_vocab) {
  const gguf_value *v = f.find(key);
  if (!v) return fallback >= n_vocab ? no_token : fallback;
  const auto id = v->to_integer<std::int64_t>(key, {f.path()});
  require(id >= 0 && id < n_vocab, errc::invalid_format, [&] {
    return "metadata key '" + std::string(key) + "': token id " + std::to_string(id) + " is out of range (expected 0.." +
           std::to_string(n_vocab - 1) + ")";
  }, {f.path()});
  return static_cast<token_id>(id);
}

inline std::optional<bool> read_flag(const gguf_file &f, std::string_view key) {
  const gguf_value *v = f.find(key);
  if (!v) return std::nullopt;
  return v->get<bool>(key, {f.path()});
}

inline void load_merges(vocab_data &v, const gguf_file &f) {
  constexpr std::string_view key = "tokenizer.ggml.merges";
  const gguf_value *mv = f.find(key);
  require(mv != nullptr, errc::invalid_format,
          [] { return std::string("byte-level BPE vocabulary without 'tokenizer.ggml.merges' (expected a string array)"); },
          {f.path()});
  const auto &merges = mv->array(key, {f.path()}).get<std::string>(key, {f.path()});
  v.merges.reserve(merges.size());
  std::string joined;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const std::string &m = merges[i];
    const auto where = [&] { return std::string(key) + "[" + std::to_string(i) + "] '" + m + "'"; };
    const std::size_t space = m.find(' ', 1);
    require(space != std::string::npos, errc::invalid_format,
            [&] { return where() + ": expected two tokens separated by a space"; }, {f.path()});
    const std::string_view a(m.data(), space), b(m.data() + space + 1, m.size() - space - 1);
    joined.assign(a);
    joined += b;
    const token_id ia = v.find(a), ib = v.find(b), ij = v.find(joined);
    require(ia != no_token && ib != no_token && ij != no_token, errc::invalid_format, [&] {
      const std::string missing(ia == no_token ? a : ib == no_token ? b : std::string_view(joined));
      return where() + ": '" + missing + "' is not in the vocabulary (a merge must name two tokens whose "
             "concatenation is a token)";
    }, {f.path()});
    const std::uint64_t k = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ia)) << 32) | static_cast<std::uint32_t>(ib);
    v.merges.emplace(k, vocab_data::merge{static_cast<std::int32_t>(i), ij}); // first rank wins, as llama.cpp
  }
  const auto &fwd = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string &c = v.byte_chars[static_cast<std::size_t>(b)];
    append_utf8(c, fwd[static_cast<std::size_t>(b)]);
    v.byte_token[static_cast<std::size_t>(b)] = v.find(c);
    // llama.cpp's fallback for a symbol that is not a token: each byte of its UTF-8, as a
    // one-byte string, if that is a token (real vocabularies contain every GPT-2 character, so
    // this only matters for broken ones).
    for (char x : c) {
      const token_id id = v.find(std::string_view(&x, 1));
      if (id != no_token) v.byte_fallback[static_cast<std::size_t>(b)].push_back(id);
    }
  }
}

// Texts llama.cpp recognises (llama_vocab::impl::load), in its order.
inline constexpr std::string_view eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                                 "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                                                 "<end_of_utterance>"};
inline constexpr std::string_view eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["};
inline constexpr std::string_view fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
inline constexpr std::string_view fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
inline constexpr std::string_view fim_sep_texts[] = {"<|file_sep|>"};
inline constexpr std::string_view fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                                                     "▁<PRE>", "<|code_prefix|>", "<|prefix|>"};
inline constexpr std::string_view fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                                                     "▁<SUF>", "<|code_suffix|>", "<|suffix|>"};
inline constexpr std::string_view fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                                                     "▁<MID>", "<|code_middle|>", "<|middle|>"};

template <std::size_t N>
token_id detect_by_text(vocab_data &v, const std::string_view (&texts)[N]) {
  // llama.cpp takes the first match in its hash map's iteration order; dms takes the first text
  // of the list that the vocabulary has, which is deterministic and prefers the more specific
  // turn-end markers (<|im_end|> over <|endoftext|> in a ChatML vocabulary).
  for (const auto t : texts) {
    const token_id id = v.find(t);
    if (id != no_token) {
      v.attr[static_cast<std::size_t>(id)] |= token_attr_control;
      return id;
    }
  }
  return no_token;
}

inline void load_special(vocab_data &v, const gguf_file &f) {
  const std::int64_t n = v.size();
  const bool spm = v.kind == vocab_kind::spm;
  // llama.cpp's defaults when a key is absent: SentencePiece <unk>=0 <s>=1 </s>=2; BPE 11/11.
  v.bos = read_special_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : 11, n);
  v.eos = read_special_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : 11, n);
  v.eot = read_special_id(f, "tokenizer.ggml.eot_token_id", no_token, n);
  v.eom = read_special_id(f, "tokenizer.ggml.eom_token_id", no_token, n);
  v.unk = read_special_id(f, "tokenizer.ggml.unknown_token_id", spm ? 0 : no_token, n);
  v.sep = read_special_id(f, "tokenizer.ggml.seperator_token_id", no_token, n);
  v.pad = read_special_id(f, "tokenizer.ggml.padding_token_id", no_token, n);
  v.fim_pad = read_special_id(f, "tokenizer.ggml.fim_pad_token_id", no_token, n);
  v.fim_rep = read_special_id(f, "tokenizer.ggml.fim_rep_token_id", no_token, n);
  v.fim_sep = read_special_id(f, "tokenizer.ggml.fim_sep_token_id", no_token, n);

  if (spm) {
    v.add_bos = true;
    v.add_space_prefix = true;
    v.clean_spaces = false;
  } else {
    v.add_bos = v.pre.add_bos;
    v.clean_spaces = v.pre.clean_spaces;
  }
  if (auto b = read_flag(f, "tokenizer.ggml.add_space_prefix")) v.add_space_prefix = *b;
  if (auto b = read_flag(f, "tokenizer.ggml.add_bos_token")) v.add_bos = *b;
  if (auto b = read_flag(f, "tokenizer.ggml.add_eos_token")) v.add_eos = *b;
  require(!v.add_bos || v.bos != no_token, errc::invalid_format,
          [] { return std::string("tokenizer.ggml.add_bos_token is true, but there is no valid BOS token"); }, {f.path()});
  require(!v.add_eos || v.eos != no_token, errc::invalid_format,
          [] { return std::string("tokenizer.ggml.add_eos_token is true, but there is no valid EOS token"); }, {f.path()});

  if (v.eot == no_token) v.eot = detect_by_text(v, eot_texts);
  if (v.fim_pad == no_token) v.fim_pad = detect_by_text(v, fim_pad_texts);
  if (v.fim_rep == no_token) v.fim_rep = detect_by_text(v, fim_rep_texts);
  if (v.fim_sep == no_token) v.fim_sep = detect_by_text(v, fim_sep_texts);
  // FIM prefix/suffix/middle tokens: llama.cpp forces them to control so that they are special.
  for (const auto *texts : {&fim_pre_texts, &fim_suf_texts, &fim_mid_texts}) {
    const std::string_view key = texts == &fim_pre_texts ? "tokenizer.ggml.fim_pre_token_id"
                                 : texts == &fim_suf_texts ? "tokenizer.ggml.fim_suf_token_id"
                                                           : "tokenizer.ggml.fim_mid_token_id";
    if (read_special_id(f, key, no_token, n) == no_token) detect_by_text(v, *texts);
  }
  if (v.eom == no_token) {
    v.eom = v.find("<|eom_id|>");
    if (v.eom != no_token) v.attr[static_cast<std::size_t>(v.eom)] |= token_attr_control;
  }

  // End of generation: FIM pad/repo/file-separator, every token with an end-of-turn text, and
  // eos/eot/eom (llama.cpp's special_eog_ids).
  for (token_id id : {v.fim_pad, v.fim_rep, v.fim_sep, v.eos, v.eot, v.eom})
    if (id != no_token) v.eog.push_back(id);
  for (const auto t : eog_texts) {
    const token_id id = v.find(t);
    if (id == no_token) continue;
    v.eog.push_back(id);
    v.attr[static_cast<std::size_t>(id)] |= token_attr_control;
  }
  std::sort(v.eog.begin(), v.eog.end());
  v.eog.erase(std::unique(v.eog.begin(), v.eog.end()), v.eog.end());
  // Workarounds llama.cpp applies to two tokenizer families: <|end|> is not an end of generation
  // when <|return|>/<|call|> (gpt-oss) or <|calls|>/<|flush|> (solar-open) exist; </s> is not one
  // next to <|tool_response> (Gemma 4).
  const auto has_eog = [&](std::string_view t) {
    const token_id id = v.find(t);
    return id != no_token && std::binary_search(v.eog.begin(), v.eog.end(), id);
  };
  const auto drop_eog = [&](std::string_view t, std::uint16_t new_attr) {
    const token_id id = v.find(t);
    v.eog.erase(std::remove(v.eog.begin(), v.eog.end(), id), v.eog.end());
    v.attr[static_cast<std::size_t>(id)] = new_attr;
  };
  const bool has_call = has_eog("<|call|>") || has_eog("<|calls|>");
  if (has_eog("<|end|>") && ((has_eog("<|return|>") && has_call) || (has_call && has_eog("<|flush|>"))))
    drop_eog("<|end|>", token_attr_user_defined);
  if (has_eog("<|tool_response>") && has_eog("</s>")) drop_eog("</s>", token_attr_normal);

  for (token_id id = 0; id < static_cast<token_id>(n); ++id)
    if (v.attr[static_cast<std::size_t>(id)] & (token_attr_control | token_attr_user_defined | token_attr_unknown))
      v.special.push_back(id);
  // Longest first, so "<|im_start|>" is found before a shorter token it contains (ties by id:
  // llama.cpp's std::sort leaves them in an unspecified order).
  std::stable_sort(v.special.begin(), v.special.end(), [&](token_id a, token_id b) {
    return v.text[static_cast<std::size_t>(a)].size() > v.text[static_cast<std::size_t>(b)].size();
  });
}

//! Reads and validates the vocabulary in `f`.
inline void load_vocab(vocab_data &v, const gguf_file &f) {
  const error_context where{f.path()};
  v.source = f.path();
  const gguf_value *model = f.find("tokenizer.ggml.model");
  require(model != nullptr, errc::invalid_format,
          [] { return std::string("no tokenizer in this file (metadata key 'tokenizer.ggml.model' is absent)"); }, where);
  v.model_name = std::string(model->string("tokenizer.ggml.model", where));
  if (v.model_name == "gpt2") {
    v.kind = vocab_kind::bpe;
  } else if (v.model_name == "llama") {
    v.kind = vocab_kind::spm;
  } else {
    throw error(errc::unsupported,
                "tokenizer.ggml.model '" + v.model_name + "' is not supported (expected 'gpt2' (byte-level BPE) or "
                "'llama' (SentencePiece))", where);
  }
  if (const gguf_value *pre = f.find("tokenizer.ggml.pre")) v.pre_name = std::string(pre->string("tokenizer.ggml.pre", where));
  if (v.kind == vocab_kind::bpe) {
    const auto cfg = find_pre_tokenizer(v.pre_name);
    require(cfg.has_value(), errc::unsupported, [&] {
      return "tokenizer.ggml.pre '" + v.pre_name + "' is not supported (dms implements: " + supported_pre_tokenizers() + ")";
    }, where);
    v.pre = *cfg;
  }
  if (const gguf_value *t = f.find("tokenizer.chat_template")) v.chat_template = std::string(t->string("tokenizer.chat_template", where));

  constexpr std::string_view tokens_key = "tokenizer.ggml.tokens";
  const gguf_value *tv = f.find(tokens_key);
  require(tv != nullptr, errc::invalid_format,
          [] { return std::string("metadata key 'tokenizer.ggml.tokens' is absent (expected the token strings)"); }, where);
  const auto &tokens = tv->array(tokens_key, where).get<std::string>(tokens_key, where);
  const std::size_t n = tokens.size();
  require(n > 0 && n <= static_cast<std::size_t>(INT32_MAX), errc::invalid_format,
          [&] { return "tokenizer.ggml.tokens has " + std::to_string(n) + " entries (expected 1..2^31-1)"; }, where);

  std::vector<float> scores(n, 0.0f);
  if (const gguf_value *sv = f.find("tokenizer.ggml.scores")) {
    const gguf_array &a = sv->array("tokenizer.ggml.scores", where);
    require(a.size() >= n, errc::invalid_format, [&] {
      return "tokenizer.ggml.scores has " + std::to_string(a.size()) + " entries, fewer than the " + std::to_string(n) + " tokens";
    }, where);
    if (a.holds<float>()) {
      const auto &s = a.get<float>();
      std::copy(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n), scores.begin());
    } else {
      const auto &s = a.get<std::int32_t>("tokenizer.ggml.scores", where);
      for (std::size_t i = 0; i < n; ++i) scores[i] = static_cast<float>(s[i]);
    }
  }
  std::vector<std::uint16_t> attrs(n, token_attr_normal);
  if (const gguf_value *ty = f.find("tokenizer.ggml.token_type")) {
    const auto &types = ty->array("tokenizer.ggml.token_type", where).get<std::int32_t>("tokenizer.ggml.token_type", where);
    require(types.size() >= n, errc::invalid_format, [&] {
      return "tokenizer.ggml.token_type has " + std::to_string(types.size()) + " entries, fewer than the " +
             std::to_string(n) + " tokens";
    }, where);
    for (std::size_t i = 0; i < n; ++i) {
      switch (static_cast<gguf_token_type>(types[i])) {
      case gguf_token_type::normal: attrs[i] = token_attr_normal; break;
      case gguf_token_type::unknown: attrs[i] = token_attr_unknown; break;
      case gguf_token_type::control: attrs[i] = token_attr_control; break;
      case gguf_token_type::user_defined: attrs[i] = token_attr_user_defined; break;
      case gguf_token_type::unused: attrs[i] = token_attr_unused; break;
      case gguf_token_type::byte: attrs[i] = token_attr_byte; break;
      default: attrs[i] = token_attr_undefined; break;
      }
    }
  }

  v.text.reserve(n);
  for (std::size_t i = 0; i < n; ++i) v.text.push_back(tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : tokens[i]);
  v.score = std::move(scores);
  v.attr = std::move(attrs);
  v.to_id.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto [it, inserted] = v.to_id.emplace(v.text[i], static_cast<token_id>(i));
    require(inserted, errc::invalid_format, [&] {
      return "duplicate token in tokenizer.ggml.tokens: '" + v.text[i] + "' has ids " + std::to_string(it->second) + " and " +
             std::to_string(i);
    }, where);
  }
  if (v.kind == vocab_kind::bpe) load_merges(v, f);
  load_special(v, f);
  build_pieces(v);
}

} // namespace detail

DMS_NAMESPACE_END
