// dms/steer/svg_plot.hpp: HTML escaping and a small inline-SVG line plot, for the steering report.
//
// The report must open anywhere, offline, years later: no JavaScript, no plotting library, no
// external resource. A line plot is simple enough to draw directly: a frame, "nice" ticks
// (1, 2, 5 x 10^k), one <polyline> per run of consecutive finite points, a <circle> per finite
// point (with a <title> tooltip, and an optional text label such as the alpha of a sweep point),
// and a legend. Degenerate input must still give a valid picture, never a division by zero:
// no series or no finite point draws the axes over [0, 1] and says "no data"; a single point or
// a constant coordinate widens its range around the value; NaN and infinite points are skipped
// and break the line (a gap in a per-layer curve means "not measured", not "interpolate").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! `text` with &, <, >, " and ' replaced by entities: safe in element content and in
//! double- or single-quoted attribute values.
inline std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    case '\'': out += "&#39;"; break;
    default: out += c;
    }
  }
  return out;
}

//! A number for humans and SVG coordinates: up to `digits` significant digits, no exponent for
//! ordinary magnitudes, "-0" printed as "0", non-finite values as "nan" / "inf" / "-inf".
inline std::string format_number(double v, int digits = 4) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

struct plot_point {
  double x = 0, y = 0;
  std::string label; //!< drawn next to the point when non-empty ("1.4" for an alpha)
};

struct plot_series {
  std::string name;  //!< legend entry
  std::string color; //!< CSS colour; empty: the next of a colour-blind-safe palette
  std::vector<plot_point> points;
};

struct plot_axes {
  std::string title, x_label, y_label;
  int width = 560, height = 320; //!< SVG size in CSS pixels
  //! Fixed ranges; unset: from the finite data (an AUC plot fixes y to [0.5, 1], say).
  std::optional<double> x_min, x_max, y_min, y_max;
  int ticks = 5; //!< approximate number of ticks per axis
  bool integer_x = false; //!< x ticks at whole numbers only (a layer axis has no layer 1.5)
};

namespace detail {

//! Okabe-Ito: distinguishable with the common colour-vision deficiencies.
inline constexpr std::string_view plot_palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                    "#E69F00", "#56B4E9", "#000000", "#F0E442"};

//! A tick step of 1, 2 or 5 x 10^k giving about `n` ticks over `span` (> 0).
inline double nice_step(double span, int n) {
  const double raw = span / std::max(1, n);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

struct plot_range {
  double lo = 0, hi = 1;
};

//! The range of the finite values in `v`, widened where needed so that hi > lo always holds.
inline plot_range data_range(const std::vector<double> &v, std::optional<double> lo, std::optional<double> hi) {
  double a = std::numeric_limits<double>::infinity(), b = -a;
  for (double x : v)
    if (std::isfinite(x)) {
      a = std::min(a, x);
      b = std::max(b, x);
    }
  if (!(a <= b)) a = 0, b = 1; // no finite value
  if (lo && std::isfinite(*lo)) a = *lo;
  if (hi && std::isfinite(*hi)) b = *hi;
  if (!(b > a)) { // one value (or a reversed fixed range): centre it in a unit-ish window
    const double pad = a == 0 ? 0.5 : std::abs(a) * 0.1;
    a -= pad;
    b = a + 2 * pad;
  } else if (!lo || !hi) { // a little air so that points do not sit on the frame
    const double pad = (b - a) * 0.05;
    if (!lo) a -= pad;
    if (!hi) b += pad;
  }
  return {a, b};
}

} // namespace detail

//! An <svg> element plotting `series` (see the header comment for the degenerate cases).
inline std::string svg_line_plot(std::span<const plot_series> series, const plot_axes &axes) {
  const double w = std::max(axes.width, 160), h = std::max(axes.height, 120);
  const double left = 64, right = 16, top = axes.title.empty() ? 16 : 32, bottom = 48;
  const double legend_h = series.size() > 1 ? 18.0 * static_cast<double>(series.size()) : 0.0;
  const double total_h = h + legend_h;
  const double pw = w - left - right, ph = h - top - bottom;

  std::vector<double> xs, ys;
  for (const auto &s : series)
    for (const auto &p : s.points)
      if (std::isfinite(p.x) && std::isfinite(p.y)) {
        xs.push_back(p.x);
        ys.push_back(p.y);
      }
  const bool empty = xs.empty();
  const auto xr = detail::data_range(xs, axes.x_min, axes.x_max);
  const auto yr = detail::data_range(ys, axes.y_min, axes.y_max);
  auto px = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  auto py = [&](double y) { return top + ph - (y - yr.lo) / (yr.hi - yr.lo) * ph; };
  auto num = [](double v) { return format_number(v, 6); };

  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"" + num(w) + "\" height=\"" + num(total_h) +
       "\" viewBox=\"0 0 " + num(w) + " " + num(total_h) + "\" role=\"img\" aria-label=\"" +
       html_escape(axes.title) + "\">";
  s += "<title>" + html_escape(axes.title) + "</title>";
  s += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) +
       "\" fill=\"#ffffff\" stroke=\"#888888\"/>";
  if (!axes.title.empty())
    s += "<text x=\"" + num(w / 2) + "\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">" +
         html_escape(axes.title) + "</text>";

  // Ticks: multiples of a nice step inside the range (at most 50, whatever the range).
  auto ticks = [&](detail::plot_range r, bool is_x) {
    double step = detail::nice_step(r.hi - r.lo, axes.ticks);
    if (is_x && axes.integer_x) step = std::max(1.0, step); // nice steps >= 1 are whole numbers
    const double first = std::ceil(r.lo / step - 1e-9) * step;
    const int digits = std::max(1, static_cast<int>(std::ceil(-std::log10(step))) + 2);
    for (int i = 0; i < 50; ++i) {
      const double v = first + i * step;
      if (v > r.hi + step * 1e-9) break;
      const double t = std::abs(v) < step * 1e-9 ? 0.0 : v; // no "-0", no 1e-17
      if (is_x) {
        const double x = px(t);
        s += "<line x1=\"" + num(x) + "\" y1=\"" + num(top + ph) + "\" x2=\"" + num(x) + "\" y2=\"" +
             num(top + ph + 5) + "\" stroke=\"#888888\"/>";
        s += "<text x=\"" + num(x) + "\" y=\"" + num(top + ph + 18) + "\" text-anchor=\"middle\" font-size=\"11\">" +
             format_number(t, std::max(digits, 3)) + "</text>";
      } else {
        const double y = py(t);
        s += "<line x1=\"" + num(left - 5) + "\" y1=\"" + num(y) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(y) +
             "\" stroke=\"#eeeeee\"/>";
        s += "<text x=\"" + num(left - 8) + "\" y=\"" + num(y + 4) + "\" text-anchor=\"end\" font-size=\"11\">" +
             format_number(t, std::max(digits, 3)) + "</text>";
      }
    }
  };
  ticks(xr, true);
  ticks(yr, false);
  s += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(top + ph + 38) + "\" text-anchor=\"middle\">" +
       html_escape(axes.x_label) + "</text>";
  s += "<text transform=\"translate(14," + num(top + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       html_escape(axes.y_label) + "</text>";
  if (empty)
    s += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(top + ph / 2) +
         "\" text-anchor=\"middle\" fill=\"#888888\">no data</text>";

  for (std::size_t k = 0; k < series.size(); ++k) {
    const plot_series &ser = series[k];
    const std::string color = html_escape(
        ser.color.empty() ? std::string(detail::plot_palette[k % std::size(detail::plot_palette)]) : ser.color);
    // One polyline per run of >= 2 consecutive finite points.
    std::string run;
    int run_n = 0;
    auto flush = [&] {
      if (run_n >= 2)
        s += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\" points=\"" + run + "\"/>";
      run.clear();
      run_n = 0;
    };
    for (const auto &p : ser.points) {
      if (!(std::isfinite(p.x) && std::isfinite(p.y))) {
        flush();
        continue;
      }
      run += (run_n ? " " : "") + num(px(p.x)) + "," + num(py(p.y));
      ++run_n;
    }
    flush();
    for (const auto &p : ser.points) {
      if (!(std::isfinite(p.x) && std::isfinite(p.y))) continue;
      s += "<circle cx=\"" + num(px(p.x)) + "\" cy=\"" + num(py(p.y)) + "\" r=\"3.5\" fill=\"" + color +
           "\"><title>" + html_escape(ser.name) + (p.label.empty() ? "" : " " + html_escape(p.label)) + ": (" +
           format_number(p.x) + ", " + format_number(p.y) + ")</title></circle>";
      if (!p.label.empty())
        s += "<text x=\"" + num(px(p.x) + 5) + "\" y=\"" + num(py(p.y) - 6) + "\" font-size=\"10\" fill=\"" + color +
             "\">" + html_escape(p.label) + "</text>";
    }
  }
  if (series.size() > 1)
    for (std::size_t k = 0; k < series.size(); ++k) {
      const double y = h + 18.0 * static_cast<double>(k) + 4;
      const std::string color = html_escape(series[k].color.empty()
                                                ? std::string(detail::plot_palette[k % std::size(detail::plot_palette)])
                                                : series[k].color);
      s += "<rect x=\"" + num(left) + "\" y=\"" + num(y) + "\" width=\"14\" height=\"10\" fill=\"" + color + "\"/>";
      s += "<text x=\"" + num(left + 20) + "\" y=\"" + num(y + 9) + "\" font-size=\"12\">" +
           html_escape(series[k].name) + "</text>";
    }
  s += "</svg>";
  return s;
}

DMS_NAMESPACE_END
