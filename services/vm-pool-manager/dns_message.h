// dns_message.h — the DNS messages of the per-VM responder (dns_responder.h), parsed and built
// with ldns (NLnet Labs; Debian libldns-dev), never by hand. Pure functions: bytes in, bytes
// out, no sockets, so the query path is unit-tested and fuzzed (tests/fuzz/dns_query.cc) alone.
//
// What the guest gets (RFC 1035 §4.1 messages over UDP):
//   a response (QR set), fewer than 12 octets   → nothing (no id to answer; never reflect)
//   more than kMaxQueryBytes, or ldns refuses it → FORMERR (id and opcode from the header)
//   opcode other than QUERY                      → NOTIMP
//   not exactly one question                     → FORMERR
//   class other than IN                          → REFUSED
//   a name not on the sandbox's allow list       → NXDOMAIN (the caller publishes the denial)
//   allowed name, type A, AAAA or CNAME          → forwarded to the operator's upstream; the
//                                                  answer filtered (filter_upstream_answer)
//   allowed name, any other type                 → NOERROR with no answer (NODATA), not
//                                                  forwarded: TXT/MX/SRV data never reaches
//                                                  the guest through this resolver
// Replies carry the question as the guest sent it (case kept: RFC 4343 §4.1, 0x20 clients),
// RA set, EDNS(0) (RFC 6891) with a 1232-octet buffer when the query had it; a reply larger than
// the guest's UDP limit (512, or its EDNS size up to 1232) goes out with TC set and no records.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dns_names.h"

namespace nv::vm::dns {

inline constexpr size_t kMaxQueryBytes = 1232;      // larger UDP queries get FORMERR
inline constexpr uint16_t kEdnsBufferBytes = 1232;  // the DNS flag day 2020 figure
inline constexpr int kMaxChain = 8;                 // CNAME hops followed in an answer

// RCODEs used here (RFC 1035 §4.1.1).
enum class Rcode : uint8_t {
  noerror = 0,
  formerr = 1,
  servfail = 2,
  nxdomain = 3,
  notimp = 4,
  refused = 5
};

// The one question of a guest's query.
struct Question {
  uint16_t id = 0;
  bool rd = false;
  bool edns = false;           // the query had an OPT record
  uint16_t reply_limit = 512;  // octets a UDP reply to the guest may have
  std::string wire;            // the name as the guest sent it (wire form, case kept)
  WireName canonical;          // lower-cased, for matching
  std::string text;            // presentation form without the final dot: "a.example.org"
  uint16_t qtype = 0;
  uint16_t qclass = 0;
};

struct QueryDecision {
  enum class Verdict { drop, answer, forward };
  Verdict verdict = Verdict::drop;
  std::string reply;  // answer: the bytes for the guest
  Rcode rcode = Rcode::noerror;
  bool denied = false;  // answer: NXDOMAIN because the name is not on the allow list
  bool has_question = false;
  Question question;  // valid when has_question (forward, and answers to a parsed query)
};

// Decides what to do with one UDP datagram from the guest (table above). Never throws.
QueryDecision decide_query(std::string_view datagram, const AllowedNames& names);

// The query the responder sends upstream for `q`: the canonical name, q's type, class IN, RD
// set, EDNS(0) with a 1232-octet buffer, message id `id` (the caller draws it at random).
std::string make_upstream_query(const Question& q, uint16_t id);

// A reply to `q` with `rcode` and no records (SERVFAIL when the upstream fails or times out).
std::string make_reply(const Question& q, Rcode rcode);

// TTL bounds for addresses put into the VM's allow set.
struct TtlLimits {
  uint32_t min_s = 30;    // a record with TTL 0-29 still opens the address long enough for the
                          // connect that follows the lookup (a slow, loaded TCG guest)
  uint32_t max_s = 3600;  // an address that changed owner stays open at most an hour
};

struct AllowedAddress {
  std::string ip;      // "198.51.100.10" or "2001:db8::10" (inet_ntop)
  uint32_t ttl_s = 0;  // the record's TTL clamped to TtlLimits: how long the allow entry lives
};

struct FilteredAnswer {
  bool matched = false;  // false: not a reply to this query (wrong id/question): ignore it
  Rcode rcode = Rcode::servfail;
  std::string reply;                      // the bytes for the guest
  std::vector<AllowedAddress> addresses;  // to add to the allow set BEFORE `reply` is sent
};

// Turns the upstream's reply to make_upstream_query(q, id) into the guest's answer. NXDOMAIN
// passes as NXDOMAIN; an rcode other than NOERROR/NXDOMAIN, or a reply ldns cannot parse whose
// id matches, becomes SERVFAIL; an NXDOMAIN reply reaches the guest without any record and adds
// no address, whatever its answer section holds. From a NOERROR answer only the chain that starts at q's name is
// kept: CNAME records whose owner is the current name of the chain (at most kMaxChain hops),
// then the records of q's type (A or AAAA) owned by the name the chain ends at; the authority
// and additional sections and every other record are dropped. CNAME targets need not be on the
// allow list: the allowed name's owner chooses where it points (a CDN host), and the guest can
// still look up only the names it was allowed. The guest sees each TTL capped at limits.max_s,
// so it never caches an address longer than the allow entry lives.
FilteredAnswer filter_upstream_answer(std::string_view reply, const Question& q, uint16_t id,
                                      const TtlLimits& limits);

}  // namespace nv::vm::dns
