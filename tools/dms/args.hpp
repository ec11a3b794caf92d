// tools/dms/args.hpp: the command-line parser of the `dms` tool.
//
// Small on purpose (no third-party parser is worth a dependency for a tool with a dozen
// subcommands): GNU-style long options (`--out F`, `--out=F`), short aliases (`-o F`), flags,
// positionals, `--` to end options, and generated `--help` text. Every mistake is a dms::error
// that names the option and points at `--help`, so the CLI exits non-zero with one clear line.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <dms/core/error.hpp>

namespace dms::cli {

struct option_spec {
  std::string name;          //!< long name without dashes: "out"
  char short_name = 0;       //!< 'o', or 0 for none
  std::string value_name;    //!< "FILE" for an option taking a value; empty for a flag
  std::string help;          //!< one line
  std::string default_value; //!< shown in --help and returned when absent; empty for none
};

struct positional_spec {
  std::string name; //!< "CONFIG"
  std::string help;
  bool required = true;
  bool repeated = false; //!< takes all remaining positionals (must be last)
};

class parsed_args {
public:
  bool has(std::string_view name) const { return values_.count(std::string(name)) > 0; }
  //! Value of an option (or its default); throws if it has neither.
  const std::string &get(std::string_view name) const {
    auto it = values_.find(std::string(name));
    require(it != values_.end(), errc::invalid_argument,
            [&] { return "--" + std::string(name) + " is required (see " + command_ + " --help)"; });
    return it->second;
  }
  std::optional<std::string> find(std::string_view name) const {
    auto it = values_.find(std::string(name));
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  std::int64_t get_int(std::string_view name) const { return to_int(name, get(name)); }
  double get_double(std::string_view name) const { return to_double(name, get(name)); }
  const std::vector<std::string> &positionals() const { return positionals_; }

private:
  friend class command_spec;
  std::int64_t to_int(std::string_view name, const std::string &s) const {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    require(ec == std::errc() && p == s.data() + s.size(), errc::invalid_argument,
            [&] { return "--" + std::string(name) + " expects an integer, got '" + s + "'"; });
    return v;
  }
  double to_double(std::string_view name, const std::string &s) const {
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    require(ec == std::errc() && p == s.data() + s.size(), errc::invalid_argument,
            [&] { return "--" + std::string(name) + " expects a number, got '" + s + "'"; });
    return v;
  }
  std::string command_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

class command_spec {
public:
  command_spec(std::string name, std::string summary) : name_(std::move(name)), summary_(std::move(summary)) {
    options_.push_back({"help", 'h', "", "show this help and exit", ""});
  }
  command_spec &option(option_spec o) {
    options_.push_back(std::move(o));
    return *this;
  }
  command_spec &positional(positional_spec p) {
    positionals_.push_back(std::move(p));
    return *this;
  }
  command_spec &epilog(std::string text) {
    epilog_ = std::move(text);
    return *this;
  }
  const std::string &name() const { return name_; }
  const std::string &summary() const { return summary_; }

  //! Parses `args` (without the program and command names). `--help` is reported as the flag
  //! "help" and skips the required-argument checks, so the caller can print help_text().
  parsed_args parse(std::span<const std::string> args) const {
    parsed_args out;
    out.command_ = name_;
    bool options_done = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string &a = args[i];
      if (options_done || a.size() < 2 || a[0] != '-') {
        out.positionals_.push_back(a);
        continue;
      }
      if (a == "--") {
        options_done = true;
        continue;
      }
      std::string key, value;
      bool has_inline_value = false;
      const option_spec *spec = nullptr;
      if (a[1] == '-') {
        const auto eq = a.find('=');
        key = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        if (eq != std::string::npos) {
          value = a.substr(eq + 1);
          has_inline_value = true;
        }
        spec = find_long(key);
      } else {
        require(a.size() == 2, errc::invalid_argument,
                [&] { return "unknown option '" + a + "' for '" + name_ + "' (see " + name_ + " --help)"; });
        spec = find_short(a[1]);
      }
      require(spec != nullptr, errc::invalid_argument, [&] {
        return "unknown option '" + a + "' for '" + name_ + "'" + suggestion(key) + " (see " + name_ + " --help)";
      });
      if (spec->value_name.empty()) {
        require(!has_inline_value, errc::invalid_argument,
                [&] { return "--" + spec->name + " is a flag and takes no value"; });
        out.values_[spec->name] = "1";
        continue;
      }
      if (!has_inline_value) {
        require(i + 1 < args.size(), errc::invalid_argument,
                [&] { return "--" + spec->name + " needs a value (" + spec->value_name + ")"; });
        value = args[++i];
      }
      out.values_[spec->name] = value;
    }
    if (out.has("help")) return out;
    for (const auto &o : options_)
      if (!o.default_value.empty() && !out.has(o.name)) out.values_[o.name] = o.default_value;
    std::size_t required = 0;
    bool repeated = false;
    for (const auto &p : positionals_) {
      required += p.required ? 1 : 0;
      repeated = repeated || p.repeated;
    }
    require(out.positionals_.size() >= required, errc::invalid_argument, [&] {
      return "'" + name_ + "' needs " + positionals_[out.positionals_.size()].name + " (see " + name_ + " --help)";
    });
    require(repeated || out.positionals_.size() <= positionals_.size(), errc::invalid_argument, [&] {
      return "unexpected argument '" + out.positionals_[positionals_.size()] + "' for '" + name_ + "' (see " + name_ +
             " --help)";
    });
    return out;
  }

  std::string help_text() const {
    std::string s = "Usage: " + name_ + " [OPTIONS]";
    for (const auto &p : positionals_) s += p.required ? " " + p.name : " [" + p.name + "]";
    s += "\n\n" + summary_ + "\n";
    if (!positionals_.empty()) {
      s += "\nArguments:\n";
      for (const auto &p : positionals_) s += row("  " + p.name, p.help);
    }
    s += "\nOptions:\n";
    for (const auto &o : options_) {
      std::string left = o.short_name ? std::string("  -") + o.short_name + ", " : std::string("      ");
      left += "--" + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
      s += row(left, o.help + (o.default_value.empty() ? "" : " [default: " + o.default_value + "]"));
    }
    if (!epilog_.empty()) s += "\n" + epilog_ + "\n";
    return s;
  }

private:
  static std::string row(std::string left, const std::string &right) {
    constexpr std::size_t column = 28; // wide enough for "  -o, --output-dir DIR  "
    if (left.size() + 2 > column) return left + "\n" + std::string(column, ' ') + right + "\n";
    left.resize(column, ' ');
    return left + right + "\n";
  }
  const option_spec *find_long(std::string_view key) const {
    for (const auto &o : options_)
      if (o.name == key) return &o;
    return nullptr;
  }
  const option_spec *find_short(char c) const {
    for (const auto &o : options_)
      if (o.short_name == c) return &o;
    return nullptr;
  }
  //! ", did you mean '--out'?" when one option is within edit distance 2 of a typo.
  std::string suggestion(std::string_view key) const {
    if (key.empty()) return {};
    for (const auto &o : options_)
      if (edit_distance(key, o.name) <= 2) return ", did you mean '--" + o.name + "'?";
    return {};
  }
  static std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diag = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  }

  std::string name_, summary_, epilog_;
  std::vector<option_spec> options_;
  std::vector<positional_spec> positionals_;
};

} // namespace dms::cli
