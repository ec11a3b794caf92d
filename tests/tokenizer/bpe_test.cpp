// Byte-level BPE on synthetic vocabularies: merge order, special tokens, BOS/EOS, decoding, and
// clear errors for broken vocabularies.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <dms/tokenizer/tokenizer.hpp>

#include "synthetic_vocab.hpp"

using dms::token_id;
using dms::test::bpe_vocab;
using dms::test::gpt2_text;
using ids = std::vector<token_id>;

namespace {
dms::test::vocab_spec hello_vocab(std::string pre = "smollm") {
  return bpe_vocab({{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"o", "r"}, {" w", "or"},
                    {"l", "d"}, {" wor", "ld"}, {"1", "2"}},
                   std::move(pre));
}
} // namespace

TEST_CASE("BPE merges by rank, within pre-tokenized words", "[tokenizer][bpe]") {
  const auto spec = hello_vocab();
  const auto tok = spec.load();
  const token_id hello = spec.id(gpt2_text("hello")), world = spec.id(gpt2_text(" world"));
  CHECK(tok.encode("hello world") == ids{hello, world});
  CHECK(tok.decode(ids{hello, world}) == "hello world");
  // "12" is a merge, but smollm splits digits first: two byte tokens.
  const token_id one = spec.id(gpt2_text("1")), two = spec.id(gpt2_text("2"));
  CHECK(tok.encode("12") == ids{one, two});
  CHECK(spec.load().encode("12").size() == 2);
  // The gpt2 pre-tokenizer keeps "12" together, so the merge applies.
  CHECK(hello_vocab("gpt-2").load().encode("12") == ids{spec.id(gpt2_text("12"))});
  // No merge: one token per byte, including every byte of a multi-byte character.
  const auto e_acute = tok.encode("\xC3\xA9");
  CHECK(e_acute == ids{spec.id(dms::test::gpt2_char(0xC3)), spec.id(dms::test::gpt2_char(0xA9))});
  CHECK(tok.decode(e_acute) == "\xC3\xA9");
}

TEST_CASE("BPE: the lowest rank wins, ties go to the leftmost pair", "[tokenizer][bpe]") {
  // "abc": "b c" (rank 0) beats "a b" (rank 1) -> a + bc.
  const auto spec = bpe_vocab({{"b", "c"}, {"a", "b"}});
  CHECK(spec.load().encode("abc") == ids{spec.id("a"), spec.id("bc")});
  // "aaa": the same pair twice; the leftmost merges first -> aa + a.
  const auto spec2 = bpe_vocab({{"a", "a"}});
  CHECK(spec2.load().encode("aaa") == ids{spec2.id("aa"), spec2.id("a")});
}

TEST_CASE("BPE: Llama-3 takes a word that is a token whole (ignore_merges)", "[tokenizer][bpe]") {
  auto spec = bpe_vocab({{"a", "b"}}, "llama-bpe");
  const token_id abc = spec.add("abc"); // a token no merge produces
  const auto tok = spec.load();
  CHECK(tok.encode("abc", false) == ids{abc});
  CHECK(bpe_vocab({{"a", "b"}}, "smollm").load().encode("abc").size() == 2);
  // llama-bpe defaults add_bos to true when the file does not say.
  CHECK(tok.add_bos());
  CHECK(tok.encode("abc") == ids{1, abc});
}

TEST_CASE("BPE special tokens: parse_special, user-defined tokens, BOS/EOS flags", "[tokenizer][bpe][special]") {
  auto spec = hello_vocab();
  spec.extra.emplace_back("tokenizer.ggml.add_bos_token", true);
  spec.extra.emplace_back("tokenizer.ggml.add_eos_token", true);
  const auto tok = spec.load();
  const token_id hello = spec.id(gpt2_text("hello"));
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK(tok.encode("hello", true) == ids{1, hello, 2});
  CHECK(tok.encode("hello", false) == ids{hello});
  CHECK(tok.encode("", true) == ids{1, 2});
  // With parse_special the control token's text is the token; without, it is plain text.
  CHECK(tok.encode("<|im_start|>hello", false, true) == ids{1, hello});
  const auto plain = tok.encode("<|im_start|>hello", false, false);
  CHECK(plain.size() > 2);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
  CHECK(tok.decode(plain) == "<|im_start|>hello");
  // A user-defined token is matched either way.
  CHECK(tok.encode("hello<tool>", false, false) == ids{hello, 3});
  // Longest special token first: "<|im_end|>" inside a longer run of text.
  CHECK(tok.encode("<|im_end|><|im_end|>", false, true) == ids{2, 2});
  // Control tokens render only when asked.
  CHECK(tok.decode(ids{1, hello, 2}) == "hello");
  CHECK(tok.decode(ids{1, hello, 2}, true) == "<|im_start|>hello<|im_end|>");
  CHECK(tok.piece(1).empty());
  CHECK(tok.piece(3) == "<tool>");
  CHECK(tok.token_text(hello) == "hello");
  CHECK(tok.is_control(0));
  CHECK_FALSE(tok.is_control(hello));
  // End of generation: eos, plus every token llama.cpp stops on by its text.
  CHECK(tok.is_eog(2));
  CHECK(tok.is_eog(0)); // <|endoftext|>
  CHECK_FALSE(tok.is_eog(1));
  REQUIRE(tok.eot().has_value());
  CHECK(*tok.eot() == 2); // <|im_end|> is preferred over <|endoftext|>
}

TEST_CASE("BPE decode: byte-level pieces, clean-up of spaces, bad ids", "[tokenizer][bpe]") {
  const auto spec = hello_vocab("gpt-2"); // gpt-2 cleans up spaces, like llama_detokenize
  const auto tok = spec.load();
  for (const std::string text : {"hello world", "a\tb\n\nc", "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80", "x  y   "})
    CHECK(tok.decode(tok.encode(text)) == text);
  CHECK(tok.decode(tok.encode("hi , there !")) == "hi, there!");
  CHECK(tok.decode(tok.encode("it 's")) == "it's");
  CHECK(tok.decode(tok.encode("a ' b")) == "a'b");
  CHECK(hello_vocab("smollm").load().decode(tok.encode("hi , there")) == "hi , there"); // smollm does not clean
  CHECK_THROWS_WITH(tok.decode(ids{99999}), Catch::Contains("token id 99999 is out of range"));
  CHECK_THROWS_WITH(tok.token_text(-1), Catch::Contains("out of range"));
  // Malformed UTF-8 reaches BPE as U+FFFD, as in llama.cpp.
  CHECK(tok.decode(tok.encode("a\xFF")) == "a\xEF\xBF\xBD");
}

TEST_CASE("incremental_decoder: multi-byte characters split across tokens", "[tokenizer][bpe]") {
  const auto spec = hello_vocab();
  const auto tok = spec.load();
  const std::string text = "h\xC3\xA9llo \xF0\x9F\x98\x80!"; // é (2 bytes), 😀 (4 bytes): one token per byte
  const auto tokens = tok.encode(text);
  dms::incremental_decoder dec(tok);
  std::string streamed;
  for (token_id id : tokens) {
    const std::string part = dec.push(id);
    // Never a partial character: each output is valid UTF-8 on its own.
    std::vector<char32_t> cpts;
    dms::decode_utf8_lenient(part, cpts);
    for (char32_t c : cpts) CHECK(c != 0xFFFD);
    streamed += part;
  }
  streamed += dec.flush();
  CHECK(streamed == text);
  // A truncated stream gives its incomplete bytes back on flush.
  dms::incremental_decoder dec2(tok);
  CHECK(dec2.push(spec.id(dms::test::gpt2_char(0xF0))).empty());
  CHECK(dec2.push(spec.id(dms::test::gpt2_char(0x9F))).empty());
  CHECK(dec2.flush() == "\xF0\x9F");
}

TEST_CASE("BPE vocabularies that are broken give errors naming the problem", "[tokenizer][bpe][errors]") {
  SECTION("a merge naming a token that does not exist") {
    auto spec = hello_vocab();
    spec.merges.push_back("q zz");
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("tokenizer.ggml.merges[10] 'q zz'") && Catch::Contains("'zz' is not in the vocabulary"));
  }
  SECTION("a merge without a space") {
    auto spec = hello_vocab();
    spec.merges.push_back("abc");
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("expected two tokens separated by a space"));
  }
  SECTION("a special id out of range") {
    auto spec = hello_vocab();
    spec.extra.emplace_back("tokenizer.ggml.eos_token_id", std::uint32_t{70000});
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("tokenizer.ggml.eos_token_id") && Catch::Contains("70000 is out of range"));
  }
  SECTION("an unknown pre-tokenizer lists the supported ones") {
    auto spec = hello_vocab("no-such-pre");
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("tokenizer.ggml.pre 'no-such-pre' is not supported") &&
                                       Catch::Contains("smollm") && Catch::Contains("llama3"));
  }
  SECTION("an unknown tokenizer model") {
    auto spec = hello_vocab();
    spec.model = "bert";
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("tokenizer.ggml.model 'bert' is not supported"));
  }
  SECTION("duplicate tokens") {
    auto spec = hello_vocab();
    spec.add("hello");
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("duplicate token"));
  }
  SECTION("fewer token types than tokens") {
    auto spec = hello_vocab();
    spec.types.pop_back();
    CHECK_THROWS_WITH(spec.load(), Catch::Contains("tokenizer.ggml.token_type has"));
  }
  SECTION("no merges") {
    auto spec = hello_vocab();
    spec.model = "gpt2";
    dms::gguf_writer w;
    w.set("tokenizer.ggml.model", "gpt2");
    w.set("tokenizer.ggml.tokens", dms::gguf_value(dms::gguf_array(spec.tokens)));
    auto b = w.header_bytes();
    b.resize((b.size() + 31) / 32 * 32);
    CHECK_THROWS_WITH(dms::tokenizer::from_gguf(dms::gguf_file::parse(b, "nomerges.gguf")),
                      Catch::Contains("nomerges.gguf") && Catch::Contains("tokenizer.ggml.merges"));
  }
  SECTION("no tokenizer at all") {
    dms::gguf_writer w;
    w.set("general.architecture", "llama");
    auto b = w.header_bytes();
    b.resize((b.size() + 31) / 32 * 32);
    CHECK_THROWS_WITH(dms::tokenizer::from_gguf(dms::gguf_file::parse(b, "empty.gguf")),
                      Catch::Contains("empty.gguf") && Catch::Contains("no tokenizer"));
  }
}
