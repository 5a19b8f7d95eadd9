// dns_names.cc — domain allow entries and their match (see dns_names.h).
#include "dns_names.h"

#include <arpa/inet.h>

#include <algorithm>

namespace nv::vm::dns {
namespace {

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// "example.org" → "\x07example\x03org\x00" (lower-cased); why on refusal.
std::optional<WireName> text_to_wire(std::string_view name, std::string* why) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty()) {
    *why = "empty name";
    return std::nullopt;
  }
  if (name.size() > 253) {
    *why = "longer than 253 characters";
    return std::nullopt;
  }
  WireName wire;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    const std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63) {
      *why = label.empty() ? "empty label" : "label longer than 63 characters";
      return std::nullopt;
    }
    wire.push_back(static_cast<char>(label.size()));
    for (char c : label) {
      c = ascii_lower(c);
      if (!host_char(c)) {
        *why = c == '*' ? "'*' is allowed only as the first label (\"*.example.org\")"
                        : "a label holds a character other than a letter, digit, '-' or '_'";
        return std::nullopt;
      }
      wire.push_back(c);
    }
    start = dot + 1;
  }
  wire.push_back('\0');
  return wire;
}

}  // namespace

bool is_domain_entry(std::string_view entry) {
  if (entry.find_first_of("/:[") != std::string_view::npos) return false;
  in_addr a{};
  return ::inet_pton(AF_INET, std::string(entry).c_str(), &a) != 1;
}

std::optional<WireName> canonical_wire_name(std::string_view wire) {
  WireName out;
  size_t i = 0;
  while (i < wire.size()) {
    const auto len = static_cast<uint8_t>(wire[i]);
    if (len > 63) return std::nullopt;  // a compression pointer or an unknown label type
    out.push_back(static_cast<char>(len));
    if (len == 0)
      return i + 1 == wire.size() && out.size() <= 255 ? std::optional(out) : std::nullopt;
    if (i + 1 + len > wire.size()) return std::nullopt;
    for (size_t k = 0; k < len; ++k) out.push_back(ascii_lower(wire[i + 1 + k]));
    i += 1 + len;
  }
  return std::nullopt;  // no root label
}

std::optional<AllowedNames> AllowedNames::parse(const std::vector<std::string>& entries,
                                                std::string* error) {
  AllowedNames names;
  for (const std::string& entry : entries) {
    if (!is_domain_entry(entry)) continue;
    std::string_view text = entry;
    const bool wildcard = text.starts_with("*.");
    if (wildcard) text.remove_prefix(2);
    std::string why;
    auto wire = text_to_wire(text, &why);
    if (!wire) {
      if (error) *error = "domain entry \"" + entry + "\": " + why;
      return std::nullopt;
    }
    auto& list = wildcard ? names.below_ : names.exact_;
    if (std::find(list.begin(), list.end(), *wire) == list.end()) list.push_back(*wire);
  }
  return names;
}

bool AllowedNames::allows(const WireName& name) const {
  for (const WireName& e : exact_) {
    if (e == name) return true;
  }
  // Strictly below a wildcard base: some label boundary after the first one starts a suffix
  // equal to the base.
  for (const WireName& base : below_) {
    if (name.size() <= base.size()) continue;
    size_t i = 0;
    while (i < name.size() && name[i] != '\0') {
      i += 1 + static_cast<uint8_t>(name[i]);
      if (name.size() - i == base.size()) {
        if (name.compare(i, base.size(), base) == 0) return true;
        break;
      }
      if (name.size() - i < base.size()) break;
    }
  }
  return false;
}

}  // namespace nv::vm::dns
