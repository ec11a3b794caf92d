// The generation loop on a deterministic fake backend: stop rules, streaming, batching, hooks,
// context limits and errors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <dms/model/generate.hpp>

#include "alloc_counter.hpp"
#include "fake_model.hpp"

namespace {

using dms::generation_request;
using dms::stop_reason;
using dms::token_id;
using dms::test::fake_model;
using dms::test::fake_vocab;

constexpr std::int32_t n_vocab = 16;

generation_request greedy(std::vector<token_id> prompt, std::int32_t max_tokens) {
  generation_request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  return r;
}

//! Every piece handed to the callback, per request.
struct recorder {
  std::vector<std::string> text;
  std::vector<std::vector<std::string>> pieces;
  std::vector<std::vector<token_id>> tokens;
  explicit recorder(std::size_t n) : text(n), pieces(n), tokens(n) {}
  bool operator()(std::size_t r, token_id t, std::string_view piece) {
    text[r] += piece;
    pieces[r].emplace_back(piece);
    tokens[r].push_back(t);
    return true;
  }
};

//! next[t] for a fake chain model: a -> b -> c -> a (tokens 1, 2, 3), the rest given.
std::vector<token_id> cycle_abc() {
  std::vector<token_id> next(n_vocab);
  std::iota(next.begin(), next.end(), 0);
  next[1] = 2;
  next[2] = 3;
  next[3] = 1;
  return next;
}

} // namespace

TEST_CASE("generate: max_tokens, eog and stop tokens", "[generate]") {
  const fake_vocab vocab;
  auto next = cycle_abc();
  fake_model model(n_vocab, 64, 4, fake_model::chain(next));
  auto r = greedy({4, 1}, 7); // "hello" "a" -> b c a b c a b
  auto out = dms::generate(model, vocab, r);
  CHECK(out.tokens == std::vector<token_id>{2, 3, 1, 2, 3, 1, 2});
  CHECK(out.text == "bcabcab");
  CHECK(out.stop == stop_reason::max_tokens);
  CHECK(out.n_prompt == 2);
  CHECK(model.forwards == 7); // prefill + 6 decode steps: the last token is never fed back
  CHECK(model.seq_length(0) == 8);

  r.stop_tokens = {1};
  out = dms::generate(model, vocab, r);
  CHECK(out.tokens == std::vector<token_id>{2, 3, 1}); // kept in tokens ...
  CHECK(out.text == "bc");                             // ... not in text
  CHECK(out.stop == stop_reason::stop_token);

  next[3] = 0; // c -> <eos>
  fake_model eos_model(n_vocab, 64, 1, fake_model::chain(next));
  r.stop_tokens.clear();
  out = dms::generate(eos_model, vocab, r);
  CHECK(out.tokens == std::vector<token_id>{2, 3, 0});
  CHECK(out.text == "bc");
  CHECK(out.stop == stop_reason::eog);
  r.stop_at_eog = false; // then <eos> is just a token: its piece is text, generation goes on
  r.max_tokens = 4;
  out = dms::generate(eos_model, vocab, r);
  CHECK(out.tokens == std::vector<token_id>{2, 3, 0, 0});
  CHECK(out.text == "bc<eos><eos>");
  CHECK(out.stop == stop_reason::max_tokens);
}

TEST_CASE("generate: a stop string across tokens is cut and never streamed", "[generate]") {
  const fake_vocab vocab;
  const auto id = [&](const char *p) { return vocab.id(p); };
  // hello -> " world" -> "<" -> "/" -> "s" -> ">" -> "!" : the text "hello world</s>!"
  std::vector<token_id> next(n_vocab);
  std::iota(next.begin(), next.end(), 0);
  next[id("hello")] = id(" world");
  next[id(" world")] = id("<");
  next[id("<")] = id("/");
  next[id("/")] = id("s");
  next[id("s")] = id(">");
  next[id(">")] = id("!");
  next[id("!")] = id("!");
  fake_model model(n_vocab, 64, 1, fake_model::chain(next));

  auto r = greedy({id("a"), id("hello")}, 20);
  r.stop_strings = {"</s>", "never"};
  recorder rec(1);
  dms::no_hooks none;
  auto out = dms::generate(model, vocab, std::span(&r, 1), none, std::ref(rec))[0];
  CHECK(out.text == " world");
  CHECK(out.stop == stop_reason::stop_string);
  CHECK(out.tokens.size() == 5); // " world" "<" "/" "s" ">": the token that completed the match is kept
  CHECK(rec.text[0] == " world");
  REQUIRE(rec.pieces[0].size() == 5); // one call per token
  CHECK(rec.pieces[0][0] == " world");
  for (const auto &piece : rec.pieces[0]) CHECK(piece.find('<') == std::string::npos);

  // A partial match that does not complete is held back, then released.
  next[id("/")] = id("x"); // "<" "/" "x": not "</s>"
  fake_model model2(n_vocab, 64, 1, fake_model::chain(next));
  r.max_tokens = 5;
  recorder rec2(1);
  out = dms::generate(model2, vocab, std::span(&r, 1), none, std::ref(rec2))[0];
  CHECK(out.text == " world</xx");
  CHECK(out.stop == stop_reason::max_tokens);
  CHECK(rec2.text[0] == out.text);
  REQUIRE(rec2.pieces[0].size() == 5);
  CHECK(rec2.pieces[0][1].empty());      // "<" may start "</s>": held
  CHECK(rec2.pieces[0][2].empty());      // "</" still may
  CHECK(rec2.pieces[0][3] == "</x");     // released with "x"

  // A stop string inside one token's piece, after earlier text of the same token.
  auto r3 = greedy({id("a"), id("hello")}, 20);
  r3.stop_strings = {"orl"};
  fake_model model3(n_vocab, 64, 1, fake_model::chain(next));
  out = dms::generate(model3, vocab, r3);
  CHECK(out.text == " w");
  CHECK(out.stop == stop_reason::stop_string);
  CHECK(out.tokens.size() == 1);
}

TEST_CASE("generate: a UTF-8 character split over tokens is streamed whole", "[generate]") {
  const fake_vocab vocab;
  std::vector<token_id> next(n_vocab);
  std::iota(next.begin(), next.end(), 0);
  next[vocab.id("a")] = vocab.id("\xC3");
  next[vocab.id("\xC3")] = vocab.id("\xA9");
  next[vocab.id("\xA9")] = vocab.id("a");
  fake_model model(n_vocab, 64, 1, fake_model::chain(next));
  auto r = greedy({vocab.id("a")}, 6);
  recorder rec(1);
  dms::no_hooks none;
  auto out = dms::generate(model, vocab, std::span(&r, 1), none, std::ref(rec))[0];
  CHECK(out.text == "\xC3\xA9" "a\xC3\xA9" "a");
  CHECK(rec.pieces[0] == std::vector<std::string>{"", "\xC3\xA9", "a", "", "\xC3\xA9", "a"});
  // A request that ends mid-character streams the lone byte at the end rather than losing it.
  r.max_tokens = 4;
  recorder rec2(1);
  out = dms::generate(model, vocab, std::span(&r, 1), none, std::ref(rec2))[0];
  CHECK(rec2.text[0] == "\xC3\xA9" "a\xC3");
  CHECK(out.text == rec2.text[0]);
}

TEST_CASE("generate: the callback stops its own request only", "[generate]") {
  const fake_vocab vocab;
  fake_model model(n_vocab, 64, 2, fake_model::chain(cycle_abc()));
  std::vector<generation_request> rs{greedy({1}, 10), greedy({2}, 10)};
  std::vector<int> calls(2);
  auto on_token = [&](std::size_t r, token_id, std::string_view) { return ++calls[r] < 3 || r == 1; };
  dms::no_hooks none;
  auto out = dms::generate(model, vocab, rs, none, on_token);
  CHECK(out[0].stop == stop_reason::callback);
  CHECK(out[0].tokens.size() == 3);
  CHECK(out[1].stop == stop_reason::max_tokens);
  CHECK(out[1].tokens.size() == 10);
  CHECK(calls == std::vector<int>{3, 10});
}

TEST_CASE("generate: a batch gives each request exactly what it gets alone", "[generate]") {
  const fake_vocab vocab;
  std::vector<generation_request> rs{greedy({1, 2, 3, 4}, 12), greedy({5}, 3), greedy({7, 7}, 20)};
  rs[0].sampling = {}; // llama.cpp's default chain, seed 0
  rs[2].sampling.temperature = 1.3f;
  rs[2].sampling.top_k = 0;
  rs[2].sampling.seed = 99;
  for (auto &r : rs) r.stop_at_eog = false; // smooth logits make <eos> likely somewhere

  fake_model batched(n_vocab, 64, 3, fake_model::smooth());
  recorder rec(3);
  dms::no_hooks none;
  const auto together = dms::generate(batched, vocab, rs, none, std::ref(rec));
  for (std::size_t i = 0; i < rs.size(); ++i) {
    CHECK(together[i].tokens.size() == static_cast<std::size_t>(rs[i].max_tokens));
    CHECK(rec.tokens[i] == together[i].tokens);
    CHECK(rec.text[i] == together[i].text);
  }
  // One prefill of all 7 prompt tokens, then one token per running request per round.
  REQUIRE(batched.forwards == 20);
  CHECK(batched.batch_sizes[0] == 7);
  CHECK(batched.batch_sizes[2] == 3);  // request 1 samples its 3rd token here ...
  CHECK(batched.batch_sizes[3] == 2);  // ... and is gone
  CHECK(batched.batch_sizes[11] == 2); // request 0 samples its 12th token here ...
  CHECK(batched.batch_sizes[12] == 1); // ... and is gone

  // Alone: request 0 keeps its stream (sequence 0); greedy request 1 needs none.
  for (std::size_t i : {0u, 1u}) {
    fake_model alone(n_vocab, 64, 1, fake_model::smooth());
    CHECK(dms::generate(alone, vocab, rs[i]).tokens == together[i].tokens);
  }
  // Sampled requests draw from (seed, request index, step): changing the others, or where in the
  // batch they stop, changes nothing for them.
  auto others = rs;
  others[1] = greedy({9, 9, 9, 9, 9}, 30);
  fake_model shuffled(n_vocab, 64, 3, fake_model::smooth());
  const auto again = dms::generate(shuffled, vocab, others);
  CHECK(again[0].tokens == together[0].tokens);
  CHECK(again[2].tokens == together[2].tokens);
  // ... and a different seed does change the sample.
  others[2].sampling.seed = 100;
  fake_model reseeded(n_vocab, 64, 3, fake_model::smooth());
  CHECK(dms::generate(reseeded, vocab, others)[2].tokens != together[2].tokens);
}

TEST_CASE("generate: hooks see every forward", "[generate]") {
  // A hook at the logits site that forces token 13 ("!"): a stand-in for a steering policy.
  struct force_token {
    int calls = 0;
    std::int64_t rows = 0;
    bool wants(dms::hook_point p) const { return p.where == dms::site::logits; }
    void operator()(dms::activation_block &b) {
      ++calls;
      rows += b.rows.rows;
      for (std::int64_t r = 0; r < b.rows.rows; ++r) b.rows(r, 13) = 1000.0f;
    }
  };
  const fake_vocab vocab;
  fake_model model(n_vocab, 64, 2, fake_model::smooth());
  std::vector<generation_request> rs{greedy({1, 2}, 5), greedy({3}, 4)};
  rs[1].sampling = {};
  force_token hooks;
  const auto out = dms::generate(model, vocab, rs, hooks);
  CHECK(out[0].text == "!!!!!");
  CHECK(out[1].text == "!!!!");
  CHECK(hooks.calls == model.forwards);
  CHECK(hooks.rows == 9); // one logits row per sampled token
}

TEST_CASE("generate: context limits and bad requests", "[generate]") {
  const fake_vocab vocab;
  fake_model model(n_vocab, 8, 2, fake_model::chain(cycle_abc()));
  using Catch::Contains;

  auto r = greedy({1, 2, 3, 1, 2, 3, 1, 2, 3}, 4);
  CHECK_THROWS_WITH(dms::generate(model, vocab, r), Contains("the prompt has 9 tokens, more than the context of 8"));
  r.prompt.pop_back(); // exactly n_ctx: one token, which cannot be fed back
  auto out = dms::generate(model, vocab, r);
  CHECK(out.tokens.size() == 1);
  CHECK(out.stop == stop_reason::context_full);
  r.prompt.resize(5);
  r.max_tokens = 10; // positions 5, 6, 7 take three generated tokens; the fourth ends it
  out = dms::generate(model, vocab, r);
  CHECK(out.tokens.size() == 4);
  CHECK(out.stop == stop_reason::context_full);
  CHECK(model.seq_length(0) == 8);
  r.max_tokens = std::numeric_limits<std::int32_t>::max(); // buffers are sized by the context, not by this
  out = dms::generate(model, vocab, r);
  CHECK(out.tokens.size() == 4);
  CHECK(out.stop == stop_reason::context_full);

  CHECK_THROWS_WITH(dms::generate(model, vocab, greedy({}, 4)), Contains("request 0: empty prompt"));
  CHECK_THROWS_WITH(dms::generate(model, vocab, greedy({1}, 0)), Contains("max_tokens must be >= 1"));
  CHECK_THROWS_WITH(dms::generate(model, vocab, greedy({16}, 1)), Contains("prompt token 16 is outside"));
  auto s = greedy({1}, 4);
  s.stop_strings = {""};
  CHECK_THROWS_WITH(dms::generate(model, vocab, s), Contains("empty stop string"));
  std::vector<generation_request> two{greedy({1}, 4), greedy({1}, 4)};
  two[1].sampling.top_p = 0.0f;
  CHECK_THROWS_WITH(dms::generate(model, vocab, two), Contains("request 1: sampling: top_p"));
  CHECK_THROWS_WITH(dms::generate(model, vocab, std::span<const generation_request>{}), Contains("no requests"));
  std::vector<generation_request> three{greedy({1}, 4), greedy({1}, 4), greedy({1}, 4)};
  CHECK_THROWS_WITH(dms::generate(model, vocab, three), Contains("no sequence 2")); // the backend's own error
}

TEST_CASE("generate: allocations do not grow with the number of tokens", "[generate]") {
  const fake_vocab vocab;
  fake_model model(n_vocab, 512, 3, fake_model::smooth());
  std::vector<generation_request> rs{greedy({1, 2}, 8), greedy({3}, 8), greedy({4, 5, 6}, 8)};
  for (auto &r : rs) {
    r.sampling = {};
    r.stop_at_eog = false;
    r.stop_strings = {"zzz"};
  }
  dms::no_hooks none;
  std::size_t bytes = 0;
  auto count = [&](std::int32_t max_tokens) {
    for (auto &r : rs) r.max_tokens = max_tokens;
    dms::test::counting_scope allocations;
    dms::generate(model, vocab, rs, none, [&](std::size_t, token_id, std::string_view piece) {
      bytes += piece.size();
      return true;
    });
    return allocations.count();
  };
  count(8); // warm-up of the fake backend's buffers
  const auto few = count(8);
  const auto many = count(200);
  CHECK(bytes > 0);
  CHECK(few > 0); // the counter is live: the loop's own buffers are counted
  CHECK(many == few);
}
