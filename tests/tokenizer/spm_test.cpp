// SentencePiece-style (`tokenizer.ggml.model` = "llama") on a synthetic vocabulary.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include <dms/tokenizer/tokenizer.hpp>

#include "synthetic_vocab.hpp"

using dms::gguf_token_type;
using dms::token_id;
using ids = std::vector<token_id>;

namespace {
// <unk> <s> </s>, 256 byte tokens, then pieces whose scores make longer pieces win.
dms::test::vocab_spec spm_vocab() {
  dms::test::vocab_spec v;
  v.model = "llama";
  v.pre = "";
  v.add("<unk>", gguf_token_type::unknown);
  v.add("<s>", gguf_token_type::control);
  v.add("</s>", gguf_token_type::control);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.add(buf, gguf_token_type::byte);
  }
  const char *pieces[] = {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d", "\xE2\x96\x81h", "\xE2\x96\x81he", "ll", "llo",
                          "\xE2\x96\x81hello", "\xE2\x96\x81w", "or", "\xE2\x96\x81wor", "ld", "\xE2\x96\x81world", "<b>"};
  float score = -20.0f;
  for (const char *p : pieces) v.add(p, gguf_token_type::normal, score += 1.0f); // later = higher score
  return v;
}
const std::string sp = "\xE2\x96\x81"; // U+2581
} // namespace

TEST_CASE("SPM: score-ordered merges, space prefix, BOS", "[tokenizer][spm]") {
  const auto spec = spm_vocab();
  const auto tok = spec.load();
  CHECK(tok.kind() == dms::vocab_kind::spm);
  CHECK(tok.add_bos());
  CHECK(tok.add_space_prefix());
  const token_id hello = spec.id(sp + "hello"), world = spec.id(sp + "world");
  CHECK(tok.encode("hello world") == ids{1, hello, world});
  CHECK(tok.encode("hello world", false) == ids{hello, world});
  // The first token's added space is removed on decode, unless a BOS came first (llama_detokenize).
  CHECK(tok.decode(ids{hello, world}) == "hello world");
  CHECK(tok.decode(ids{1, hello, world}) == " hello world");
  CHECK(tok.decode(ids{1, hello, world}, true) == "<s> hello world");
  CHECK(tok.encode("", true) == ids{1});
}

TEST_CASE("SPM: byte fallback for characters without a piece", "[tokenizer][spm]") {
  const auto spec = spm_vocab();
  const auto tok = spec.load();
  // "é" = C3 A9 -> <0xC3> <0xA9> (after the ▁ prefix piece).
  CHECK(tok.encode("\xC3\xA9", false) == ids{spec.id(sp), spec.id("<0xC3>"), spec.id("<0xA9>")});
  CHECK(tok.decode(tok.encode("\xC3\xA9 ok\n", false)) == "\xC3\xA9 ok\n");
  CHECK(tok.piece(spec.id("<0x0A>")) == "\n");
}

TEST_CASE("SPM: special tokens and the space prefix after them", "[tokenizer][spm][special]") {
  const auto spec = spm_vocab();
  const auto tok = spec.load();
  const token_id hello = spec.id(sp + "hello");
  // After a special token the text gets the prefix space again (is_prev_special).
  CHECK(tok.encode("</s>hello", false, true) == ids{2, hello});
  CHECK(tok.encode("<unk>", false, true) == ids{0});
  CHECK(tok.decode(ids{0}) == "");
  CHECK(tok.decode(ids{0}, true) == "<unk>");
}

TEST_CASE("SPM: add_space_prefix = false", "[tokenizer][spm]") {
  auto spec = spm_vocab();
  spec.extra.emplace_back("tokenizer.ggml.add_space_prefix", false);
  const auto tok = spec.load();
  CHECK(tok.encode("hello", false) == ids{spec.id("h"), spec.id("e"), spec.id("llo")});
}

TEST_CASE("SPM: a byte with no fallback token is an error", "[tokenizer][spm][errors]") {
  dms::test::vocab_spec v;
  v.model = "llama";
  v.pre = "";
  v.add("<unk>", gguf_token_type::unknown);
  v.add("<s>", gguf_token_type::control);
  v.add("</s>", gguf_token_type::control);
  v.add("a");
  v.extra.emplace_back("tokenizer.ggml.add_space_prefix", false);
  const auto tok = v.load();
  CHECK_THROWS_WITH(tok.encode("b", false), Catch::Contains("no byte-fallback token '<0x62>'"));
}
