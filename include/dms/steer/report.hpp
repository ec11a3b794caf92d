// dms/steer/report.hpp: the steering report, one self-contained HTML file (needs dms::io).
//
// What calibration and evaluation found has to be read by people who do not run dms: a reviewer
// opening an attachment, a CI artifact months later. So the report is a single HTML file with
// inline CSS and inline SVG, no JavaScript and no external resource (fonts, scripts, images),
// that any browser renders offline. It shows
//  * a summary table (model, chosen hook points, the probe's held-out metrics, calibration facts)
//    and one row per evaluated policy: regurgitation rate, mean KL on neutral prompts,
//    perplexity, arithmetic accuracy;
//  * line plots (dms/steer/svg_plot.hpp): probe AUC per layer, patching effect per layer (one
//    line per site), and the alpha sweep's trade-off (x = mean KL on neutral prompts,
//    y = regurgitation rate, one polyline per policy, each point labelled with its alpha);
//  * generations token by token, unsteered and steered side by side, each token's background
//    coloured by its memorization score (white at 0, red at 1, legend included; grey when the
//    token was not scored) with the score in a tooltip.
// Every piece of text is escaped; tokens also show their control characters visibly (a newline
// as "↵" followed by a line break, a tab as "→", other C0 controls as their Unicode control
// pictures, bytes that are not UTF-8, as BPE byte tokens often are, as "\xNN").
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/json.hpp"
#include "dms/steer/bundle.hpp"
#include "dms/steer/svg_plot.hpp"

DMS_NAMESPACE_BEGIN

//! One evaluated policy (NaN: not measured, shown as a dash).
struct report_policy_row {
  std::string policy; //!< "none", "constant", "dms", "conditional", ...
  double alpha = std::numeric_limits<double>::quiet_NaN();
  double regurgitation_rate = std::numeric_limits<double>::quiet_NaN(); //!< fraction of memorization prompts recited
  double mean_kl = std::numeric_limits<double>::quiet_NaN();    //!< nats/token vs unsteered, neutral prompts
  double perplexity = std::numeric_limits<double>::quiet_NaN(); //!< on neutral text
  double arithmetic_accuracy = std::numeric_limits<double>::quiet_NaN(); //!< fraction correct
};

//! One alpha of a sweep.
struct report_sweep_point {
  double alpha = 0;
  double mean_kl = 0;            //!< x: the cost on neutral prompts
  double regurgitation_rate = 0; //!< y: what steering is for
};
struct report_sweep_series {
  std::string policy; //!< "constant", "dms"
  std::vector<report_sweep_point> points; //!< in alpha order (the polyline follows it)
};

//! A generated token and the probe's memorization score for it (NaN: not scored).
struct report_token {
  std::string text;
  double score = std::numeric_limits<double>::quiet_NaN();
};
struct report_generation {
  std::string prompt;
  std::string unsteered_label = "unsteered", steered_label = "steered (DMS)";
  std::vector<report_token> unsteered, steered;
};

struct steering_report {
  std::string title = "dms steering report";
  std::string model; //!< shown under the title
  std::vector<std::pair<std::string, std::string>> summary; //!< (what, value) rows, in order
  std::vector<report_policy_row> policies;
  std::vector<bundle_sweep_row> probe_sweep;   //!< plotted: held-out AUC per layer, a line per site
  std::vector<bundle_patching_row> patching;   //!< plotted: effect per layer, a line per site
  std::vector<report_sweep_series> alpha_sweep;
  std::vector<report_generation> generations;
  std::string generated_at; //!< ISO 8601 UTC; empty: not shown
};

//! The colour of a memorization score: white (#ffffff) at 0 to red (#d7301f) at 1, linear in
//! sRGB, clamped to [0, 1]; grey (#cccccc) for NaN (a token the probe did not score).
inline std::string memorization_color(double score) {
  if (std::isnan(score)) return "#cccccc";
  const double t = std::clamp(score, 0.0, 1.0);
  auto mix = [t](int a, int b) { return static_cast<int>(std::lround(a + (b - a) * t)); };
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", mix(0xff, 0xd7), mix(0xff, 0x30), mix(0xff, 0x1f));
  return buf;
}

//! `text` as HTML content with every character visible (see the header comment): escaped, control
//! characters as symbols in <span class="ctl">, a newline as "↵" plus <br>.
inline std::string visible_html(std::string_view text) {
  std::string out;
  auto ctl = [&](std::string_view symbol) { out += "<span class=\"ctl\">" + std::string(symbol) + "</span>"; };
  while (!text.empty()) {
    const std::size_t bad = detail::first_invalid_utf8(text);
    for (std::size_t i = 0; i < bad; ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c == '\n') {
        ctl("\u21b5");
        out += "<br>";
      } else if (c == '\t') {
        ctl("\u2192");
      } else if (c < 0x20) { // U+2400 + c: the Unicode "control pictures" block
        const char pic[] = {'\xe2', '\x90', static_cast<char>(0x80 + c), 0};
        ctl(pic);
      } else if (c == 0x7f) {
        ctl("\u2421");
      } else {
        out += html_escape(std::string_view(&text[i], 1));
      }
    }
    text.remove_prefix(bad);
    if (text.empty()) break;
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02X", static_cast<unsigned char>(text[0]));
    ctl(hex);
    text.remove_prefix(1);
  }
  return out;
}

//! A token as a coloured <span> with its score in the tooltip; an empty token shows as "∅".
inline std::string token_html(const report_token &t) {
  const std::string score = std::isnan(t.score) ? "not scored" : format_number(t.score, 3);
  return "<span class=\"tok\" style=\"background:" + memorization_color(t.score) +
         "\" title=\"memorization score " + score + "\">" +
         (t.text.empty() ? std::string("<span class=\"ctl\">\u2205</span>") : visible_html(t.text)) + "</span>";
}

//! A report with the summary, probe sweep and patching rows of a bundle filled in; the caller adds
//! evaluation results (policies, alpha sweep, generations).
inline steering_report report_from_bundle(const steering_bundle &b) {
  steering_report r;
  r.title = "dms steering report: " + b.model.file_name;
  r.model = b.model.file_name + " (" + b.model.arch + ", " + std::to_string(b.model.n_layers) + " layers, n_embd " +
            std::to_string(b.model.n_embd) + ")";
  auto row = [&](std::string k, std::string v) { r.summary.emplace_back(std::move(k), std::move(v)); };
  row("model", r.model);
  if (!b.model.sha256.empty()) row("model sha256", b.model.sha256);
  if (b.model.file_size) row("model size", std::to_string(b.model.file_size) + " bytes");
  row("probe layer", to_string(b.probe_at()));
  for (const auto &s : b.probe_sweep)
    if (s.layer == b.probe_at().layer && s.where == b.probe_at().where) {
      row("probe held-out AUC", format_number(s.heldout.roc_auc, 4));
      row("probe held-out accuracy", format_number(s.heldout.accuracy, 4));
      row("probe held-out log-loss", format_number(s.heldout.log_loss, 4));
      row("probe held-out rows", std::to_string(s.heldout.n));
    }
  row("steering layer", to_string(b.steering_at()));
  row("steering vector", std::string(name_of(b.steering.method)) + ", " +
                             (b.steering.scale == vector_scale::unit ? "unit" : "raw") + ", norm " +
                             format_number(b.steering.norm(), 4));
  row("default alpha", format_number(b.steering.alpha, 4));
  if (b.condition)
    row("condition", to_string(b.condition->at) + ", sim " +
                         (b.condition->compare == condition_compare::above ? "> " : "< ") +
                         format_number(b.condition->threshold, 4));
  row("labels", std::to_string(b.labels.n_memorization) + " memorization, " +
                    std::to_string(b.labels.n_generalization) + " generalization" +
                    (b.labels.source.empty() ? "" : " (" + b.labels.source + ")"));
  if (!std::isnan(b.labels.agreement))
    row("extraction/diversity agreement", format_number(b.labels.agreement, 3));
  if (!b.calibration.started_at.empty())
    row("calibrated", b.calibration.started_at + " to " + b.calibration.finished_at);
  row("calibration wall time", format_number(b.calibration.wall_seconds, 4) + " s");
  r.probe_sweep = b.probe_sweep;
  r.patching = b.patching;
  return r;
}

namespace detail {

//! Rows grouped into one series per site, in site order, each sorted by layer.
template <class Row, class Value>
std::vector<plot_series> series_per_site(const std::vector<Row> &rows, Value value) {
  std::vector<plot_series> out;
  for (site s : all_sites) {
    std::vector<const Row *> of_site;
    for (const auto &r : rows)
      if (r.where == s) of_site.push_back(&r);
    if (of_site.empty()) continue;
    std::sort(of_site.begin(), of_site.end(), [](const Row *a, const Row *b) { return a->layer < b->layer; });
    plot_series ser{std::string(name_of(s)), {}, {}};
    for (const Row *r : of_site) ser.points.push_back({static_cast<double>(r->layer), value(*r), {}});
    out.push_back(std::move(ser));
  }
  return out;
}

inline std::string cell(double v, int digits = 4) {
  return std::isnan(v) ? std::string("\u2013") : format_number(v, digits);
}

inline constexpr std::string_view report_css = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1120px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot text{font-family:inherit}
.gen{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:24px}
.gen h3{font-size:1em;margin:4px 0}.prompt{background:#f7f7f7;padding:6px;white-space:pre-wrap;grid-column:1/3}
.tokens{font-family:ui-monospace,monospace;font-size:13px;line-height:1.9;white-space:pre-wrap;border:1px solid #ddd;padding:8px}
.tok{border-radius:2px;padding:1px 0}.ctl{color:#888}
.legend{display:flex;align-items:center;gap:8px;margin:8px 0}
.scale{width:240px;height:14px;border:1px solid #aaa;background:linear-gradient(to right,#ffffff,#d7301f)}
.muted{color:#777}
)";

} // namespace detail

//! The whole HTML document.
inline std::string render_report(const steering_report &r) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(r.title) +
                  "</title><style>" + std::string(detail::report_css) + "</style></head><body>";
  h += "<h1>" + html_escape(r.title) + "</h1>";
  if (!r.model.empty()) h += "<p class=\"muted\">" + html_escape(r.model) + "</p>";
  if (!r.generated_at.empty()) h += "<p class=\"muted\">generated " + html_escape(r.generated_at) + "</p>";

  h += "<h2>Summary</h2><table class=\"summary\"><tbody>";
  for (const auto &[k, v] : r.summary) h += "<tr><th>" + html_escape(k) + "</th><td>" + html_escape(v) + "</td></tr>";
  h += "</tbody></table>";
  if (!r.policies.empty()) {
    h += "<table class=\"policies\"><thead><tr><th>policy</th><th>alpha</th><th>regurgitation rate</th>"
         "<th>mean KL (neutral, nats/token)</th><th>perplexity</th><th>arithmetic accuracy</th></tr></thead><tbody>";
    for (const auto &p : r.policies)
      h += "<tr><td>" + html_escape(p.policy) + "</td><td class=\"num\">" + detail::cell(p.alpha, 3) +
           "</td><td class=\"num\">" + detail::cell(p.regurgitation_rate) + "</td><td class=\"num\">" +
           detail::cell(p.mean_kl) + "</td><td class=\"num\">" + detail::cell(p.perplexity) +
           "</td><td class=\"num\">" + detail::cell(p.arithmetic_accuracy) + "</td></tr>";
    h += "</tbody></table>";
  }

  h += "<h2>Plots</h2><div class=\"plots\">";
  {
    const auto auc = detail::series_per_site(r.probe_sweep, [](const bundle_sweep_row &s) { return s.heldout.roc_auc; });
    plot_axes a;
    a.title = "Probe held-out AUC per layer";
    a.x_label = "layer";
    a.integer_x = true;
    a.y_label = "ROC AUC";
    a.y_max = 1.0; // the best a probe can do; the bottom follows the data (chance is 0.5)
    h += svg_line_plot(auc, a);
  }
  {
    const auto eff = detail::series_per_site(r.patching, [](const bundle_patching_row &p) { return p.effect; });
    plot_axes a;
    a.title = "Activation patching effect per layer";
    a.x_label = "layer";
    a.integer_x = true;
    a.y_label = "normalized effect";
    h += svg_line_plot(eff, a);
  }
  {
    std::vector<plot_series> sweep;
    for (const auto &s : r.alpha_sweep) {
      plot_series ser{s.policy, {}, {}};
      for (const auto &p : s.points)
        ser.points.push_back({p.mean_kl, p.regurgitation_rate, "\u03b1=" + format_number(p.alpha, 3)});
      sweep.push_back(std::move(ser));
    }
    plot_axes a;
    a.title = "Alpha sweep: regurgitation vs. cost";
    a.x_label = "mean KL on neutral prompts (nats/token)";
    a.y_label = "regurgitation rate";
    h += svg_line_plot(sweep, a);
  }
  h += "</div>";

  if (!r.generations.empty()) {
    h += "<h2>Generations</h2><div class=\"legend\"><span>memorization score</span><span>0</span>"
         "<span class=\"scale\"></span><span>1</span><span class=\"tok\" style=\"background:" +
         memorization_color(std::numeric_limits<double>::quiet_NaN()) + "\">not scored</span></div>";
    for (const auto &g : r.generations) {
      h += "<div class=\"gen\"><div class=\"prompt\"><b>prompt</b> " + visible_html(g.prompt) + "</div>";
      for (const auto *side : {&g.unsteered, &g.steered}) {
        h += "<div><h3>" + html_escape(side == &g.unsteered ? g.unsteered_label : g.steered_label) +
             "</h3><div class=\"tokens\">";
        for (const auto &t : *side) h += token_html(t);
        h += "</div></div>";
      }
      h += "</div>";
    }
  }
  h += "</body></html>\n";
  return h;
}

//! Writes render_report(r) to `path` atomically.
inline void write_report(const std::filesystem::path &path, const steering_report &r) {
  const std::string html = render_report(r);
  atomic_file f(path);
  f.write(html);
  f.commit();
}

DMS_NAMESPACE_END
