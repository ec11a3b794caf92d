// dms/tokenizer/tokenizer.hpp: text <-> token ids with a model's own vocabulary, as llama.cpp
// tokenizes it.
//
// `tokenizer::from_gguf` reads the vocabulary from GGUF metadata: byte-level BPE
// (`tokenizer.ggml.model` = "gpt2", with the pre-tokenizer named by `tokenizer.ggml.pre`) or
// SentencePiece ("llama"). encode() and decode() follow llama.cpp's llama_tokenize and
// llama_detokenize, so ids agree with llama.cpp (tests/tokenizer checks it against
// llama-cpp-python line by line):
//  * parse_special: text equal to a control or unknown token's text becomes that token; without
//    it such text is ordinary text. User-defined tokens are always matched (as in HF tokenizers).
//  * add_special: BOS in front when the model asks for it (`tokenizer.ggml.add_bos_token`), EOS
//    at the end when it asks for that.
//  * SentencePiece: spaces become U+2581 and, with `add_space_prefix`, a space goes in front of
//    the text and of every text that follows a special token.
//  * decode: control tokens render only with render_special; SentencePiece drops the first
//    token's leading space when it added one; vocabularies with clean_up_tokenization_spaces
//    remove the space before , . ! ? and in " 's", as llama_detokenize does.
//
// @code
//   auto tok = dms::tokenizer::from_file("SmolLM2-135M-Instruct.Q4_1.gguf");
//   std::vector<dms::token_id> ids = tok.encode("Hello world");   // {19556, 905}
//   std::string text = tok.decode(ids);                            // "Hello world"
// @endcode
//
// A tokenizer is immutable and cheap to copy (the vocabulary is shared); any number of threads
// may call encode/decode at once. The incremental_decoder streams text out of generated tokens.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/tokenizer/bpe.hpp"
#include "dms/tokenizer/pretokenize.hpp"
#include "dms/tokenizer/spm.hpp"
#include "dms/tokenizer/unicode.hpp"
#include "dms/tokenizer/vocab.hpp"

DMS_NAMESPACE_BEGIN

class tokenizer {
public:
  //! Reads the vocabulary from `f`'s metadata (copied: `f` may be closed afterwards).
  static tokenizer from_gguf(const gguf_file &f) {
    auto v = std::make_shared<detail::vocab_data>();
    detail::load_vocab(*v, f);
    return tokenizer(std::move(v));
  }
  static tokenizer from_file(const std::filesystem::path &gguf) { return from_gguf(gguf_file(gguf.string())); }

  //! The ids of `text`. add_special: BOS/EOS as the model asks; parse_special: special-token
  //! text becomes special tokens.
  std::vector<token_id> encode(std::string_view text, bool add_special = true, bool parse_special = false) const {
    std::vector<token_id> out;
    const detail::vocab_data &v = *v_;
    std::vector<fragment> fragments;
    if (!text.empty()) {
      fragments.push_back({no_token, 0, text.size()});
      partition_special(text, fragments, parse_special);
    }
    if (add_special && v.add_bos) out.push_back(v.bos);
    if (v.kind == vocab_kind::bpe) {
      detail::bpe_session session(v);
      bpe_scratch scratch;
      for (const fragment &f : fragments) {
        if (f.token != no_token) out.push_back(f.token);
        else encode_bpe(text.substr(f.offset, f.length), session, scratch, out);
      }
    } else {
      detail::spm_session session(v);
      bool prev_special = true; // the text start counts as "after a special token"
      std::string escaped;
      for (const fragment &f : fragments) {
        if (f.token != no_token) {
          out.push_back(f.token);
          prev_special = true;
          continue;
        }
        escaped.clear();
        if (v.add_space_prefix && prev_special) escaped += "\xE2\x96\x81";
        for (char c : text.substr(f.offset, f.length)) {
          if (c == ' ') escaped += "\xE2\x96\x81";
          else escaped.push_back(c);
        }
        session.encode(escaped, out);
        prev_special = false;
      }
    }
    if (add_special && v.add_eos) out.push_back(v.eos);
    return out;
  }

  //! The text of `ids` (llama_detokenize with remove_special = false).
  std::string decode(std::span<const token_id> ids, bool render_special = false) const {
    std::string out;
    bool remove_space = v_->add_space_prefix;
    for (const token_id id : ids) {
      std::string_view p = piece_checked(id, render_special);
      if (remove_space && !p.empty() && p.front() == ' ') p.remove_prefix(1);
      remove_space = false;
      out += p;
    }
    if (v_->clean_spaces) clean_up_spaces(out);
    return out;
  }

  //! The bytes token `id` stands for ("" for control and unknown tokens).
  std::string_view piece(token_id id) const { return piece_checked(id, false); }
  //! The bytes token `id` stands for, control tokens included when `render_special`.
  std::string_view piece(token_id id, bool render_special) const { return piece_checked(id, render_special); }
  //! The vocabulary string as stored (GPT-2 characters for byte-level BPE, U+2581 for SPM spaces).
  std::string_view token_text(token_id id) const {
    check(id);
    return v_->text[static_cast<std::size_t>(id)];
  }
  //! The id whose stored text is `text`, if any.
  std::optional<token_id> find_token(std::string_view text) const {
    const token_id id = v_->find(text);
    return id == no_token ? std::nullopt : std::optional<token_id>(id);
  }
  std::int64_t n_vocab() const noexcept { return v_->size(); }
  token_id bos() const noexcept { return v_->bos; } //!< -1 when the vocabulary has none
  token_id eos() const noexcept { return v_->eos; } //!< -1 when the vocabulary has none
  std::optional<token_id> eot() const noexcept {
    return v_->eot == no_token ? std::nullopt : std::optional<token_id>(v_->eot);
  }
  //! End of generation: eos, eot, eom and the other turn/FIM end tokens llama.cpp stops on.
  bool is_eog(token_id id) const noexcept { return std::binary_search(v_->eog.begin(), v_->eog.end(), id); }
  std::span<const token_id> eog_tokens() const noexcept { return v_->eog; }
  bool is_control(token_id id) const noexcept { return in_range(id) && (v_->attr[static_cast<std::size_t>(id)] & token_attr_control); }
  //! llama.cpp's attribute bits (token_attr) of `id`.
  std::uint16_t attributes(token_id id) const {
    check(id);
    return v_->attr[static_cast<std::size_t>(id)];
  }
  bool add_bos() const noexcept { return v_->add_bos; }
  bool add_eos() const noexcept { return v_->add_eos; }
  bool add_space_prefix() const noexcept { return v_->add_space_prefix; }
  vocab_kind kind() const noexcept { return v_->kind; }
  const std::string &pre_tokenizer_name() const noexcept { return v_->pre_name; }
  const std::string &chat_template() const noexcept { return v_->chat_template; }

private:
  explicit tokenizer(std::shared_ptr<const detail::vocab_data> v) : v_(std::move(v)) {}

  struct fragment {
    token_id token; //!< a special token, or no_token for text [offset, offset + length)
    std::size_t offset, length;
  };
  struct bpe_scratch {
    std::vector<char32_t> cpts;
    std::vector<std::size_t> words, words_scratch;
    std::string bytes;
  };

  bool in_range(token_id id) const noexcept { return id >= 0 && id < v_->size(); }
  void check(token_id id) const {
    require(in_range(id), errc::invalid_argument, [&] {
      return "token id " + std::to_string(id) + " is out of range (vocabulary of " + std::to_string(v_->size()) + " tokens)";
    }, {v_->source});
  }
  std::string_view piece_checked(token_id id, bool render_special) const {
    check(id);
    const std::uint16_t a = v_->attr[static_cast<std::size_t>(id)];
    if (!render_special && (a & (token_attr_unknown | token_attr_control))) return {};
    return v_->piece[static_cast<std::size_t>(id)];
  }

  // llama.cpp's tokenizer_st_partition: each special token in turn (longest first) cuts every
  // remaining text fragment at each of its occurrences.
  void partition_special(std::string_view text, std::vector<fragment> &fragments, bool parse_special) const {
    std::vector<fragment> next;
    for (const token_id id : v_->special) {
      if (!parse_special && (v_->attr[static_cast<std::size_t>(id)] & (token_attr_control | token_attr_unknown))) continue;
      const std::string &needle = v_->text[static_cast<std::size_t>(id)];
      next.clear();
      bool changed = false;
      for (const fragment &f : fragments) {
        if (f.token != no_token) {
          next.push_back(f);
          continue;
        }
        std::size_t begin = f.offset;
        const std::size_t end = f.offset + f.length;
        for (;;) {
          const std::size_t hit = text.substr(0, end).find(needle, begin);
          if (hit == std::string_view::npos) break;
          changed = true;
          if (hit > begin) next.push_back({no_token, begin, hit - begin});
          next.push_back({id, 0, 0});
          begin = hit + needle.size();
        }
        if (end > begin) next.push_back({no_token, begin, end - begin});
      }
      if (changed) fragments.swap(next);
    }
  }

  void encode_bpe(std::string_view text, detail::bpe_session &session, bpe_scratch &s, std::vector<token_id> &out) const {
    s.cpts.clear();
    decode_utf8_lenient(text, s.cpts);
    pre_tokenize(v_->pre.kind, s.cpts, s.words, s.words_scratch);
    std::size_t begin = 0;
    for (const std::size_t len : s.words) {
      // The word's bytes re-encoded from its code points, so malformed input reaches BPE as
      // U+FFFD exactly as in llama.cpp.
      s.bytes.clear();
      for (std::size_t i = begin; i < begin + len; ++i) append_utf8(s.bytes, s.cpts[i]);
      session.encode_word(s.bytes, out);
      begin += len;
    }
  }

  // llama_detokenize's clean_spaces passes, byte for byte (including its in-place quirks).
  static void clean_up_spaces(std::string &text) {
    if (text.empty()) return;
    // 1: " ?", " !", " .", " ," lose the space.
    std::string src = text, dst;
    dst.push_back(src[0]);
    for (std::size_t i = 1; i < src.size(); ++i) {
      const char x = src[i];
      if (src[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) dst.pop_back();
      dst.push_back(x);
    }
    // 2: a single apostrophe between spaces, " ' ", loses both spaces.
    src.swap(dst);
    dst.clear();
    dst.push_back(src[0]);
    for (std::size_t i = 1; i < src.size(); ++i) {
      const char x = src[i];
      if (x == '\'' && i + 1 < src.size() && src[i - 1] == ' ' && src[i + 1] == ' ') {
        dst.pop_back();
        src[++i] = '\0';
      }
      dst.push_back(x);
    }
    // 3: " 's", " 'm", " 're", " 've" lose the space.
    src.swap(dst);
    dst.clear();
    dst.push_back(src[0]);
    for (std::size_t i = 1; i < src.size(); ++i) {
      const char x = src[i];
      if (src[i - 1] == ' ' && x == '\'' && i + 1 < src.size()) {
        const char x1 = src[i + 1];
        if (x1 == 's' || x1 == 'm') {
          dst.pop_back();
        } else if (x1 != 't' && x1 != 'd' && i + 2 < src.size()) {
          const char x2 = src[i + 2];
          if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) dst.pop_back();
        }
      }
      dst.push_back(x);
    }
    text.swap(dst);
  }

  std::shared_ptr<const detail::vocab_data> v_;
};

//! Streams text out of a token stream without ever splitting a UTF-8 character across two
//! outputs (a byte-level BPE token may hold half of an emoji). The concatenation of all push()
//! results and flush() equals the concatenated pieces, with SentencePiece's leading space dropped
//! like decode() drops it; decode()'s clean-up of spaces before punctuation (a whole-text pass in
//! llama.cpp, also absent from its streaming output) is not applied.
class incremental_decoder {
public:
  explicit incremental_decoder(const tokenizer &t, bool render_special = false)
      : t_(t), render_special_(render_special), strip_space_(t.add_space_prefix()) {}

  //! The text that became complete with token `id` (possibly empty).
  std::string push(token_id id) {
    std::string_view p = t_.piece(id, render_special_);
    if (strip_space_ && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    strip_space_ = false;
    pending_ += p;
    const std::size_t cut = complete_prefix(pending_);
    std::string out = pending_.substr(0, cut);
    pending_.erase(0, cut);
    return out;
  }
  //! Whatever is still held back (an incomplete character at the end of the stream).
  std::string flush() {
    std::string out;
    out.swap(pending_);
    return out;
  }

private:
  // Length of `s` without a trailing lead byte whose continuation bytes have not arrived yet.
  static std::size_t complete_prefix(std::string_view s) {
    const std::size_t n = s.size();
    for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
      const auto b = static_cast<unsigned char>(s[n - back]);
      if ((b & 0xC0) == 0x80) continue; // continuation byte: keep looking for the lead
      if (b >= 0xC0 && b <= 0xF7 && utf8_sequence_length(b) > back) return n - back;
      return n;
    }
    return n;
  }

  tokenizer t_;
  bool render_special_;
  bool strip_space_;
  std::string pending_;
};

DMS_NAMESPACE_END
