#include "config.h"

#include <algorithm>
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
}  // namespace

Config& Config::add_string(std::string name, std::string def, std::string help) {
  order_.push_back(name);
  options_[name] = Option{Type::string, std::move(help), def, def, "default", {}};
  return *this;
}
Config& Config::add_int(std::string name, int64_t def, std::string help) {
  order_.push_back(name);
  auto text = std::to_string(def);
  options_[name] = Option{Type::integer, std::move(help), text, text, "default", {}};
  return *this;
}
Config& Config::add_number(std::string name, double def, std::string help) {
  order_.push_back(name);
  std::string text = std::to_string(def);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') text.pop_back();
  options_[name] = Option{Type::number, std::move(help), text, text, "default", {}};
  return *this;
}
Config& Config::add_bool(std::string name, bool def, std::string help) {
  order_.push_back(name);
  options_[name] = Option{Type::boolean, std::move(help), bool_text(def), bool_text(def), "default", {}};
  return *this;
}
Config& Config::alias_env(const std::string& name, std::string env) {
  options_.at(name).alias_envs.push_back(std::move(env));
  return *this;
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
      case Type::string: return true;
      case Type::integer: std::stoll(value, &used); return used == value.size();
      case Type::number: std::stod(value, &used); return used == value.size();
      case Type::boolean: { bool b; return parse_bool(value, &b); }
    }
  } catch (const std::exception&) {
  }
  return false;
}

Status Config::set(const std::string& name, const std::string& value, std::string source) {
  auto it = options_.find(name);
  if (it == options_.end()) return make_error(ErrorCode::BAD_REQUEST, "unknown option --" + name);
  static const char* kTypeNames[] = {"a string", "an integer", "a number", "true or false"};
  if (!valid(it->second.type, value)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "--" + name + " (from " + source + ") must be " +
                          kTypeNames[static_cast<int>(it->second.type)] + ", not '" + value + "'");
  }
  it->second.value = value;
  it->second.source = std::move(source);
  return {};
}

Status Config::parse(int argc, const char* const* argv) {
  std::vector<std::string> problems;
  // Environment first, so flags override it.
  for (auto& [name, opt] : options_) {
    std::vector<std::string> envs = {env_name(name)};
    envs.insert(envs.end(), opt.alias_envs.begin(), opt.alias_envs.end());
    for (const auto& env : envs) {
      if (const char* v = std::getenv(env.c_str()); v != nullptr && *v != '\0') {
        if (auto st = set(name, v, "env " + env); !st) problems.push_back(st.error().message);
        break;
      }
    }
  }
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_positional || arg.size() < 3 || arg.rfind("--", 0) != 0) {
      if (arg == "--") { only_positional = true; continue; }
      if (arg == "-h") { help_ = true; continue; }
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
    if (name == "help") { help_ = true; continue; }
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
    if (left.size() < 30) left.resize(30, ' ');
    else left += "  ";
    out += left + opt.help + "\n" + std::string(30, ' ') + "(env " + env_name(name);
    for (const auto& a : opt.alias_envs) out += " or " + a;
    out += "; default: " + (opt.def.empty() ? std::string("\"\"") : opt.def) + ")\n";
  }
  out += "  --help                      print this help\n";
  return out;
}

const Config::Option& Config::find(const std::string& name) const {
  auto it = options_.find(name);
  if (it == options_.end()) throw std::logic_error("option not declared: " + name);
  return it->second;
}

const std::string& Config::str(const std::string& name) const { return find(name).value; }
int64_t Config::integer(const std::string& name) const { return std::stoll(find(name).value); }
double Config::number(const std::string& name) const { return std::stod(find(name).value); }
bool Config::boolean(const std::string& name) const {
  bool b = false;
  parse_bool(find(name).value, &b);
  return b;
}
std::string Config::source(const std::string& name) const { return find(name).source; }

}  // namespace nv
