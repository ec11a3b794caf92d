// dms/tokenizer/unicode.hpp: the Unicode a tokenizer needs: lenient UTF-8 decoding, code point
// classes (\p{L}, \p{N}, \p{P}, \p{S}, \p{M}, \s) and GPT-2's byte <-> character mapping.
//
// Everything here reproduces llama.cpp's src/unicode.cpp bit for bit, because token ids must
// match the ones llama.cpp produces for the same text:
//  * Decoding never fails. A byte that does not start a well-formed sequence becomes U+FFFD and
//    decoding resumes at the next byte. Like llama.cpp, overlong forms and surrogates are not
//    rejected (C0 80 decodes to U+0000); unlike llama.cpp, a 4-byte form above U+10FFFF (lead
//    bytes F5..F7) becomes U+FFFD instead of throwing later, when the text is re-encoded.
//  * Classes come from the generated table in unicode_data.hpp (Unicode version named there);
//    \s is the White_Space property, not str.isspace().
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/tokenizer/unicode_data.hpp"

DMS_NAMESPACE_BEGIN

//! The class bits of one code point (llama.cpp's unicode_cpt_flags, minus case and NFD).
struct cpt_class {
  enum : std::uint16_t {
    undefined = 0x01,   //!< unassigned (Cn)
    number = 0x02,      //!< \p{N}
    letter = 0x04,      //!< \p{L}
    separator = 0x08,   //!< \p{Z}
    mark = 0x10,        //!< \p{M}
    punctuation = 0x20, //!< \p{P}
    symbol = 0x40,      //!< \p{S}
    control = 0x80,     //!< \p{C} other than Cn
    whitespace = 0x100, //!< \s (White_Space)
  };
  std::uint16_t bits = 0; //!< 0 only for "no code point" (a position outside the text)

  constexpr bool is_number() const noexcept { return bits & number; }
  constexpr bool is_letter() const noexcept { return bits & letter; }
  constexpr bool is_mark() const noexcept { return bits & mark; }
  constexpr bool is_punctuation() const noexcept { return bits & punctuation; }
  constexpr bool is_symbol() const noexcept { return bits & symbol; }
  constexpr bool is_whitespace() const noexcept { return bits & whitespace; }
  constexpr bool is_none() const noexcept { return bits == 0; }
  //! The single general-category bit (llama.cpp's category_flag()).
  constexpr std::uint16_t category() const noexcept { return bits & 0xFF; }
};

inline constexpr char32_t replacement_character = 0xFFFD;
inline constexpr char32_t max_code_point = 0x10FFFF;

namespace detail {
// Classes of the 128 ASCII code points, precomputed: most text is mostly ASCII and the range
// table costs a binary search per lookup.
inline std::array<cpt_class, 128> make_ascii_classes() noexcept;
} // namespace detail

//! The classes of `cpt`. Code points above U+10FFFF are "undefined", as in llama.cpp.
inline cpt_class classify(char32_t cpt) noexcept {
  static const std::array<cpt_class, 128> ascii = detail::make_ascii_classes();
  if (cpt < 128) return ascii[cpt];
  if (cpt > max_code_point) return {cpt_class::undefined};
  const auto *first = std::begin(detail::unicode_class_ranges), *last = std::end(detail::unicode_class_ranges);
  const auto *it = std::upper_bound(first, last, static_cast<std::uint32_t>(cpt),
                                    [](std::uint32_t c, const detail::unicode_class_range &r) { return c < r.start; });
  std::uint16_t bits = (it - 1)->classes;
  if (std::binary_search(std::begin(detail::unicode_whitespace), std::end(detail::unicode_whitespace),
                         static_cast<std::uint32_t>(cpt)))
    bits |= cpt_class::whitespace;
  return {bits};
}

namespace detail {
inline std::array<cpt_class, 128> make_ascii_classes() noexcept {
  std::array<cpt_class, 128> t{};
  for (std::uint32_t c = 0; c < 128; ++c) {
    const auto *it = std::upper_bound(std::begin(unicode_class_ranges), std::end(unicode_class_ranges), c,
                                      [](std::uint32_t x, const unicode_class_range &r) { return x < r.start; });
    std::uint16_t bits = (it - 1)->classes;
    if (std::binary_search(std::begin(unicode_whitespace), std::end(unicode_whitespace), c)) bits |= cpt_class::whitespace;
    t[c] = {bits};
  }
  return t;
}
} // namespace detail

//! Length of the UTF-8 sequence that lead byte `b` announces (1 for continuation and invalid
//! bytes): llama.cpp's unicode_len_utf8, used by SentencePiece and BPE to cut symbols.
constexpr std::size_t utf8_sequence_length(unsigned char b) noexcept {
  constexpr std::uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[b >> 4];
}

//! Decodes one code point at `offset` and advances it; a malformed sequence yields U+FFFD and
//! advances by one byte (llama.cpp's unicode_cpts_from_utf8).
inline char32_t decode_utf8_lenient(std::string_view s, std::size_t &offset) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(offset);
  const auto cont = [&](std::size_t i) { return offset + i < s.size() && (byte(offset + i) & 0xC0) == 0x80; };
  if (!(b0 & 0x80)) {
    offset += 1;
    return b0;
  }
  if ((b0 & 0x40) && !(b0 & 0x20) && cont(1)) {
    const char32_t c = (char32_t(b0 & 0x1F) << 6) | (byte(offset + 1) & 0x3F);
    offset += 2;
    return c;
  }
  if ((b0 & 0x60) == 0x60 && !(b0 & 0x10) && cont(1) && cont(2)) {
    const char32_t c = (char32_t(b0 & 0x0F) << 12) | (char32_t(byte(offset + 1) & 0x3F) << 6) | (byte(offset + 2) & 0x3F);
    offset += 3;
    return c;
  }
  if ((b0 & 0x70) == 0x70 && !(b0 & 0x08) && cont(1) && cont(2) && cont(3)) {
    const char32_t c = (char32_t(b0 & 0x07) << 18) | (char32_t(byte(offset + 1) & 0x3F) << 12) |
                       (char32_t(byte(offset + 2) & 0x3F) << 6) | (byte(offset + 3) & 0x3F);
    offset += 4;
    return c <= max_code_point ? c : replacement_character;
  }
  offset += 1;
  return replacement_character;
}

//! All code points of `s`, decoded leniently, appended to `out`.
inline void decode_utf8_lenient(std::string_view s, std::vector<char32_t> &out) {
  out.reserve(out.size() + s.size());
  for (std::size_t i = 0; i < s.size();) out.push_back(decode_utf8_lenient(s, i));
}

//! Appends the UTF-8 encoding of `cpt` (<= U+10FFFF; surrogates are encoded as-is, like llama.cpp).
inline void append_utf8(std::string &out, char32_t cpt) {
  if (cpt > max_code_point) cpt = replacement_character;
  if (cpt < 0x80) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

//! GPT-2's byte-level alphabet: every byte gets a printable code point so that a BPE vocabulary
//! can be stored as text. Printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to
//! themselves; the other 68 bytes map, in byte order, to U+0100, U+0101, ...
inline const std::array<char32_t, 256> &byte_to_unicode() noexcept {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    const auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) t[static_cast<std::size_t>(b)] = printable(b) ? static_cast<char32_t>(b) : next++;
    return t;
  }();
  return table;
}

//! The byte whose GPT-2 character is `cpt`, or -1 when `cpt` is not one of the 256.
inline int unicode_to_byte(char32_t cpt) noexcept {
  static const std::array<std::int16_t, 324> table = [] {
    std::array<std::int16_t, 324> t{};
    t.fill(-1);
    const auto &fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[fwd[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cpt < table.size() ? table[cpt] : -1;
}

DMS_NAMESPACE_END
