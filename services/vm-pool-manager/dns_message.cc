// dns_message.cc — DNS messages of the responder, parsed and built with ldns (dns_message.h).
#include "dns_message.h"

#include <arpa/inet.h>
#include <algorithm>
#include <cstdlib>
#include <memory>

// ldns after the C++ headers: its common.h breaks libstdc++'s under clang otherwise.
#include <ldns/ldns.h>

namespace nv::vm::dns {
namespace {

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;

uint16_t raw_id(std::string_view d) {
  return static_cast<uint16_t>((static_cast<uint8_t>(d[0]) << 8) | static_cast<uint8_t>(d[1]));
}

Pkt parse(std::string_view d) {
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(d.data()), d.size()) != LDNS_STATUS_OK) {
    if (p) ldns_pkt_free(p);
    return nullptr;
  }
  return Pkt(p);
}

std::string to_wire(const ldns_pkt* p) {
  uint8_t* buf = nullptr;
  size_t size = 0;
  if (ldns_pkt2wire(&buf, p, &size) != LDNS_STATUS_OK) {
    std::free(buf);
    return {};
  }
  std::string out(reinterpret_cast<const char*>(buf), size);
  std::free(buf);
  return out;
}

ldns_rdf* dname_rdf(const std::string& wire) {
  return ldns_rdf_new_frm_data(LDNS_RDF_TYPE_DNAME, wire.size(), wire.data());
}

// A reply header for `q` (or for a bare id when the query could not be parsed).
Pkt reply_header(uint16_t id, bool rd, Rcode rcode) {
  Pkt p(ldns_pkt_new());
  if (!p) return nullptr;
  ldns_pkt_set_id(p.get(), id);
  ldns_pkt_set_qr(p.get(), true);
  ldns_pkt_set_rd(p.get(), rd);
  ldns_pkt_set_ra(p.get(), true);
  ldns_pkt_set_opcode(p.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rcode(p.get(), static_cast<uint8_t>(rcode));
  return p;
}

bool push_question(ldns_pkt* p, const Question& q) {
  ldns_rr* rr = ldns_rr_new();
  if (!rr) return false;
  ldns_rr_set_owner(rr, dname_rdf(q.wire));
  ldns_rr_set_type(rr, static_cast<ldns_rr_type>(q.qtype));
  ldns_rr_set_class(rr, static_cast<ldns_rr_class>(q.qclass));
  ldns_rr_set_question(rr, true);
  if (!ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, rr)) {
    ldns_rr_free(rr);
    return false;
  }
  return true;
}

// Serializes a reply to q; over the guest's limit → the same header with TC set, no records.
std::string finish_reply(ldns_pkt* p, const Question& q, Rcode rcode) {
  if (q.edns) ldns_pkt_set_edns_udp_size(p, kEdnsBufferBytes);
  std::string out = to_wire(p);
  if (out.size() <= q.reply_limit && !out.empty()) return out;
  Pkt tc = reply_header(q.id, q.rd, rcode);
  if (!tc || !push_question(tc.get(), q)) return {};
  ldns_pkt_set_tc(tc.get(), true);
  if (q.edns) ldns_pkt_set_edns_udp_size(tc.get(), kEdnsBufferBytes);
  return to_wire(tc.get());
}

QueryDecision answer_bare(std::string_view d, Rcode rcode) {
  QueryDecision out;
  // The opcode is copied as header bits after serializing: a value ldns has no enumerator for
  // (3, 6-15) must never be held in its enum type (C++ UB, found by the dns_query fuzzer).
  const auto opcode_bits = static_cast<uint8_t>(static_cast<uint8_t>(d[2]) & 0x78);
  const bool rd = (static_cast<uint8_t>(d[2]) & 0x01) != 0;
  Pkt p = reply_header(raw_id(d), rd, rcode);
  if (!p) return out;
  out.reply = to_wire(p.get());
  if (out.reply.size() >= 12) out.reply[2] = static_cast<char>((out.reply[2] & 0x87) | opcode_bits);
  out.rcode = rcode;
  out.verdict = out.reply.empty() ? QueryDecision::Verdict::drop : QueryDecision::Verdict::answer;
  return out;
}

std::string rdf_wire(const ldns_rdf* r) {
  return std::string(reinterpret_cast<const char*>(ldns_rdf_data(r)), ldns_rdf_size(r));
}

std::string name_text(const ldns_rdf* r) {
  char* s = ldns_rdf2str(r);
  if (!s) return {};
  std::string t(s);
  std::free(s);
  if (t.size() > 1 && t.back() == '.') t.pop_back();
  return t;
}

}  // namespace

QueryDecision decide_query(std::string_view d, const AllowedNames& names) {
  QueryDecision out;
  if (d.size() < 12) return out;                             // no header: nothing to answer
  if ((static_cast<uint8_t>(d[2]) & 0x80) != 0) return out;  // a response: never answer one
  if (d.size() > kMaxQueryBytes) return answer_bare(d, Rcode::formerr);
  if ((static_cast<uint8_t>(d[2]) & 0x78) != 0) return answer_bare(d, Rcode::notimp);
  Pkt q = parse(d);
  if (!q) return answer_bare(d, Rcode::formerr);
  const ldns_rr_list* qs = ldns_pkt_question(q.get());
  if (!qs || ldns_rr_list_rr_count(qs) != 1) return answer_bare(d, Rcode::formerr);
  const ldns_rr* rr = ldns_rr_list_rr(qs, 0);
  const ldns_rdf* owner = ldns_rr_owner(rr);
  if (!owner || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME) {
    return answer_bare(d, Rcode::formerr);
  }
  Question& qn = out.question;
  qn.id = ldns_pkt_id(q.get());
  qn.rd = ldns_pkt_rd(q.get());
  qn.edns = ldns_pkt_edns(q.get());
  if (qn.edns) {
    qn.reply_limit = std::clamp<uint16_t>(ldns_pkt_edns_udp_size(q.get()), 512, kEdnsBufferBytes);
  }
  qn.wire = rdf_wire(owner);
  qn.qtype = static_cast<uint16_t>(ldns_rr_get_type(rr));
  qn.qclass = static_cast<uint16_t>(ldns_rr_get_class(rr));
  auto canonical = canonical_wire_name(qn.wire);
  if (!canonical) return answer_bare(d, Rcode::formerr);
  qn.canonical = std::move(*canonical);
  qn.text = name_text(owner);
  out.has_question = true;

  Rcode rcode = Rcode::noerror;
  if (qn.qclass != LDNS_RR_CLASS_IN) {
    rcode = Rcode::refused;
  } else if (!names.allows(qn.canonical)) {
    rcode = Rcode::nxdomain;
    out.denied = true;
  } else if (qn.qtype == LDNS_RR_TYPE_A || qn.qtype == LDNS_RR_TYPE_AAAA ||
             qn.qtype == LDNS_RR_TYPE_CNAME) {
    out.verdict = QueryDecision::Verdict::forward;
    return out;
  }
  out.reply = make_reply(qn, rcode);
  out.rcode = rcode;
  out.verdict = out.reply.empty() ? QueryDecision::Verdict::drop : QueryDecision::Verdict::answer;
  return out;
}

std::string make_upstream_query(const Question& q, uint16_t id) {
  Pkt p(ldns_pkt_query_new(dname_rdf(q.canonical), static_cast<ldns_rr_type>(q.qtype),
                           LDNS_RR_CLASS_IN, LDNS_RD));
  if (!p) return {};
  ldns_pkt_set_id(p.get(), id);
  ldns_pkt_set_edns_udp_size(p.get(), kEdnsBufferBytes);
  return to_wire(p.get());
}

std::string make_reply(const Question& q, Rcode rcode) {
  Pkt p = reply_header(q.id, q.rd, rcode);
  if (!p || !push_question(p.get(), q)) return {};
  return finish_reply(p.get(), q, rcode);
}

FilteredAnswer filter_upstream_answer(std::string_view d, const Question& q, uint16_t id,
                                      const TtlLimits& limits) {
  FilteredAnswer out;
  if (d.size() < 12 || raw_id(d) != id || (static_cast<uint8_t>(d[2]) & 0x80) == 0) return out;
  Pkt r = parse(d);
  out.matched = true;
  if (!r) {
    out.reply = make_reply(q, Rcode::servfail);
    return out;
  }
  // The question must be ours (a stray or spoofed reply with a guessed id is ignored).
  const ldns_rr_list* qs = ldns_pkt_question(r.get());
  if (!qs || ldns_rr_list_rr_count(qs) != 1) {
    out.matched = false;
    return out;
  }
  const ldns_rr* qrr = ldns_rr_list_rr(qs, 0);
  const auto qname = canonical_wire_name(rdf_wire(ldns_rr_owner(qrr)));
  if (!qname || *qname != q.canonical || ldns_rr_get_type(qrr) != q.qtype) {
    out.matched = false;
    return out;
  }
  const auto rcode = static_cast<Rcode>(ldns_pkt_get_rcode(r.get()));
  if (rcode != Rcode::noerror && rcode != Rcode::nxdomain) {
    out.reply = make_reply(q, Rcode::servfail);
    return out;
  }
  out.rcode = rcode;
  Pkt p = reply_header(q.id, q.rd, rcode);
  if (!p || !push_question(p.get(), q)) return out;
  // NXDOMAIN carries no records to the guest and no address into the allow set, whatever the
  // upstream put in its answer section (found by the dns_query fuzzer).
  const ldns_rr_list* answers = ldns_pkt_answer(r.get());
  const size_t n = answers && rcode == Rcode::noerror ? ldns_rr_list_rr_count(answers) : 0;
  WireName current = q.canonical;
  auto owned_by_current = [&](const ldns_rr* rr) {
    const auto owner = canonical_wire_name(rdf_wire(ldns_rr_owner(rr)));
    return owner && *owner == current && ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN;
  };
  auto keep = [&](const ldns_rr* rr) {
    ldns_rr* copy = ldns_rr_clone(rr);
    if (!copy) return false;
    ldns_rr_set_ttl(copy, std::min(ldns_rr_ttl(rr), limits.max_s));
    if (!ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, copy)) {
      ldns_rr_free(copy);
      return false;
    }
    return true;
  };
  // Follow the CNAME chain from the question's name.
  for (int hop = 0; hop < kMaxChain && q.qtype != LDNS_RR_TYPE_CNAME; ++hop) {
    bool moved = false;
    for (size_t i = 0; i < n && !moved; ++i) {
      const ldns_rr* rr = ldns_rr_list_rr(answers, i);
      if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_CNAME || !owned_by_current(rr)) continue;
      const ldns_rdf* target = ldns_rr_rdf(rr, 0);
      if (!target || ldns_rdf_get_type(target) != LDNS_RDF_TYPE_DNAME) continue;
      auto next = canonical_wire_name(rdf_wire(target));
      if (!next || !keep(rr)) continue;
      current = std::move(*next);
      moved = true;
    }
    if (!moved) break;
  }
  for (size_t i = 0; i < n; ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    if (ldns_rr_get_type(rr) != q.qtype || !owned_by_current(rr)) continue;
    const ldns_rdf* data = ldns_rr_rdf(rr, 0);
    char ip[INET6_ADDRSTRLEN] = {};
    if (q.qtype == LDNS_RR_TYPE_A) {
      if (!data || ldns_rdf_size(data) != 4) continue;
      ::inet_ntop(AF_INET, ldns_rdf_data(data), ip, sizeof ip);
    } else if (q.qtype == LDNS_RR_TYPE_AAAA) {
      if (!data || ldns_rdf_size(data) != 16) continue;
      ::inet_ntop(AF_INET6, ldns_rdf_data(data), ip, sizeof ip);
    }
    if (!keep(rr)) continue;
    if (ip[0] != '\0') {
      out.addresses.push_back({ip, std::clamp(ldns_rr_ttl(rr), limits.min_s, limits.max_s)});
    }
  }
  out.reply = finish_reply(p.get(), q, rcode);
  return out;
}

}  // namespace nv::vm::dns
