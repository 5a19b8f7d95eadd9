// dns_query — fuzzes the DNS responder's message path (services/vm-pool-manager/dns_message.h):
// what a hostile guest sends to its resolver, and what the upstream sends back.
//
// Input: any bytes, used twice. (1) As the guest's UDP query to decide_query() under the allow
// list {"allowed.test", "*.example.test"}. (2) As the upstream's reply to an A query for
// a.example.test whose message id is the input's first two bytes (so the parser gets past the
// id check), to filter_upstream_answer(). Checked: every reply parses with ldns, has QR set,
// the query's id and fits the guest's UDP limit; only allowed names are forwarded; a denial is
// NXDOMAIN; addresses come only from a NOERROR answer and carry a TTL inside the limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dns_message.h"

// ldns after the C++ headers: its common.h breaks libstdc++'s under clang otherwise.
#include <ldns/ldns.h>

namespace {

using namespace nv::vm::dns;

const AllowedNames& names() {
  static const AllowedNames n = *AllowedNames::parse({"allowed.test", "*.example.test"}, nullptr);
  return n;
}

void check_reply(const std::string& reply, uint16_t id, size_t limit) {
  if (reply.empty() || reply.size() > limit) std::abort();
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(reply.data()), reply.size()) !=
      LDNS_STATUS_OK) {
    std::abort();
  }
  if (!ldns_pkt_qr(p) || ldns_pkt_id(p) != id) std::abort();
  ldns_pkt_free(p);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const QueryDecision d = decide_query(in, names());
  const uint16_t raw_id = size >= 2 ? static_cast<uint16_t>((data[0] << 8) | data[1]) : 0;
  if (d.verdict == QueryDecision::Verdict::answer) {
    check_reply(d.reply, raw_id, d.has_question ? d.question.reply_limit : 512);
    if (d.denied && (d.rcode != Rcode::nxdomain || names().allows(d.question.canonical))) {
      std::abort();
    }
  }
  if (d.verdict == QueryDecision::Verdict::forward) {
    if (!names().allows(d.question.canonical) || d.question.id != raw_id) std::abort();
    if (make_upstream_query(d.question, 1).empty()) std::abort();
  }

  static const Question q = [] {
    Question x;
    x.id = 0x0a0b;
    x.wire = std::string(
                 "\x01"
                 "a\x07"
                 "example\x04"
                 "test",
                 15) +
             std::string(1, '\0');
    x.canonical = x.wire;
    x.text = "a.example.test";
    x.qtype = 1;
    x.qclass = 1;
    return x;
  }();
  const TtlLimits limits{30, 3600};
  const FilteredAnswer a = filter_upstream_answer(in, q, raw_id, limits);
  if (!a.matched) return 0;
  check_reply(a.reply, q.id, q.reply_limit);
  if (!a.addresses.empty() && a.rcode != Rcode::noerror) std::abort();
  for (const auto& addr : a.addresses) {
    if (addr.ttl_s < limits.min_s || addr.ttl_s > limits.max_s || addr.ip.empty()) std::abort();
  }
  return 0;
}
