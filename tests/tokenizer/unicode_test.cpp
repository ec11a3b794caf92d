// Code point classes, lenient UTF-8 decoding and GPT-2's byte alphabet.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <dms/tokenizer/unicode.hpp>

using dms::classify;
using dms::cpt_class;

TEST_CASE("classify: general categories and White_Space as llama.cpp defines them", "[tokenizer][unicode]") {
  CHECK(classify(U'a').is_letter());
  CHECK(classify(U'Z').is_letter());
  CHECK(classify(U'7').is_number());
  CHECK(classify(0x0660).is_number());           // ARABIC-INDIC DIGIT ZERO (Nd)
  CHECK(classify(0x00BD).is_number());           // VULGAR FRACTION ONE HALF (No)
  CHECK(classify(0x00E9).is_letter());           // é
  CHECK(classify(0x4F60).is_letter());           // 你 (Lo)
  CHECK(classify(0x0301).is_mark());             // COMBINING ACUTE ACCENT
  CHECK(classify(U'!').is_punctuation());
  CHECK(classify(U'$').is_symbol());
  CHECK(classify(U'~').is_symbol());
  CHECK(classify(0x1F600).is_symbol());          // 😀 (So)
  CHECK(classify(0x200D).category() == cpt_class::control); // ZERO WIDTH JOINER (Cf)
  CHECK(classify(0xE000).category() == cpt_class::control); // private use (Co)
  CHECK(classify(0x0378).category() == cpt_class::undefined);
  CHECK(classify(0x110000).category() == cpt_class::undefined);
  for (char32_t c : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', char32_t{0x85}, char32_t{0xA0}, char32_t{0x3000}, char32_t{0x2009}})
    CHECK(classify(c).is_whitespace());
  for (char32_t c : {char32_t{0x1C}, char32_t{0x1F}, char32_t{0x200B}, U'a'}) CHECK_FALSE(classify(c).is_whitespace());
  CHECK(classify(0x3000).category() == cpt_class::separator);
  CHECK(classify(0x85).category() == cpt_class::control);
  CHECK_FALSE(cpt_class{}.is_whitespace());
  CHECK(cpt_class{}.is_none());
}

namespace {
std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  dms::decode_utf8_lenient(s, out);
  return out;
}
} // namespace

TEST_CASE("decode_utf8_lenient: malformed bytes become U+FFFD one byte at a time", "[tokenizer][unicode]") {
  CHECK(decode("a\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80") == std::vector<char32_t>{U'a', 0xE9, 0x4F60, 0x1F600});
  CHECK(decode("\xFF" "a") == std::vector<char32_t>{0xFFFD, U'a'});
  CHECK(decode("\x80\x80") == std::vector<char32_t>{0xFFFD, 0xFFFD});          // stray continuations
  CHECK(decode("\xE2\x82") == std::vector<char32_t>{0xFFFD, 0xFFFD});          // truncated 3-byte form
  CHECK(decode("\xC3" "A") == std::vector<char32_t>{0xFFFD, U'A'});            // lead without continuation
  CHECK(decode("\xC0\x80") == std::vector<char32_t>{0x0});                     // overlong accepted, like llama.cpp
  CHECK(decode("\xF5\x80\x80\x80") == std::vector<char32_t>{0xFFFD});          // above U+10FFFF
  std::string enc;
  for (char32_t c : {char32_t{0x24}, char32_t{0xA2}, char32_t{0x20AC}, char32_t{0x10348}}) dms::append_utf8(enc, c);
  CHECK(enc == "\x24\xC2\xA2\xE2\x82\xAC\xF0\x90\x8D\x88");
  CHECK(dms::utf8_sequence_length(0xF0) == 4);
  CHECK(dms::utf8_sequence_length(0x80) == 1);
}

TEST_CASE("GPT-2 byte alphabet: a bijection onto printable characters", "[tokenizer][unicode]") {
  const auto &m = dms::byte_to_unicode();
  CHECK(m[' '] == 0x120);  // Ġ
  CHECK(m['\n'] == 0x10A); // Ċ
  CHECK(m['A'] == U'A');
  CHECK(m[0xAD] == 0x143); // the soft hyphen is not printable
  for (int b = 0; b < 256; ++b) CHECK(dms::unicode_to_byte(m[static_cast<std::size_t>(b)]) == b);
  CHECK(dms::unicode_to_byte(U' ') == -1);
  CHECK(dms::unicode_to_byte(0x4F60) == -1);
}
