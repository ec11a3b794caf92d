// dms/steer/evaluation.hpp on a tiny random Llama and by hand: the substring rule, KL (0 without
// steering, > 0 with it, equal to a hand computation), perplexity (exp of the mean NLL from the
// forward logits, windows included), arithmetic exact match and the alpha sweep.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/model/generate.hpp"
#include "dms/model/llama.hpp"
#include "dms/steer/evaluation.hpp"
#include "model/tiny_model.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using dms::token_id;

namespace {

constexpr std::int64_t n_embd = 64; // tiny_config's default

struct tiny_fixture {
  fs::path dir = dms::test::scratch_dir("dms-eval", "tiny");
  tiny_fixture() { dms::test::write_gguf(dms::test::make_tiny({}), dir / "model.gguf", dms::ggml_type::f32); }
  ~tiny_fixture() { fs::remove_all(dir); }
  dms::llama_model load(std::int32_t n_seq = 4) const {
    return dms::llama_model::load(dir / "model.gguf", {.n_ctx = 48, .n_seq_max = n_seq, .n_threads = 1});
  }
};

//! A toy tokenizer over the tiny model's 100 tokens: 0-9 are digits, 10 a space, 11 a newline,
//! the rest "<t>". encode() maps digits, space and newline back, other bytes to 12 + byte % 88.
struct toy_tokenizer {
  std::vector<std::string> pieces;
  toy_tokenizer() {
    for (int t = 0; t < 100; ++t)
      pieces.push_back(t < 10 ? std::string(1, static_cast<char>('0' + t)) : t == 10 ? " " : t == 11 ? "\n" : "<" + std::to_string(t) + ">");
  }
  std::string_view piece(token_id t) const { return pieces[static_cast<std::size_t>(t)]; }
  bool is_eog(token_id) const { return false; }
  std::string decode(std::span<const token_id> ids) const {
    std::string s;
    for (token_id t : ids) s += piece(t);
    return s;
  }
  std::vector<token_id> encode(std::string_view text) const {
    std::vector<token_id> ids;
    for (char ch : text) {
      const auto c = static_cast<unsigned char>(ch);
      ids.push_back(c >= '0' && c <= '9' ? c - '0' : c == ' ' ? 10 : c == '\n' ? 11 : 12 + c % 88);
    }
    return ids;
  }
};
static_assert(dms::vocabulary<toy_tokenizer>);

std::vector<token_id> greedy(dms::llama_model &m, const std::vector<token_id> &prompt, std::int32_t n) {
  dms::generation_request r;
  r.prompt = prompt;
  r.sampling.temperature = 0.0f;
  r.max_tokens = n;
  return dms::generate(m, toy_tokenizer{}, r).tokens;
}

std::vector<std::vector<double>> log_softmax_rows(dms::matrix_view<const float> logits) {
  std::vector<std::vector<double>> out;
  for (std::int64_t r = 0; r < logits.rows; ++r) {
    std::vector<double> row(static_cast<std::size_t>(logits.cols));
    double mx = -1e300, z = 0.0;
    for (std::int64_t v = 0; v < logits.cols; ++v) mx = std::max(mx, static_cast<double>(logits.row(r)[v]));
    for (std::int64_t v = 0; v < logits.cols; ++v) z += std::exp(logits.row(r)[v] - mx);
    for (std::int64_t v = 0; v < logits.cols; ++v) row[static_cast<std::size_t>(v)] = logits.row(r)[v] - mx - std::log(z);
    out.push_back(std::move(row));
  }
  return out;
}

//! Log-softmax of every position of `tokens` run from an empty sequence 0, under `hooks`.
template <class Hooks>
std::vector<std::vector<double>> all_positions(dms::llama_model &m, std::span<const token_id> tokens, Hooks &hooks) {
  m.clear(0);
  std::vector<dms::token_slot> slots;
  for (std::size_t i = 0; i < tokens.size(); ++i) slots.push_back({0, static_cast<std::int32_t>(i), true});
  auto rows = log_softmax_rows(m.forward(dms::token_batch{tokens, slots}, hooks));
  m.clear(0);
  return rows;
}

std::vector<float> random_vector(std::uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n_embd));
  for (auto &x : v) x = n(rng);
  return v;
}

dms::steering_hook_factory make_factory(const dms::llama_model &m) {
  dms::steering_vector vec{1, dms::site::resid_post, random_vector(3, 1.0f)};
  dms::logistic_probe probe(random_vector(4, 0.3f), 0.2f, std::vector<float>(n_embd, 0.0f),
                            std::vector<float>(n_embd, 1.0f));
  return dms::steering_hook_factory(m, vec, probe, {0, dms::site::resid_post});
}

const std::vector<std::vector<token_id>> neutral = {
    {5, 17, 42, 99, 3, 64, 8}, {1, 2, 3, 4, 5}, {70, 71, 72, 73, 74, 75, 76, 77, 78}, {9, 9}};

} // namespace

TEST_CASE("longest_common_substring and the 50-character rule", "[evaluation]") {
  CHECK(dms::longest_common_substring("", "abc") == 0);
  CHECK(dms::longest_common_substring("abc", "abc") == 3);
  CHECK(dms::longest_common_substring("xxabcdyy", "zabcdz") == 4);
  CHECK(dms::longest_common_substring("abcXdef", "abcdef") == 3);
  const std::string ref = "Four score and seven years ago our fathers brought forth on this continent, a new nation";
  const std::string fifty = ref.substr(10, 50), forty_nine = ref.substr(10, 49);
  CHECK(dms::reproduces("The model said: " + fifty + " and then something else", ref));
  CHECK_FALSE(dms::reproduces("The model said: " + forty_nine + "!! and then something else", ref));
  // Two runs of 30 characters do not add up: the rule asks for one contiguous run.
  CHECK_FALSE(dms::reproduces(ref.substr(0, 30) + " ... " + ref.substr(40, 30), ref));
  CHECK(dms::reproduces(ref.substr(0, 30) + " ... " + ref.substr(40, 30), ref, 30));
}

TEST_CASE("first_integer: sign, leading zeros, none", "[evaluation]") {
  CHECK(dms::first_integer(" 1452\nQuestion") == "1452");
  CHECK(dms::first_integer("The answer is -37.") == "-37");
  CHECK(dms::first_integer("x-007 and 5") == "-7");
  CHECK(dms::first_integer("-0") == "0");
  CHECK(dms::first_integer("1,452") == "1");
  CHECK_FALSE(dms::first_integer("no digits").has_value());
}

TEST_CASE("measure_regurgitation: the model's own greedy text is regurgitated, other text is not", "[evaluation]") {
  tiny_fixture f;
  auto m = f.load();
  const toy_tokenizer tok;
  const std::vector<token_id> prefix = {5, 17, 42, 99, 3, 64};
  std::vector<token_id> passage = prefix;
  const auto cont = greedy(m, prefix, 12);
  passage.insert(passage.end(), cont.begin(), cont.end());
  std::vector<token_id> other = prefix;
  for (token_id t : cont) other.push_back((t + 1) % 100);
  const std::vector<std::vector<token_id>> passages = {passage, other};
  const auto cases = dms::make_regurgitation_cases(tok, passages, 6, 12);
  REQUIRE(cases.size() == 2);
  CHECK(cases[0].prefix == prefix);
  CHECK(cases[0].reference == tok.decode(cont));
  const std::size_t n_chars = cases[0].reference.size();
  REQUIRE(n_chars >= 20);

  dms::regurgitation_options opt{.max_tokens = 12, .min_chars = n_chars};
  const auto rep = dms::measure_regurgitation(m, tok, cases, opt);
  REQUIRE(rep.cases.size() == 2);
  CHECK(rep.cases[0].continuation == cases[0].reference);
  CHECK(rep.cases[0].common_chars == n_chars);
  CHECK(rep.cases[0].regurgitated);
  CHECK_FALSE(rep.cases[1].regurgitated);
  CHECK(rep.cases[1].common_chars < n_chars);
  CHECK(rep.n_regurgitated == 1);
  CHECK(rep.rate() == 0.5);

  CHECK_THROWS_WITH(dms::make_regurgitation_cases(tok, passages, 6, 13),
                    Catch::Contains("passage 0 has 18 tokens, fewer than the 19 needed"));
  CHECK_THROWS_WITH(dms::measure_regurgitation(m, tok, std::span<const dms::regurgitation_case>()),
                    Catch::Contains("no cases"));
}

TEST_CASE("mean_token_kl: 0 without steering, > 0 with it, as computed by hand", "[evaluation]") {
  tiny_fixture f;
  auto m = f.load();
  dms::no_hooks none;
  const auto zero = dms::mean_token_kl(m, neutral, none);
  CHECK(zero.mean_kl == 0.0);
  CHECK(zero.n_positions == 7 + 5 + 9 + 2);

  const auto factory = make_factory(m);
  factory(dms::sweep_policy::constant, 0.0f, [&](auto &hooks) {
    CHECK(dms::mean_token_kl(m, neutral, hooks).mean_kl == 0.0); // h + 0 * v is h, bit for bit
  });
  factory(dms::sweep_policy::constant, 2.0f, [&](auto &hooks) {
    const auto kl = dms::mean_token_kl(m, neutral, hooks);
    CHECK(kl.mean_kl > 1e-4);
    CHECK(kl.max_kl >= kl.mean_kl);
    const auto one_at_a_time = dms::mean_token_kl(m, neutral, hooks, {.max_sequences = 1});
    CHECK(one_at_a_time.mean_kl == Approx(kl.mean_kl).epsilon(1e-9));

    // By hand: every position of every prompt, KL(steered || unsteered), averaged.
    double sum = 0.0;
    std::size_t n = 0;
    for (const auto &p : neutral) {
      const auto u = all_positions(m, p, none), s = all_positions(m, p, hooks);
      for (std::size_t r = 0; r < u.size(); ++r, ++n)
        for (std::size_t v = 0; v < u[r].size(); ++v) sum += std::exp(s[r][v]) * (s[r][v] - u[r][v]);
    }
    CHECK(kl.mean_kl == Approx(sum / static_cast<double>(n)).epsilon(1e-6));
  });
  factory(dms::sweep_policy::dms, 2.0f, [&](auto &hooks) { CHECK(dms::mean_token_kl(m, neutral, hooks).mean_kl > 0.0); });

  const std::vector<std::vector<token_id>> bad = {{1, 2}, {3, 400}};
  CHECK_THROWS_WITH(dms::mean_token_kl(m, bad, none), Catch::Contains("prompt 1: token 400 at position 1"));
}

TEST_CASE("perplexity: exp of the mean NLL of the forward logits, windows overlapping by one", "[evaluation]") {
  tiny_fixture f;
  auto m = f.load();
  std::vector<token_id> text;
  for (int i = 0; i < 20; ++i) text.push_back((i * 37 + 11) % 100);
  dms::no_hooks none;

  const auto nll_of = [&](std::size_t begin, std::size_t end) {
    const auto rows = all_positions(m, std::span(text).subspan(begin, end - begin), none);
    double s = 0.0;
    for (std::size_t q = begin; q + 1 < end; ++q) s -= rows[q - begin][static_cast<std::size_t>(text[q + 1])];
    return s;
  };

  const auto whole = dms::perplexity(m, text, {.max_batch_tokens = 7}); // three forwards of one window
  const double nll = nll_of(0, 20);
  CHECK(whole.n_predicted == 19);
  CHECK(whole.mean_nll == Approx(nll / 19).epsilon(1e-9));
  CHECK(whole.perplexity == Approx(std::exp(nll / 19)).epsilon(1e-9));

  // Windows of 8: [0, 8), [7, 15), [14, 20); every token but the first predicted once.
  const auto windowed = dms::perplexity(m, text, {.window = 8});
  CHECK(windowed.n_predicted == 19);
  CHECK(windowed.mean_nll == Approx((nll_of(0, 8) + nll_of(7, 15) + nll_of(14, 20)) / 19).epsilon(1e-9));

  // Steering changes it.
  const auto factory = make_factory(m);
  factory(dms::sweep_policy::constant, 3.0f,
          [&](auto &hooks) { CHECK(dms::perplexity(m, text, hooks).mean_nll != Approx(whole.mean_nll)); });

  CHECK_THROWS_WITH(dms::perplexity(m, std::span(text).first(1)), Catch::Contains("at least 2 tokens"));
  CHECK_THROWS_WITH(dms::perplexity(m, text, {.window = 1}), Catch::Contains("window must be in [2, n_ctx = 48]"));
  CHECK_THROWS_WITH(dms::perplexity(m, text, {.window = 49}), Catch::Contains("window"));
  auto bad = text;
  bad[3] = -1;
  CHECK_THROWS_WITH(dms::perplexity(m, bad), Catch::Contains("token -1 at index 3"));
}

TEST_CASE("arithmetic_exact_match: the first integer of the greedy output against the answer", "[evaluation]") {
  tiny_fixture f;
  auto m = f.load();
  const toy_tokenizer tok;
  const std::vector<std::string> prompts = {"Q: 12 + 30?\nA:", "What is 7 * 8? ", "1 2 3 4", "abc", "zz 9", "-"};
  std::vector<dms::arithmetic_item> right, wrong;
  for (const auto &p : prompts) {
    dms::generation_request r;
    r.prompt = tok.encode(p);
    r.sampling.temperature = 0.0f;
    r.max_tokens = 12;
    r.stop_strings = {"\n"};
    const auto text = dms::generate(m, tok, r).text;
    const auto n = dms::first_integer(text);
    if (!n) continue;
    right.push_back({p, *n});
    wrong.push_back({p, std::to_string(std::stoll(*n) + 1)});
  }
  REQUIRE_FALSE(right.empty()); // a random model writes some digit within 12 tokens of 6 prompts
  dms::no_hooks none;
  const auto good = dms::arithmetic_exact_match(m, tok, right, {}, none);
  CHECK(good.n_correct == right.size());
  CHECK(good.rate() == 1.0);
  const auto bad = dms::arithmetic_exact_match(m, tok, wrong, {}, none);
  CHECK(bad.n_correct == 0);
  CHECK(bad.items[0].extracted == right[0].answer);

  const std::vector<dms::arithmetic_item> no_number = {{"1 + 1", "two"}};
  CHECK_THROWS_WITH(dms::arithmetic_exact_match(m, tok, no_number, {}, none),
                    Catch::Contains("item 0 has answer 'two', which holds no integer"));
}

TEST_CASE("alpha_sweep: a baseline row, then every policy and alpha", "[evaluation]") {
  tiny_fixture f;
  auto m = f.load();
  const toy_tokenizer tok;
  std::vector<std::vector<token_id>> passages;
  for (const auto &p : neutral) {
    if (p.size() < 5) continue;
    auto passage = std::vector<token_id>(p.begin(), p.begin() + 5);
    const auto cont = greedy(m, passage, 10);
    passage.insert(passage.end(), cont.begin(), cont.end());
    passages.push_back(passage);
  }
  const auto cases = dms::make_regurgitation_cases(tok, passages, 5, 10);
  const auto factory = make_factory(m);
  dms::sweep_options opt;
  opt.regurgitation = {.max_tokens = 10, .min_chars = 12};
  std::vector<std::uint64_t> seen;
  dms::progress report([&](const dms::progress_state &s) { seen.push_back(s.done); }, {.min_interval = {}, .clock = {}});
  const auto rows = dms::alpha_sweep(m, tok, cases, neutral, {0.0f, 4.0f},
                                     {dms::sweep_policy::constant, dms::sweep_policy::dms}, factory, opt, report);
  REQUIRE(rows.size() == 5);
  CHECK(rows[0].policy == dms::sweep_policy::none);
  CHECK(rows[0].kl == 0.0);
  CHECK(rows[0].n_cases == cases.size());
  CHECK(rows[0].regurgitation == 1.0); // the cases are the model's own greedy text
  CHECK(rows[1].policy == dms::sweep_policy::constant);
  CHECK(rows[1].alpha == 0.0f);
  CHECK(rows[1].kl == 0.0);
  CHECK(rows[1].regurgitation == 1.0);
  CHECK(rows[2].alpha == 4.0f);
  CHECK(rows[2].kl > 0.0);
  CHECK(rows[3].policy == dms::sweep_policy::dms);
  CHECK(rows[3].kl == 0.0);
  CHECK(rows[4].kl > 0.0);
  CHECK(seen.back() == 5);
  CHECK(dms::name_of(rows[4].policy) == "dms");

  CHECK_THROWS_WITH(dms::alpha_sweep(m, tok, cases, neutral, std::span<const float>(),
                                     std::vector<dms::sweep_policy>{dms::sweep_policy::dms}, factory),
                    Catch::Contains("no alphas"));
}
