// dns_names.h — the domain entries of a sandbox's network policy and the match of a queried name
// against them (issue 16, schemas/sandbox.capnp NetworkPolicy.allow).
//
// Entries: "example.org" allows that name only; "*.example.org" allows every name below it
// (a.example.org, b.a.example.org) but not example.org itself. Names compare label by label in
// wire form (RFC 1035 §3.1), ASCII letters case-insensitively and every other octet exactly
// (RFC 4343 §3), so "A.Example.ORG" matches and an escaped dot inside a label ("a\.example.org",
// one label "a.example") never passes for a subdomain.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nv::vm::dns {

// True for an allow entry that is a domain, not an address: CIDR and address entries contain
// '/', ':' or '[' or parse as a dotted IPv4 address ("198.51.100.7").
bool is_domain_entry(std::string_view entry);

// A domain name in canonical wire form: length-prefixed labels, ASCII letters lower-cased, the
// root label (0) last. At most 255 octets (RFC 1035 §2.3.4).
using WireName = std::string;

// Lower-cases the ASCII letters of a wire-form name (RFC 4343): the canonical form for matching.
// Returns nullopt for bytes that are not a well-formed uncompressed wire name.
std::optional<WireName> canonical_wire_name(std::string_view wire);

class AllowedNames {
 public:
  // The domain entries of `entries` (address entries are skipped: they are the data path's).
  // A domain entry must be a host name: labels of 1-63 octets of letters, digits, '-' or '_',
  // at most 253 characters, optionally "*." in front and an optional final dot; "*" alone, a "*"
  // anywhere but in front, empty labels and the root "." are refused. On a refusal returns
  // nullopt and sets *error to "domain entry \"x\": <why>".
  static std::optional<AllowedNames> parse(const std::vector<std::string>& entries,
                                           std::string* error);

  // True when the canonical wire name `name` is allowed: equal to an exact entry, or strictly
  // below a wildcard entry.
  bool allows(const WireName& name) const;
  bool empty() const { return exact_.empty() && below_.empty(); }
  size_t size() const { return exact_.size() + below_.size(); }

 private:
  std::vector<WireName> exact_;  // "example.org"
  std::vector<WireName> below_;  // "*.example.org" stored as example.org's wire name
};

}  // namespace nv::vm::dns
