// The HTML steering report: escaping, the colour scale, the SVG line plot's degenerate cases, the
// structure of a full report (well-formed, the expected plots and marks, no external resource),
// the atomic write; and (hidden, [browser]) a real render in headless chromium.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/steer/report.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using dms::site;

namespace {

std::size_t count(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

//! Empty when `html` is well-formed in the sense the report promises: every non-void element
//! closed in order, quotes balanced in tags, every '&' in text starting an entity, no raw '<'
//! in text; otherwise what is wrong and where.
std::string well_formedness_problem(std::string_view html) {
  static const std::vector<std::string_view> void_elements = {"meta", "br", "hr", "img", "input", "link"};
  std::vector<std::string> open;
  std::size_t i = 0;
  auto where = [&](std::size_t at) { return " at offset " + std::to_string(at) + ": ..." + std::string(html.substr(at, 60)); };
  while (i < html.size()) {
    const char c = html[i];
    if (c == '&') {
      std::size_t j = i + 1;
      if (j < html.size() && html[j] == '#') ++j;
      const std::size_t start = j;
      while (j < html.size() && std::isalnum(static_cast<unsigned char>(html[j]))) ++j;
      if (j == start || j >= html.size() || html[j] != ';') return "bare '&'" + where(i);
      i = j + 1;
      continue;
    }
    if (c != '<') {
      ++i;
      continue;
    }
    if (html.substr(i, 4) == "<!--") {
      const auto end = html.find("-->", i);
      if (end == std::string_view::npos) return "unclosed comment" + where(i);
      i = end + 3;
      continue;
    }
    if (html.substr(i, 2) == "<!") { // <!DOCTYPE html>
      const auto end = html.find('>', i);
      if (end == std::string_view::npos) return "unterminated <!" + where(i);
      i = end + 1;
      continue;
    }
    const bool closing = i + 1 < html.size() && html[i + 1] == '/';
    std::size_t j = i + (closing ? 2 : 1);
    const std::size_t name_start = j;
    while (j < html.size() && (std::isalnum(static_cast<unsigned char>(html[j])) || html[j] == '-')) ++j;
    const std::string name(html.substr(name_start, j - name_start));
    if (name.empty()) return "raw '<' in text" + where(i);
    char quote = 0;
    for (; j < html.size(); ++j) {
      if (quote) {
        if (html[j] == quote) quote = 0;
        else if (html[j] == '<') return "raw '<' in an attribute value" + where(j);
      } else if (html[j] == '"' || html[j] == '\'') {
        quote = html[j];
      } else if (html[j] == '>') {
        break;
      }
    }
    if (j >= html.size()) return "unterminated tag <" + name + where(i);
    const bool self_closing = html[j - 1] == '/';
    i = j + 1;
    if (closing) {
      if (open.empty() || open.back() != name)
        return "</" + name + "> closes <" + (open.empty() ? std::string("nothing") : open.back()) + ">" + where(name_start);
      open.pop_back();
    } else if (!self_closing && std::find(void_elements.begin(), void_elements.end(), name) == void_elements.end()) {
      open.push_back(name);
      if (name == "style" || name == "title") { // raw text: skip to its end tag
        const auto end = html.find("</" + name + ">", i);
        if (end == std::string_view::npos) return "unclosed <" + name + ">" + where(i);
        if (html.substr(i, end - i).find('<') != std::string_view::npos) return "'<' inside <" + name + ">" + where(i);
        i = end;
      }
    }
  }
  if (!open.empty()) return "unclosed <" + open.back() + "> (and " + std::to_string(open.size() - 1) + " more)";
  return {};
}

//! Points without labels (plot_point's label left empty).
std::vector<dms::plot_point> points(std::initializer_list<std::pair<double, double>> xy) {
  std::vector<dms::plot_point> out;
  for (auto [x, y] : xy) out.push_back({x, y, ""});
  return out;
}
dms::plot_axes titled(std::string title) {
  dms::plot_axes a;
  a.title = std::move(title);
  return a;
}

dms::steering_bundle sample_bundle() {
  dms::steering_bundle b;
  b.model = {"tiny <model> & \"friends\".gguf", "", 4096, 4, 4, "llama"};
  b.probe = dms::logistic_probe({0.1f, 0.2f, 0.3f, 0.4f}, 0.0f, {0, 0, 0, 0}, {1, 1, 1, 1},
                                {{1, site::resid_post}, 1.0, dms::class_weight_mode::none, true});
  b.steering.vector = {2, site::resid_post, {1.0f, 0.0f, 0.0f, 0.0f}};
  for (std::int32_t l = 0; l < 4; ++l) {
    b.probe_sweep.push_back({l, site::resid_post, {0.8 + 0.02 * l, 0.7 + 0.05 * l, 0.5, 100}}); // accuracy, AUC
    b.patching.push_back({l, site::resid_post, 0.25 * l});
    b.patching.push_back({l, site::attn_out, l == 3 ? std::nan("") : 0.1 * l});
  }
  b.labels = {40, 60, "extraction", 0.9};
  b.calibration.wall_seconds = 12.5;
  return b;
}

dms::steering_report sample_report() {
  auto r = dms::report_from_bundle(sample_bundle());
  r.generated_at = "2025-01-31T12:00:00Z";
  r.policies = {{"none", 0, 0.62, 0, 8.1, 0.55},
                {"constant", 1.4, 0.30, 0.21, 8.9, 0.52},
                {"dms", 1.4, 0.25, 0.08, 8.3, 0.58}};
  r.policies[0].alpha = std::nan(""); // shown as a dash
  for (const char *policy : {"constant", "dms"}) {
    dms::report_sweep_series s{policy, {}};
    for (double alpha : {0.5, 1.0, 1.4, 2.0})
      s.points.push_back({alpha, alpha * (policy[0] == 'c' ? 0.15 : 0.06), 0.6 - alpha * 0.2});
    r.alpha_sweep.push_back(s);
  }
  r.generations.push_back({"What is 12 * 7?\nAnswer:", "unsteered", "steered (DMS, alpha 1.4)",
                           {{" 84", 0.9}, {"<&\"", 0.5}, {"\n", 0.1}, {"\xff", std::nan("")}},
                           {{" 84", 0.2}, {"\n", 0.0}, {"done", 1.0}}});
  return r;
}

} // namespace

TEST_CASE("the memorization colour scale runs from white at 0 to red at 1", "[report]") {
  CHECK(dms::memorization_color(0.0) == "#ffffff");
  CHECK(dms::memorization_color(1.0) == "#d7301f");
  CHECK(dms::memorization_color(0.5) == "#eb988f");
  CHECK(dms::memorization_color(-3.0) == "#ffffff"); // clamped
  CHECK(dms::memorization_color(7.0) == "#d7301f");
  CHECK(dms::memorization_color(std::nan("")) == "#cccccc");
}

TEST_CASE("text is escaped and control characters shown visibly", "[report]") {
  CHECK(dms::html_escape("a<b&c\"d'e>") == "a&lt;b&amp;c&quot;d&#39;e&gt;");
  CHECK(dms::visible_html("<&\"") == "&lt;&amp;&quot;");
  CHECK(dms::visible_html("\n") == "<span class=\"ctl\">\u21b5</span><br>");
  CHECK(dms::visible_html("a\tb") == "a<span class=\"ctl\">\u2192</span>b");
  CHECK(dms::visible_html(std::string("\x01", 1)) == "<span class=\"ctl\">\u2401</span>");
  CHECK(dms::visible_html(std::string("\0", 1)) == "<span class=\"ctl\">\u2400</span>");
  CHECK(dms::visible_html("\x7f") == "<span class=\"ctl\">\u2421</span>");
  CHECK(dms::visible_html("caf\xc3\xa9") == "caf\xc3\xa9");                         // UTF-8 kept
  CHECK(dms::visible_html("a\xff" "b") == "a<span class=\"ctl\">\\xFF</span>b"); // a byte token
  CHECK(dms::visible_html("\xe2\x82") == "<span class=\"ctl\">\\xE2</span><span class=\"ctl\">\\x82</span>");
  const auto tok = dms::token_html({"<&\"", 0.25});
  CHECK(tok.find("title=\"memorization score 0.25\"") != std::string::npos);
  CHECK(tok.find("&lt;&amp;&quot;") != std::string::npos);
  CHECK(dms::token_html({"", 0.0}).find("\u2205") != std::string::npos);
  CHECK(dms::token_html({"x", std::nan("")}).find("not scored") != std::string::npos);
}

TEST_CASE("svg_line_plot handles empty, single-point, constant and NaN series", "[report]") {
  auto no_bad_numbers = [](const std::string &svg) {
    return svg.find("nan") == std::string::npos && svg.find("inf") == std::string::npos;
  };
  SECTION("no series") {
    const auto svg = dms::svg_line_plot({}, titled("empty"));
    CHECK(count(svg, "<svg") == 1);
    CHECK(count(svg, "<polyline") == 0);
    CHECK(count(svg, "<circle") == 0);
    CHECK(svg.find("no data") != std::string::npos);
    CHECK(no_bad_numbers(svg));
    CHECK(well_formedness_problem(svg).empty());
  }
  SECTION("only NaN points") {
    const std::vector<dms::plot_series> s = {{"nan", "", points({{NAN, 1}, {2, NAN}, {INFINITY, 3}})}};
    const auto svg = dms::svg_line_plot(s, {});
    CHECK(count(svg, "<polyline") == 0);
    CHECK(count(svg, "<circle") == 0);
    CHECK(svg.find("no data") != std::string::npos);
    CHECK(no_bad_numbers(svg));
  }
  SECTION("a single point") {
    const std::vector<dms::plot_series> s = {{"one", "", {{3, 0.5, "only"}}}};
    const auto svg = dms::svg_line_plot(s, {});
    CHECK(count(svg, "<polyline") == 0);
    CHECK(count(svg, "<circle") == 1);
    CHECK(svg.find(">only</text>") != std::string::npos);
    CHECK(no_bad_numbers(svg));
  }
  SECTION("constant values, zero included") {
    const std::vector<dms::plot_series> s = {{"flat", "", points({{0, 0}, {0, 0}, {0, 0}})}};
    const auto svg = dms::svg_line_plot(s, {});
    CHECK(count(svg, "<polyline") == 1);
    CHECK(no_bad_numbers(svg));
  }
  SECTION("a NaN breaks the line, fixed ranges are kept") {
    const std::vector<dms::plot_series> s = {
        {"gappy", "#123456", points({{0, 0.1}, {1, 0.2}, {2, NAN}, {3, 0.4}, {4, 0.5}, {5, NAN}, {6, 0.7}})},
        {"<b>second</b>", "", points({{0, 0.9}, {6, 0.8}})}};
    auto axes = titled("a & b");
    axes.y_min = 0.0;
    axes.y_max = 1.0;
    const auto svg = dms::svg_line_plot(s, axes);
    CHECK(count(svg, "<polyline") == 3); // [0,1], [3,4] and the second series; {6} alone has none
    CHECK(count(svg, "<circle") == 7);
    CHECK(count(svg, "stroke=\"#123456\"") == 2);
    CHECK(svg.find("&lt;b&gt;second&lt;/b&gt;") != std::string::npos); // legend, escaped
    CHECK(svg.find("a &amp; b") != std::string::npos);
    CHECK(svg.find(">1</text>") != std::string::npos); // the fixed y_max is a tick
    CHECK(no_bad_numbers(svg));
    CHECK(well_formedness_problem(svg).empty());
  }
  SECTION("a layer axis has whole-number ticks") {
    const std::vector<dms::plot_series> s = {{"layers", "", points({{0, 0.5}, {1, 0.6}, {2, 0.7}})}};
    auto axes = titled("layers");
    axes.integer_x = true;
    const auto svg = dms::svg_line_plot(s, axes);
    CHECK(svg.find(">0.5</text>") != std::string::npos); // a y tick
    CHECK(svg.find("text-anchor=\"middle\" font-size=\"11\">1.5</text>") == std::string::npos);
    CHECK(svg.find("text-anchor=\"middle\" font-size=\"11\">1</text>") != std::string::npos);
  }
  SECTION("a huge range still gives a bounded number of ticks") {
    const std::vector<dms::plot_series> s = {{"wide", "", points({{-1e300, 0}, {1e300, 1e-300}})}};
    const auto svg = dms::svg_line_plot(s, {});
    CHECK(count(svg, "<line") < 120);
    CHECK(well_formedness_problem(svg).empty());
  }
}

TEST_CASE("the report is well-formed, self-contained and has its plots", "[report]") {
  const auto r = sample_report();
  const std::string html = dms::render_report(r);
  INFO(well_formedness_problem(html));
  CHECK(well_formedness_problem(html).empty());
  CHECK(html.starts_with("<!DOCTYPE html>"));

  // Three plots: probe AUC (one site), patching (two sites), alpha sweep (two policies).
  CHECK(count(html, "<svg") == 3);
  CHECK(count(html, "</svg>") == 3);
  CHECK(count(html, "<polyline") == 1 + 2 + 2);
  CHECK(count(html, "<circle") == 4 + (4 + 3) + 8);
  CHECK(count(html, ">\u03b1=1.4</text>") == 2); // each policy's alpha 1.4 point is labelled

  // Self-contained: no script, no external or linked resource.
  for (std::string_view banned : {"<script", "src=", "href=", "url(", "@import", "<link"}) {
    INFO(banned);
    CHECK(html.find(banned) == std::string::npos);
  }
  CHECK(count(html, "http") == count(html, "xmlns=\"http://www.w3.org/2000/svg\"")); // namespaces only

  // Escaping: the model name and the token "<&\"".
  CHECK(html.find("tiny &lt;model&gt; &amp; &quot;friends&quot;.gguf") != std::string::npos);
  CHECK(html.find("tiny <model>") == std::string::npos);
  CHECK(html.find(">&lt;&amp;&quot;</span>") != std::string::npos);
  CHECK(html.find("<&\"") == std::string::npos);
  // The newline token is visible, and breaks the line.
  CHECK(count(html, "<span class=\"ctl\">\u21b5</span><br>") == 3); // prompt + one per side
  CHECK(html.find("\\xFF") != std::string::npos);

  // Summary and policy table.
  CHECK(html.find("<th>probe layer</th><td>blocks.1.hook_resid_post</td>") != std::string::npos);
  CHECK(html.find("<th>steering layer</th><td>blocks.2.hook_resid_post</td>") != std::string::npos);
  CHECK(html.find("<th>probe held-out AUC</th><td>0.75</td>") != std::string::npos);
  CHECK(count(html, "<tr><td>") == 3);
  CHECK(html.find("<td class=\"num\">\u2013</td>") != std::string::npos); // the unmeasured alpha
  // Tokens: one span per token, coloured by score, legend present.
  CHECK(count(html, "<span class=\"tok\"") == 7 + 1); // 7 tokens + the legend's "not scored"
  CHECK(html.find("background:#d7301f\" title=\"memorization score 1\"") != std::string::npos);
  CHECK(html.find("linear-gradient(to right,#ffffff,#d7301f)") != std::string::npos);
}

TEST_CASE("a report without evaluation still renders its plots", "[report]") {
  dms::steering_report r;
  r.title = "empty";
  const auto html = dms::render_report(r);
  CHECK(well_formedness_problem(html).empty());
  CHECK(count(html, "<svg") == 3);
  CHECK(count(html, "no data") == 3);
  CHECK(count(html, "<polyline") == 0);
}

TEST_CASE("write_report writes the file atomically", "[report]") {
  const auto dir = dms::test::scratch_dir("dms-report", "write");
  const auto r = sample_report();
  dms::write_report(dir / "report.html", r);
  CHECK(dms::test::count_entries(dir) == 1);
  CHECK(dms::test::slurp(dir / "report.html") == dms::render_report(r));
  CHECK_THROWS_AS(dms::write_report(dir / "missing-dir" / "report.html", r), dms::error);
  CHECK(dms::test::count_entries(dir) == 1);
}

// Hidden ([.browser]): registered by tests/report/CMakeLists.txt with SKIP_RETURN_CODE 77.
TEST_CASE("chromium renders the report: plots in the DOM, a non-blank screenshot", "[.browser]") {
  const auto dir = dms::test::scratch_dir("dms-report", "chromium");
  const auto which = dms::test::run("(command -v chromium || command -v chromium-browser)", dir);
  std::string browser = which.out.substr(0, which.out.find('\n'));
  if (which.rc != 0 || browser.empty())
    dms::test::skip("chromium is not on PATH (scripts/install-deps installs it); the report was not rendered");

  const auto report = dir / "report.html", blank = dir / "blank.html";
  dms::write_report(report, sample_report());
  std::ofstream(blank) << "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body></body></html>\n";
  // --no-sandbox: tests often run as root in containers, where chromium's sandbox refuses to start.
  const std::string base = "timeout 120 " + dms::test::quote(browser) +
                           " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars"
                           " --no-first-run --user-data-dir=" + dms::test::quote((dir / "profile").string());
  auto url = [](const fs::path &p) { return dms::test::quote("file://" + fs::absolute(p).string()); };

  const auto dom = dms::test::run(base + " --dump-dom " + url(report), dir);
  INFO("chromium stderr:\n" << dom.err);
  REQUIRE(dom.rc == 0);
  CHECK(count(dom.out, "<svg") == 3);
  CHECK(count(dom.out, "<polyline") == 5);
  CHECK(count(dom.out, "<span class=\"tok\"") == 8);

  auto screenshot = [&](const fs::path &page, const fs::path &png) {
    const auto r = dms::test::run(base + " --window-size=1200,2000 --screenshot=" + dms::test::quote(png.string()) +
                                      " " + url(page),
                                  dir);
    INFO("chromium stderr:\n" << r.err);
    REQUIRE(r.rc == 0);
    REQUIRE(fs::exists(png));
    const std::string bytes = dms::test::slurp(png);
    REQUIRE(bytes.size() > 24);
    CHECK(bytes.substr(0, 8) == "\x89PNG\r\n\x1a\n");
    CHECK(bytes.substr(12, 4) == "IHDR");
    auto be32 = [&](std::size_t at) {
      std::uint32_t v = 0;
      for (std::size_t k = 0; k < 4; ++k) v = v << 8 | static_cast<unsigned char>(bytes[at + k]);
      return v;
    };
    CHECK(be32(16) == 1200); // the window size (device scale factor 1 in headless)
    CHECK(be32(20) == 2000);
    return bytes.size();
  };
  const auto report_bytes = screenshot(report, dir / "report.png");
  const auto blank_bytes = screenshot(blank, dir / "blank.png");
  INFO("report.png " << report_bytes << " bytes, blank.png " << blank_bytes << " bytes");
  // A blank page compresses to almost nothing; plots, tables and coloured tokens do not.
  CHECK(report_bytes > 4 * blank_bytes);
  CHECK(report_bytes > 20000);
}
