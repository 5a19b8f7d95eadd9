#include "config.h"

#include <algorithm>
#include <sstream>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace nv {

Config::Config(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

namespace {
std::string bool_text(bool b) { return b ? "true" : "false"; }
bool parse_bool(const std::string& v, bool* out) {
  if (v == "1" || v == "true" || v == "yes" || v == "on") return *out = true, true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return *out = false, true;
  return false;
}

std::string number_text(double v) {
  std::string text = std::to_string(v);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}
}  // namespace

Config::Option Config::make_option(Type type, std::string help, const std::string& def) {
  Option o;
  o.type = type;
  o.help = std::move(help);
  o.value = def;
  o.def = def;
  return o;
}

Config::Option& Config::add(const std::string& name, Option opt) {
  if (std::find(order_.begin(), order_.end(), name) == order_.end()) order_.push_back(name);
  opt.scope = scope_;
  opt.shared_fallback = scope_.empty() || shared_fallback_;
  return options_[name] = std::move(opt);
}

Config& Config::add_string(std::string name, std::string def, std::string help) {
  add(name, make_option(Type::string, std::move(help), def));
  return *this;
}
Config& Config::add_int(std::string name, int64_t def, std::string help) {
  auto text = std::to_string(def);
  add(name, make_option(Type::integer, std::move(help), text));
  return *this;
}
Config& Config::add_number(std::string name, double def, std::string help) {
  std::string text = number_text(def);
  add(name, make_option(Type::number, std::move(help), text));
  return *this;
}
Config& Config::add_bool(std::string name, bool def, std::string help) {
  add(name, make_option(Type::boolean, std::move(help), bool_text(def)));
  return *this;
}
Config& Config::alias_env(const std::string& name, std::string env) {
  options_.at(name).alias_envs.push_back(std::move(env));
  return *this;
}
Config& Config::alias_flag(const std::string& name, std::string alias, double scale) {
  options_.at(name);  // throws for an undeclared option: a programming error
  aliases_[std::move(alias)] = Alias{name, scale};
  return *this;
}
Config& Config::range(const std::string& name, double min, double max) {
  auto& o = options_.at(name);
  o.has_range = true;
  o.min = min;
  o.max = max;
  return *this;
}
Config& Config::env_scope(std::string scope, bool shared_fallback) {
  scope_ = std::move(scope);
  shared_fallback_ = shared_fallback;
  return *this;
}

std::vector<std::string> Config::env_names(const std::string& name) const {
  const Option& o = find(name);
  std::vector<std::string> envs;
  if (!o.scope.empty()) envs.push_back(env_name(o.scope + "-" + name));
  if (o.shared_fallback) envs.push_back(env_name(name));
  envs.insert(envs.end(), o.alias_envs.begin(), o.alias_envs.end());
  return envs;
}

std::string Config::env_name(const std::string& name) {
  std::string env = "NV_";
  for (char c : name) env.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
  return env;
}

bool Config::valid(Type type, const std::string& value) {
  try {
    size_t used = 0;
    switch (type) {
      case Type::string:
        return true;
      case Type::integer:
        std::stoll(value, &used);
        return used == value.size();
      case Type::number:
        std::stod(value, &used);
        return used == value.size();
      case Type::boolean: {
        bool b;
        return parse_bool(value, &b);
      }
    }
  } catch (const std::exception&) {}
  return false;
}

Status Config::set(const std::string& name, const std::string& value, std::string source) {
  auto it = options_.find(name);
  if (it == options_.end()) return make_error(ErrorCode::BAD_REQUEST, "unknown option --" + name);
  static const char* kTypeNames[] = {"a string", "an integer", "a number", "true or false"};
  if (!valid(it->second.type, value)) {
    return make_error(ErrorCode::BAD_REQUEST, "--" + name + " (from " + source + ") must be " +
                                                  kTypeNames[static_cast<int>(it->second.type)] +
                                                  ", not '" + value + "'");
  }
  if (it->second.has_range &&
      (it->second.type == Type::integer || it->second.type == Type::number)) {
    double v = std::stod(value);
    if (v < it->second.min || v > it->second.max) {
      return make_error(ErrorCode::BAD_REQUEST, "--" + name + " (from " + source +
                                                    ") must be between " +
                                                    number_text(it->second.min) + " and " +
                                                    number_text(it->second.max) + ", not " + value);
    }
  }
  it->second.value = value;
  it->second.source = std::move(source);
  return {};
}

Config& Config::repeatable(const std::string& name) {
  options_.at(name).repeatable = true;
  return *this;
}

Status Config::parse(int argc, const char* const* argv) {
  std::vector<std::string> problems;
  // Environment first, so flags override it.
  // Converts an alias's value into its target's unit ("" when it is not a number).
  auto scaled = [&](const Alias& a, const std::string& v) -> std::string {
    if (a.scale == 1.0) return v;
    if (!valid(Type::number, v)) return v;  // set() reports it
    double x = std::stod(v) * a.scale;
    return find(a.target).type == Type::integer ? std::to_string(std::llround(x)) : number_text(x);
  };
  for (auto& [name, opt] : options_) {
    bool found = false;
    for (const auto& env : env_names(name)) {
      if (const char* v = std::getenv(env.c_str()); v != nullptr && *v != '\0') {
        if (auto st = set(name, v, "env " + env); !st) problems.push_back(st.error().message);
        found = true;
        break;
      }
    }
    if (found) continue;
    for (const auto& [alias, a] : aliases_) {  // NV_<ALIAS> of an older spelling
      if (a.target != name) continue;
      std::string env = env_name(alias);
      if (const char* v = std::getenv(env.c_str()); v != nullptr && *v != '\0') {
        if (auto st = set(name, scaled(a, v), "env " + env); !st) {
          problems.push_back(st.error().message);
        }
        break;
      }
    }
  }
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_positional || arg.size() < 3 || arg.rfind("--", 0) != 0) {
      if (arg == "--") {
        only_positional = true;
        continue;
      }
      if (arg == "-h") {
        help_ = true;
        continue;
      }
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "help") {
      help_ = true;
      continue;
    }
    const Alias* alias = nullptr;
    if (auto al = aliases_.find(name); al != aliases_.end()) {
      alias = &al->second;
      name = al->second.target;
    }
    auto it = options_.find(name);
    if (it == options_.end() && name.rfind("no-", 0) == 0 && !has_value) {
      auto neg = options_.find(name.substr(3));
      if (neg != options_.end() && neg->second.type == Type::boolean) {
        neg->second.value = "false";
        neg->second.source = "flag";
        continue;
      }
    }
    if (it == options_.end()) {
      problems.push_back("unknown option --" + name + " (see --help)");
      continue;
    }
    if (!has_value) {
      if (it->second.type == Type::boolean) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        problems.push_back("--" + name + " needs a value");
        continue;
      }
    }
    if (alias) value = scaled(*alias, value);
    if (it->second.repeatable && it->second.source == "flag") {
      value = it->second.value + "," + value;
    }
    if (auto st = set(name, value, "flag"); !st) problems.push_back(st.error().message);
  }
  if (problems.empty()) return {};
  std::string msg;
  for (const auto& p : problems) msg += (msg.empty() ? "" : "; ") + p;
  return make_error(ErrorCode::BAD_REQUEST, msg);
}

std::string Config::help() const {
  std::string out = "usage: " + program_ + " [options]\n" + summary_ + "\n\noptions:\n";
  for (const auto& name : order_) {
    const auto& opt = options_.at(name);
    std::string left = "  --" + name;
    if (opt.type != Type::boolean) left += " VALUE";
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "  ";
    out += left + opt.help + "\n" + std::string(30, ' ') + "(env ";
    auto envs = env_names(name);
    for (size_t i = 0; i < envs.size(); ++i) out += (i ? " or " : "") + envs[i];
    out += "; default: " + (opt.def.empty() ? std::string("\"\"") : opt.def);
    if (opt.has_range) out += "; range " + number_text(opt.min) + "-" + number_text(opt.max);
    for (const auto& [alias, a] : aliases_) {
      if (a.target != name) continue;
      out += "; deprecated spelling --" + alias;
      if (a.scale == 1000.0)
        out += " in seconds";
      else if (a.scale != 1.0)
        out += " (x" + number_text(a.scale) + ")";
    }
    out += ")\n";
  }
  out += "  --help                      print this help\n";
  return out;
}

const Config::Option& Config::find(const std::string& name) const {
  auto it = options_.find(name);
  if (it == options_.end()) {
    if (auto al = aliases_.find(name); al != aliases_.end()) it = options_.find(al->second.target);
  }
  if (it == options_.end()) throw std::logic_error("option not declared: " + name);
  return it->second;
}

std::string Config::in_alias_unit(const std::string& name, const std::string& value) const {
  auto al = aliases_.find(name);
  if (al == aliases_.end() || al->second.scale == 1.0 || options_.count(name)) return value;
  return number_text(std::stod(value) / al->second.scale);
}

const std::string& Config::str(const std::string& name) const { return find(name).value; }
int64_t Config::integer(const std::string& name) const {
  const std::string& v = find(name).value;
  auto al = aliases_.find(name);
  bool scaled = al != aliases_.end() && al->second.scale != 1.0 && !options_.count(name);
  if (!scaled) return std::stoll(v);
  return static_cast<int64_t>(std::llround(std::stod(in_alias_unit(name, v))));
}
double Config::number(const std::string& name) const {
  return std::stod(in_alias_unit(name, find(name).value));
}
bool Config::boolean(const std::string& name) const {
  bool b = false;
  parse_bool(find(name).value, &b);
  return b;
}
std::string Config::source(const std::string& name) const { return find(name).source; }

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace nv
