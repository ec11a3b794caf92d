// dms/tokenizer/pretokenize.hpp: splitting text into words before byte-level BPE, exactly as
// llama.cpp does for a given `tokenizer.ggml.pre`.
//
// Each pre-tokenizer is a list of regular expressions applied one after the other; every
// expression splits each piece the previous ones produced into its matches and the gaps between
// them (llama.cpp's unicode_regex_split). dms implements each expression by hand over code points
// (no std::regex: it is slow, not Unicode-aware, and llama.cpp itself only uses it on a
// "collapsed" one-byte-per-code-point copy of the text whose semantics are reproduced here):
//  * the GPT-2 expression  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    as llama.cpp's unicode_regex_split_custom_gpt2;
//  * the Llama-3 expression (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//    as unicode_regex_split_custom_llama3; Qwen2's differs only in \p{N} (one digit per word);
//  * the short helper expressions (\p{N}, \p{N}+, [0-9]{3}, [\p{P}$+<=>^~|]+, ...) with the
//    semantics llama.cpp's collapsed std::regex gives them (ASCII code points keep their own
//    class lists there, e.g. '~' is not \p{S}).
// Positions outside the piece being split read as "no code point": (?!\S) holds at a piece's end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/tokenizer/unicode.hpp"

DMS_NAMESPACE_BEGIN

//! The pre-tokenizer families dms implements (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*).
enum class pre_tokenizer : std::uint8_t {
  default_bpe,    //!< "default" or absent: punctuation runs, GPT-2, digit runs, 3-digit groups
  gpt2,           //!< GPT-2's expression alone
  llama3,         //!< Llama-3's expression (digits in groups of up to 3)
  smollm,         //!< every digit alone, then GPT-2's expression (StarCoder, SmolLM, Command-R, ...)
  qwen2,          //!< Llama-3's expression with one digit per word
  deepseek_coder, //!< newlines, letters, punctuation, CJK, single digits
};

//! What a `tokenizer.ggml.pre` value selects, with the flags llama.cpp ties to it.
struct pre_tokenizer_config {
  pre_tokenizer kind = pre_tokenizer::default_bpe;
  bool ignore_merges = false; //!< a word that is itself a token is emitted whole (Llama-3)
  bool add_bos = false;       //!< default for add_bos when the GGUF does not say
  bool clean_spaces = true;   //!< decode removes " ," style spaces (clean_up_tokenization_spaces)
};

namespace detail {
struct pre_tokenizer_name {
  std::string_view name;
  pre_tokenizer_config config;
};
// The names llama.cpp's llama_vocab::impl::load maps to these families, with its flags.
inline constexpr pre_tokenizer_name pre_tokenizer_names[] = {
    {"default", {pre_tokenizer::default_bpe, false, false, true}},
    {"llama3", {pre_tokenizer::llama3, true, true, true}},
    {"llama-v3", {pre_tokenizer::llama3, true, true, true}},
    {"llama-bpe", {pre_tokenizer::llama3, true, true, true}},
    {"falcon3", {pre_tokenizer::llama3, true, true, true}},
    {"falcon-h1", {pre_tokenizer::llama3, true, true, true}},
    {"pixtral", {pre_tokenizer::llama3, true, true, true}},
    {"midm-2.0", {pre_tokenizer::llama3, true, true, true}},
    {"lfm2", {pre_tokenizer::llama3, true, true, true}},
    {"dbrx", {pre_tokenizer::llama3, false, false, true}},
    {"smaug-bpe", {pre_tokenizer::llama3, false, false, true}},
    {"gpt-2", {pre_tokenizer::gpt2, false, false, true}},
    {"phi-2", {pre_tokenizer::gpt2, false, false, true}},
    {"jina-es", {pre_tokenizer::gpt2, false, false, true}},
    {"jina-de", {pre_tokenizer::gpt2, false, false, true}},
    {"jina-v2-es", {pre_tokenizer::gpt2, false, false, true}},
    {"jina-v2-de", {pre_tokenizer::gpt2, false, false, true}},
    {"gigachat", {pre_tokenizer::gpt2, false, false, true}},
    {"a.x-4.0", {pre_tokenizer::gpt2, false, false, true}},
    {"mellum", {pre_tokenizer::gpt2, false, false, true}},
    {"modern-bert", {pre_tokenizer::gpt2, false, false, true}},
    {"mpt", {pre_tokenizer::gpt2, false, false, true}},
    {"olmo", {pre_tokenizer::gpt2, false, false, true}},
    {"jais", {pre_tokenizer::gpt2, false, false, true}},
    {"exaone4", {pre_tokenizer::gpt2, false, false, true}},
    {"trillion", {pre_tokenizer::gpt2, false, false, false}},
    {"granite-docling", {pre_tokenizer::gpt2, false, false, false}},
    {"smollm", {pre_tokenizer::smollm, false, false, false}},
    {"starcoder", {pre_tokenizer::smollm, false, false, true}},
    {"refact", {pre_tokenizer::smollm, false, false, true}},
    {"command-r", {pre_tokenizer::smollm, false, false, false}},
    {"codeshell", {pre_tokenizer::smollm, false, false, true}},
    {"exaone", {pre_tokenizer::smollm, false, false, true}},
    {"minerva-7b", {pre_tokenizer::smollm, false, false, true}},
    {"mellum2", {pre_tokenizer::smollm, false, false, true}},
    {"qwen2", {pre_tokenizer::qwen2, false, false, false}},
    {"deepseek-r1-qwen", {pre_tokenizer::qwen2, false, false, false}},
    {"kormo", {pre_tokenizer::qwen2, false, false, false}},
    {"f2llmv2", {pre_tokenizer::qwen2, false, false, false}},
    {"hunyuan", {pre_tokenizer::qwen2, false, false, false}},
    {"solar-open", {pre_tokenizer::qwen2, false, false, false}},
    {"stablelm2", {pre_tokenizer::qwen2, false, false, true}},
    {"megrez", {pre_tokenizer::qwen2, false, false, true}},
    {"deepseek-coder", {pre_tokenizer::deepseek_coder, false, false, false}},
};
} // namespace detail

//! The configuration for `tokenizer.ggml.pre` = `name` ("" means "default", as in llama.cpp),
//! or nullopt when dms does not implement it.
inline std::optional<pre_tokenizer_config> find_pre_tokenizer(std::string_view name) {
  if (name.empty()) return detail::pre_tokenizer_names[0].config;
  for (const auto &n : detail::pre_tokenizer_names)
    if (n.name == name) return n.config;
  return std::nullopt;
}

//! "default, llama3, ..." for error messages.
inline std::string supported_pre_tokenizers() {
  std::string s;
  for (const auto &n : detail::pre_tokenizer_names) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

namespace detail {

// A piece being split: code points [begin, end) of the text; reads outside are "no code point".
struct piece_reader {
  std::span<const char32_t> cpts;
  std::size_t begin, end;
  static constexpr char32_t none = 0xFFFFFFFF;
  char32_t cpt(std::size_t i) const noexcept { return i >= begin && i < end ? cpts[i] : none; }
  cpt_class cls(std::size_t i) const noexcept { return i >= begin && i < end ? classify(cpts[i]) : cpt_class{}; }
};

// Emits word lengths into `out`, skipping empty words (llama.cpp's _add_token).
struct word_sink {
  std::vector<std::size_t> &out;
  std::size_t prev_end;
  std::size_t add(std::size_t end) {
    const std::size_t len = end - prev_end;
    if (len > 0) out.push_back(len);
    prev_end = end;
    return len;
  }
};

constexpr bool ascii_lower_is(char32_t c, char lower) noexcept {
  return c == static_cast<char32_t>(lower) || c == static_cast<char32_t>(lower - 'a' + 'A');
}

// 's 't 're 've 'm 'll 'd at `pos` (case-insensitive when `any_case`): its length, else 0.
inline std::size_t contraction_at(const piece_reader &r, std::size_t pos, bool any_case) {
  if (r.cpt(pos) != U'\'' || pos + 1 >= r.end) return 0;
  const auto is = [&](char32_t c, char l) { return any_case ? ascii_lower_is(c, l) : c == static_cast<char32_t>(l); };
  const char32_t n1 = r.cpt(pos + 1);
  if (is(n1, 's') || is(n1, 't') || is(n1, 'm') || is(n1, 'd')) return 2;
  if (pos + 2 < r.end) {
    const char32_t n2 = r.cpt(pos + 2);
    if ((is(n1, 'r') && is(n2, 'e')) || (is(n1, 'v') && is(n2, 'e')) || (is(n1, 'l') && is(n2, 'l'))) return 3;
  }
  return 0;
}

// GPT-2's expression over one piece (llama.cpp's unicode_regex_split_custom_gpt2).
inline void split_gpt2(const piece_reader &r, std::vector<std::size_t> &out) {
  word_sink sink{out, r.begin};
  for (std::size_t pos = r.begin; pos < r.end;) {
    const char32_t cpt = r.cpt(pos);
    const cpt_class cls = r.cls(pos);
    if (const std::size_t n = contraction_at(r, pos, false)) {
      pos += sink.add(pos + n);
      continue;
    }
    cpt_class cls2 = cpt == U' ' ? r.cls(pos + 1) : cls;
    if (cls2.is_letter()) { // <space>?\p{L}+
      pos += cpt == U' ';
      while (cls2.is_letter()) cls2 = r.cls(++pos);
      sink.add(pos);
      continue;
    }
    if (cls2.is_number()) { // <space>?\p{N}+
      pos += cpt == U' ';
      while (cls2.is_number()) cls2 = r.cls(++pos);
      sink.add(pos);
      continue;
    }
    const auto other = [](cpt_class c) { return !(c.is_whitespace() || c.is_letter() || c.is_number()) && !c.is_none(); };
    if (other(cls2)) { // <space>?[^\s\p{L}\p{N}]+
      pos += cpt == U' ';
      while (other(cls2)) cls2 = r.cls(++pos);
      sink.add(pos);
      continue;
    }
    std::size_t n_ws = 0;
    while (r.cls(pos + n_ws).is_whitespace()) ++n_ws;
    if (n_ws > 1 && r.cpt(pos + n_ws) != piece_reader::none) { // \s+(?!\S)
      pos += n_ws - 1;
      sink.add(pos);
      continue;
    }
    if (n_ws > 0) { // \s+
      pos += n_ws;
      sink.add(pos);
      continue;
    }
    sink.add(++pos); // no match
  }
}

// Llama-3's expression over one piece (llama.cpp's unicode_regex_split_custom_llama3); Qwen2's
// when `max_digits` is 1.
inline void split_llama3(const piece_reader &r, std::vector<std::size_t> &out, std::size_t max_digits) {
  word_sink sink{out, r.begin};
  for (std::size_t pos = r.begin; pos < r.end;) {
    const char32_t cpt = r.cpt(pos);
    const cpt_class cls = r.cls(pos);
    if (const std::size_t n = contraction_at(r, pos, true)) {
      pos += sink.add(pos + n);
      continue;
    }
    if (!(cpt == U'\r' || cpt == U'\n' || cls.is_number()) && (cls.is_letter() || r.cls(pos + 1).is_letter())) {
      ++pos; // [^\r\n\p{L}\p{N}]?\p{L}+
      while (r.cls(pos).is_letter()) ++pos;
      sink.add(pos);
      continue;
    }
    if (cls.is_number()) { // \p{N}{1,max_digits}
      std::size_t first = pos;
      while (r.cls(pos).is_number()) {
        if (++pos - first >= max_digits) {
          sink.add(pos);
          first = pos;
        }
      }
      sink.add(pos);
      continue;
    }
    cpt_class cls2 = cpt == U' ' ? r.cls(pos + 1) : cls;
    const auto other = [](cpt_class c) { return !(c.is_whitespace() || c.is_letter() || c.is_number()); };
    if (other(cls2) && !cls.is_none()) { // <space>?[^\s\p{L}\p{N}]+[\r\n]*
      pos += cpt == U' ';
      while (other(cls2) && !cls2.is_none()) cls2 = r.cls(++pos);
      for (char32_t c = r.cpt(pos); c == U'\r' || c == U'\n'; c = r.cpt(++pos)) {
      }
      sink.add(pos);
      continue;
    }
    std::size_t n_ws = 0, last_newline_end = 0;
    while (r.cls(pos + n_ws).is_whitespace()) {
      const char32_t c = r.cpt(pos + n_ws);
      if (c == U'\r' || c == U'\n') last_newline_end = pos + n_ws + 1;
      ++n_ws;
    }
    if (last_newline_end > 0) { // \s*[\r\n]+
      pos = last_newline_end;
      sink.add(pos);
      continue;
    }
    if (n_ws > 1 && r.cpt(pos + n_ws) != piece_reader::none) { // \s+(?!\S)
      pos += n_ws - 1;
      sink.add(pos);
      continue;
    }
    if (n_ws > 0) { // \s+
      pos += n_ws;
      sink.add(pos);
      continue;
    }
    sink.add(++pos);
  }
}

// llama.cpp's collapsed-regex class membership: ASCII code points use the fixed ASCII lists of
// unicode_regex_split (k_ucat_map), others their category unless they are whitespace.
inline bool collapsed_in(char32_t c, std::uint16_t category) {
  if (c < 128) {
    const auto in = [c](std::string_view set) { return set.find(static_cast<char>(c)) != std::string_view::npos; };
    switch (category) {
    case cpt_class::number: return c >= U'0' && c <= U'9';
    case cpt_class::letter: return (c >= U'A' && c <= U'Z') || (c >= U'a' && c <= U'z');
    case cpt_class::punctuation: return in("!\"#%&'()*,-./:;?@[\\]_{}");
    case cpt_class::symbol: return in("$+<=>^`|");
    default: return false;
    }
  }
  const cpt_class k = classify(c);
  return !k.is_whitespace() && k.category() == category;
}
// std::regex's \s on the collapsed text: the C locale's six ASCII spaces, and every non-ASCII
// White_Space code point (collapsed to \v).
inline bool collapsed_space(char32_t c) {
  return c < 128 ? (c == U' ' || (c >= U'\t' && c <= U'\r')) : classify(c).is_whitespace();
}

// Splits one piece into the matches of `match` (the length of the leftmost match starting at a
// position, 0 for none; no expression here matches the empty string) and the gaps between them,
// like a std::regex_iterator walk in unicode_regex_split_stl.
template <class Match>
void split_matches(const piece_reader &r, std::vector<std::size_t> &out, Match &&match) {
  std::size_t gap_begin = r.begin;
  for (std::size_t pos = r.begin; pos < r.end;) {
    const std::size_t n = match(r, pos);
    if (n == 0) {
      ++pos;
      continue;
    }
    if (pos > gap_begin) out.push_back(pos - gap_begin);
    out.push_back(n);
    pos += n;
    gap_begin = pos;
  }
  if (r.end > gap_begin) out.push_back(r.end - gap_begin);
}

// The helper expressions (match length at pos, 0 for none).
inline std::size_t match_run(const piece_reader &r, std::size_t pos, bool (*in)(char32_t)) {
  std::size_t n = 0;
  while (pos + n < r.end && in(r.cpts[pos + n])) ++n;
  return n;
}
inline bool is_number_c(char32_t c) { return collapsed_in(c, cpt_class::number); }
inline bool is_letter_c(char32_t c) { return collapsed_in(c, cpt_class::letter); }
inline bool is_punct_c(char32_t c) { return collapsed_in(c, cpt_class::punctuation); }
inline bool is_default_punct_c(char32_t c) { // [\p{P}\$\+<=>\^~\|]
  return collapsed_in(c, cpt_class::punctuation) || (c < 128 && std::string_view("$+<=>^~|").find(static_cast<char>(c)) != std::string_view::npos);
}
inline bool is_cjk_deepseek(char32_t c) { // [一-龥ࠀ-一가-퟿]
  return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x0800 && c <= 0x4E00) || (c >= 0xAC00 && c <= 0xD7FF);
}
inline std::size_t match_one_number(const piece_reader &r, std::size_t pos) { return is_number_c(r.cpts[pos]) ? 1 : 0; }
inline std::size_t match_number_run(const piece_reader &r, std::size_t pos) { return match_run(r, pos, is_number_c); }
inline std::size_t match_three_ascii_digits(const piece_reader &r, std::size_t pos) {
  const auto digit = [&](std::size_t i) { return i < r.end && r.cpts[i] >= U'0' && r.cpts[i] <= U'9'; };
  return digit(pos) && digit(pos + 1) && digit(pos + 2) ? 3 : 0;
}
// \s?X+ : an optional space, then at least one X (ECMAScript backtracks the space if no X follows).
inline std::size_t match_space_then_run(const piece_reader &r, std::size_t pos, bool (*in)(char32_t)) {
  if (collapsed_space(r.cpts[pos]) && pos + 1 < r.end) {
    if (const std::size_t n = match_run(r, pos + 1, in)) return n + 1;
  }
  return match_run(r, pos, in);
}

} // namespace detail

//! Splits code points `cpts` into words for byte-level BPE. Appends to `words` the length (in
//! code points) of each word, in order; the lengths sum to cpts.size(). `scratch` is reused
//! between calls so that steady-state tokenization does not allocate.
inline void pre_tokenize(pre_tokenizer kind, std::span<const char32_t> cpts, std::vector<std::size_t> &words,
                         std::vector<std::size_t> &scratch) {
  words.clear();
  if (cpts.empty()) return;
  words.push_back(cpts.size());
  // Applies one expression to every current piece.
  const auto pass = [&](auto &&split_piece) {
    scratch.clear();
    std::size_t begin = 0;
    for (const std::size_t len : words) {
      split_piece(detail::piece_reader{cpts, begin, begin + len}, scratch);
      begin += len;
    }
    words.swap(scratch);
  };
  const auto gpt2 = [](const detail::piece_reader &r, std::vector<std::size_t> &out) { detail::split_gpt2(r, out); };
  const auto regex = [](auto match) {
    return [match](const detail::piece_reader &r, std::vector<std::size_t> &out) { detail::split_matches(r, out, match); };
  };
  switch (kind) {
  case pre_tokenizer::default_bpe:
    pass(regex([](const detail::piece_reader &r, std::size_t p) { return detail::match_run(r, p, detail::is_default_punct_c); }));
    pass(gpt2);
    pass(regex(detail::match_number_run));
    pass(regex(detail::match_three_ascii_digits));
    break;
  case pre_tokenizer::gpt2: pass(gpt2); break;
  case pre_tokenizer::llama3:
    pass([](const detail::piece_reader &r, std::vector<std::size_t> &out) { detail::split_llama3(r, out, 3); });
    break;
  case pre_tokenizer::qwen2:
    pass([](const detail::piece_reader &r, std::vector<std::size_t> &out) { detail::split_llama3(r, out, 1); });
    break;
  case pre_tokenizer::smollm:
    pass(regex(detail::match_one_number));
    pass(gpt2);
    break;
  case pre_tokenizer::deepseek_coder:
    pass(regex([](const detail::piece_reader &r, std::size_t p) -> std::size_t { return r.cpts[p] == U'\r' || r.cpts[p] == U'\n'; }));
    pass(regex([](const detail::piece_reader &r, std::size_t p) { return detail::match_space_then_run(r, p, detail::is_letter_c); }));
    pass(regex([](const detail::piece_reader &r, std::size_t p) { return detail::match_space_then_run(r, p, detail::is_punct_c); }));
    pass(regex([](const detail::piece_reader &r, std::size_t p) { return detail::match_run(r, p, detail::is_cjk_deepseek); }));
    pass(regex(detail::match_one_number));
    break;
  }
}

//! Convenience for tests and tools: the words of UTF-8 `text` (decoded leniently, re-encoded).
inline std::vector<std::string> pre_tokenize_words(pre_tokenizer kind, std::string_view text) {
  std::vector<char32_t> cpts;
  decode_utf8_lenient(text, cpts);
  std::vector<std::size_t> words, scratch;
  pre_tokenize(kind, cpts, words, scratch);
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (const std::size_t len : words) {
    std::string w;
    for (std::size_t i = begin; i < begin + len; ++i) append_utf8(w, cpts[i]);
    out.push_back(std::move(w));
    begin += len;
  }
  return out;
}

DMS_NAMESPACE_END
