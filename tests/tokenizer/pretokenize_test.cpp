// Pre-tokenizer splitting, with expected words derived by hand from llama.cpp's matchers
// (src/unicode.cpp); the [peer] tests check the whole pipeline against llama.cpp itself.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <dms/tokenizer/pretokenize.hpp>

using dms::pre_tokenizer;
using words = std::vector<std::string>;

TEST_CASE("GPT-2 expression: contractions, letters, digits, whitespace runs, punctuation", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "Hello world's 123  foo\n\nbar!!") ==
        words{"Hello", " world", "'s", " 123", " ", " foo", "\n", "\n", "bar", "!!"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "I'M you're") == words{"I", "'", "M", " you", "'re"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "a   ") == words{"a", "   "});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "a\tb") == words{"a", "\t", "b"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "x\r\ny") == words{"x", "\r", "\n", "y"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "").empty());
}

TEST_CASE("GPT-2 expression on Unicode: CJK, accents, emoji, ZWJ, invalid bytes", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "hi \xE4\xBD\xA0\xE5\xA5\xBD!") ==
        words{"hi", " \xE4\xBD\xA0\xE5\xA5\xBD", "!"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "caf\xC3\xA9") == words{"caf\xC3\xA9"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "cafe\xCC\x81") == words{"cafe", "\xCC\x81"}); // a mark is not \p{L}
  // 👨‍👩‍👧 (So, ZWJ (Cf), So, ...) is one run of "other" characters; so is 👍🏽 (So + Sk).
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, " \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 ok") ==
        words{" \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", " ok"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "a\xFF" "b") == words{"a", "\xEF\xBF\xBD", "b"});
  // U+3000 (ideographic space) is whitespace, but only ASCII ' ' may lead a word.
  CHECK(dms::pre_tokenize_words(pre_tokenizer::gpt2, "a\xE3\x80\x80\xE3\x80\x80" "b") ==
        words{"a", "\xE3\x80\x80", "\xE3\x80\x80", "b"});
}

TEST_CASE("SmolLM / StarCoder: every digit alone, then GPT-2", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::smollm, "Hello world's 123  foo\n\nbar!!") ==
        words{"Hello", " world", "'s", " ", "1", "2", "3", " ", " foo", "\n", "\n", "bar", "!!"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::smollm, "x=3.14") == words{"x", "=", "3", ".", "1", "4"});
  // Arabic-Indic digits are \p{N} too.
  CHECK(dms::pre_tokenize_words(pre_tokenizer::smollm, "\xD9\xA1\xD9\xA2") == words{"\xD9\xA1", "\xD9\xA2"});
}

TEST_CASE("Llama-3: case-insensitive contractions, 3-digit groups, newline runs", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::llama3, "Hello world's 12345  foo\n\nbar!!\n") ==
        words{"Hello", " world", "'s", " ", "123", "45", " ", " foo", "\n\n", "bar", "!!\n"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::llama3, "I'M") == words{"I", "'M"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::llama3, "(hello)") == words{"(hello", ")"});
  CHECK(dms::pre_tokenize_words(pre_tokenizer::llama3, "a \n b") == words{"a", " \n", " b"});
}

TEST_CASE("Qwen2: Llama-3 with one digit per word", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::qwen2, "in 2024") == words{"in", " ", "2", "0", "2", "4"});
}

TEST_CASE("default pre-tokenizer: punctuation runs, GPT-2, digit runs, 3-digit groups", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::default_bpe, "a+b=3.14159") ==
        words{"a", "+", "b", "=", "3", ".", "141", "59"});
}

TEST_CASE("deepseek-coder: newlines, letters, punctuation, CJK, digits", "[tokenizer][pretokenize]") {
  CHECK(dms::pre_tokenize_words(pre_tokenizer::deepseek_coder, "int x1;\n") == words{"int", " x", "1", ";", "\n"});
}

TEST_CASE("pre-tokenizer names", "[tokenizer][pretokenize]") {
  CHECK(dms::find_pre_tokenizer("smollm")->kind == pre_tokenizer::smollm);
  CHECK_FALSE(dms::find_pre_tokenizer("smollm")->clean_spaces);
  CHECK(dms::find_pre_tokenizer("llama-bpe")->ignore_merges);
  CHECK(dms::find_pre_tokenizer("")->kind == pre_tokenizer::default_bpe);
  CHECK_FALSE(dms::find_pre_tokenizer("no-such-pre"));
  CHECK(dms::supported_pre_tokenizers().find("qwen2") != std::string::npos);
}
