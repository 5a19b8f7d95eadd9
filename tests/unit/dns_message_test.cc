// dns_message_test — the allow-list match (dns_names.h) and the ldns message functions
// (dns_message.h) without sockets: decisions for each kind of query, and the filtering of
// upstream answers (CNAME chains, TTL clamps, dropped records, foreign replies).
#include <gtest/gtest.h>
#include <ldns/ldns.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#include "dns_message.h"
#include "dns_names.h"

namespace {

using namespace nv::vm::dns;

AllowedNames names(const std::vector<std::string>& entries) {
  std::string why;
  auto n = AllowedNames::parse(entries, &why);
  EXPECT_TRUE(n.has_value()) << why;
  return n ? *n : AllowedNames{};
}

// Wire name from presentation text via ldns (a library, so the test does not share our code).
WireName wire(const std::string& text) {
  ldns_rdf* r = ldns_dname_new_frm_str(text.c_str());
  EXPECT_NE(r, nullptr) << text;
  if (!r) return {};
  std::string w(reinterpret_cast<const char*>(ldns_rdf_data(r)), ldns_rdf_size(r));
  ldns_rdf_deep_free(r);
  return *canonical_wire_name(w);
}

std::string pkt_wire(ldns_pkt* p) {
  uint8_t* buf = nullptr;
  size_t n = 0;
  EXPECT_EQ(ldns_pkt2wire(&buf, p, &n), LDNS_STATUS_OK);
  std::string out(reinterpret_cast<char*>(buf), n);
  std::free(buf);
  return out;
}

std::string query(const std::string& name, ldns_rr_type type, uint16_t id = 0x1234,
                  ldns_rr_class cls = LDNS_RR_CLASS_IN) {
  ldns_pkt* p = ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), type, cls, LDNS_RD);
  ldns_pkt_set_id(p, id);
  std::string w = pkt_wire(p);
  ldns_pkt_free(p);
  return w;
}

ldns_pkt* parse(const std::string& w) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(w.data()), w.size()),
            LDNS_STATUS_OK);
  return p;
}

// An upstream reply to `q` with the given records (presentation format) in the answer section
// and one in the additional section.
std::string upstream_reply(const std::string& q, const std::vector<std::string>& answers,
                           ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR,
                           const std::string& additional = "") {
  ldns_pkt* p = parse(q);
  ldns_pkt_set_qr(p, true);
  ldns_pkt_set_rcode(p, rcode);
  for (const auto& text : answers) {
    ldns_rr* rr = nullptr;
    EXPECT_EQ(ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr), LDNS_STATUS_OK) << text;
    ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
  }
  if (!additional.empty()) {
    ldns_rr* rr = nullptr;
    EXPECT_EQ(ldns_rr_new_frm_str(&rr, additional.c_str(), 0, nullptr, nullptr), LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_ADDITIONAL, rr);
  }
  std::string w = pkt_wire(p);
  ldns_pkt_free(p);
  return w;
}

// The answer section of a reply as "owner ttl type rdata" lines.
std::vector<std::string> answer_lines(const std::string& reply) {
  std::vector<std::string> out;
  ldns_pkt* p = parse(reply);
  if (!p) return out;
  const ldns_rr_list* a = ldns_pkt_answer(p);
  for (size_t i = 0; a && i < ldns_rr_list_rr_count(a); ++i) {
    char* s = ldns_rr2str(ldns_rr_list_rr(a, i));
    std::string line(s);
    std::free(s);
    while (!line.empty() && line.back() == '\n') line.pop_back();
    // Lower-cased: ldns compresses an owner into a pointer to the question, the guest's case.
    for (char& c : line) c = c == '\t' ? ' ' : static_cast<char>(std::tolower(c));
    out.push_back(line);
  }
  ldns_pkt_free(p);
  return out;
}

TEST(DnsNames, ExactAndWildcardEntries) {
  const AllowedNames n = names({"allowed.test", "*.example.test", "198.51.100.0/24",
                                "198.51.100.7:443", "[2001:db8::1]:443", "203.0.113.9"});
  EXPECT_EQ(n.size(), 2u);  // the four address entries are the data path's
  EXPECT_TRUE(n.allows(wire("allowed.test")));
  EXPECT_TRUE(n.allows(wire("ALLOWED.Test.")));    // RFC 4343: ASCII case does not matter
  EXPECT_FALSE(n.allows(wire("a.allowed.test")));  // exact means exact
  EXPECT_TRUE(n.allows(wire("a.example.test")));
  EXPECT_TRUE(n.allows(wire("B.A.Example.TEST")));
  EXPECT_FALSE(n.allows(wire("example.test")));  // "*." is below the apex, not the apex
  EXPECT_FALSE(n.allows(wire("aexample.test")));
  EXPECT_FALSE(n.allows(wire("example.test.evil")));
  // One label "a.example" (an escaped dot) is not a subdomain of example... it is below "test"
  // only: neither entry allows it.
  EXPECT_FALSE(n.allows(wire("a\\.example.test")));
  EXPECT_FALSE(n.allows(wire("a\\.allowed.test")));
}

TEST(DnsNames, MalformedEntriesAreRefusedWithTheirText) {
  for (const std::string& bad :
       std::vector<std::string>{"*", "*.", "a.*.test", "a..test", "bad name.test", ".", "*.*.test",
                                std::string(64, 'a') + ".test"}) {
    std::string why;
    EXPECT_FALSE(AllowedNames::parse({bad}, &why).has_value()) << bad;
    EXPECT_NE(why.find(bad), std::string::npos) << why;
  }
}

TEST(DnsMessage, AllowedNameIsForwardedOthersGetNxdomain) {
  const AllowedNames n = names({"allowed.test"});
  QueryDecision d = decide_query(query("AllOwed.TEST", LDNS_RR_TYPE_A), n);
  EXPECT_EQ(d.verdict, QueryDecision::Verdict::forward);
  EXPECT_EQ(d.question.text, "AllOwed.TEST");
  EXPECT_EQ(d.question.canonical, wire("allowed.test"));

  d = decide_query(query("other.test", LDNS_RR_TYPE_A, 0x4242), n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
  EXPECT_TRUE(d.denied);
  ldns_pkt* r = parse(d.reply);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(ldns_pkt_get_rcode(r), LDNS_RCODE_NXDOMAIN);
  EXPECT_EQ(ldns_pkt_id(r), 0x4242);
  EXPECT_TRUE(ldns_pkt_qr(r));
  EXPECT_EQ(ldns_rr_list_rr_count(ldns_pkt_answer(r)), 0u);
  ldns_pkt_free(r);
}

TEST(DnsMessage, OtherTypesAndClassesAreAnsweredWithoutForwarding) {
  const AllowedNames n = names({"allowed.test"});
  QueryDecision d = decide_query(query("allowed.test", LDNS_RR_TYPE_TXT), n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
  EXPECT_EQ(d.rcode, Rcode::noerror);  // NODATA
  EXPECT_FALSE(d.denied);
  d = decide_query(query("allowed.test", LDNS_RR_TYPE_A, 1, LDNS_RR_CLASS_CH), n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
  EXPECT_EQ(d.rcode, Rcode::refused);
}

TEST(DnsMessage, MalformedQueriesGetADefinedAnswer) {
  const AllowedNames n = names({"allowed.test"});
  const std::string good = query("allowed.test", LDNS_RR_TYPE_A, 0xabcd);
  // Truncated header: nothing to answer.
  EXPECT_EQ(decide_query(good.substr(0, 5), n).verdict, QueryDecision::Verdict::drop);
  // A response: never answered (no reflection loops).
  std::string response = good;
  response[2] = static_cast<char>(response[2] | 0x80);
  EXPECT_EQ(decide_query(response, n).verdict, QueryDecision::Verdict::drop);
  // Header says one question, none follows; a name cut in the middle.
  for (const std::string& bad : {good.substr(0, 12), good.substr(0, 17)}) {
    QueryDecision d = decide_query(bad, n);
    ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
    EXPECT_EQ(d.rcode, Rcode::formerr);
    ldns_pkt* r = parse(d.reply);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(ldns_pkt_id(r), 0xabcd);
    ldns_pkt_free(r);
  }
  // Compression pointer to itself, and two pointers pointing at each other.
  const std::string header = good.substr(0, 12);
  const std::string self_loop = header + std::string("\xc0\x0c\x00\x01\x00\x01", 6);
  const std::string pair_loop = header + std::string(
                                             "\x01"
                                             "a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
                                             10);
  for (const std::string& bad : {self_loop, pair_loop}) {
    QueryDecision d = decide_query(bad, n);
    ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
    EXPECT_EQ(d.rcode, Rcode::formerr);
  }
  // Oversized.
  QueryDecision d = decide_query(good + std::string(2000, '\0'), n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer);
  EXPECT_EQ(d.rcode, Rcode::formerr);
  // Two questions; opcode STATUS.
  std::string two = good;
  two[5] = 2;
  EXPECT_EQ(decide_query(two, n).rcode, Rcode::formerr);
  std::string status = good;
  status[2] = static_cast<char>((status[2] & 0x87) | (2 << 3));
  EXPECT_EQ(decide_query(status, n).rcode, Rcode::notimp);
}

// Opcodes ldns has no name for (3, 6-15) were held in ldns's enum type: undefined behaviour the
// dns_query fuzzer found (corpus/dns_query/crash-opcode-10). Each is NOTIMP with the opcode
// echoed in the header bits.
TEST(DnsMessage, UnnamedOpcodesAreNotimpWithTheOpcodeEchoed) {
  const AllowedNames n = names({"allowed.test"});
  for (int opcode : {10, 3, 15, 6}) {
    std::string q = query("allowed.test", LDNS_RR_TYPE_A, 0x0909);
    q[2] = static_cast<char>((q[2] & 0x87) | (opcode << 3));
    QueryDecision d = decide_query(q, n);
    ASSERT_EQ(d.verdict, QueryDecision::Verdict::answer) << opcode;
    EXPECT_EQ(d.rcode, Rcode::notimp);
    ASSERT_GE(d.reply.size(), 12u);
    EXPECT_EQ((static_cast<uint8_t>(d.reply[2]) >> 3) & 0x0f, opcode);
    EXPECT_EQ(static_cast<uint8_t>(d.reply[3]) & 0x0f, 4);  // RCODE NOTIMP
    EXPECT_NE(static_cast<uint8_t>(d.reply[2]) & 0x80, 0);  // QR
  }
}

TEST(DnsMessage, UpstreamAnswerKeepsTheChainAndClampsTtls) {
  const AllowedNames n = names({"www.allowed.test"});
  const std::string q = query("WWW.allowed.test", LDNS_RR_TYPE_A, 7);
  QueryDecision d = decide_query(q, n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::forward);
  const std::string up = make_upstream_query(d.question, 0x5151);
  ldns_pkt* upq = parse(up);
  ASSERT_NE(upq, nullptr);
  EXPECT_EQ(ldns_pkt_id(upq), 0x5151);
  EXPECT_TRUE(ldns_pkt_rd(upq));
  ldns_pkt_free(upq);

  const std::string reply = upstream_reply(
      up,
      {"www.allowed.test. 86400 IN CNAME cdn.host.test.", "cdn.host.test. 5 IN A 198.51.100.10",
       "cdn.host.test. 600 IN A 198.51.100.11", "unrelated.test. 600 IN A 203.0.113.66",
       "cdn.host.test. 600 IN TXT \"x\""},
      LDNS_RCODE_NOERROR, "glue.test. 600 IN A 203.0.113.77");
  FilteredAnswer a = filter_upstream_answer(reply, d.question, 0x5151, TtlLimits{30, 3600});
  ASSERT_TRUE(a.matched);
  EXPECT_EQ(a.rcode, Rcode::noerror);
  ASSERT_EQ(a.addresses.size(), 2u);
  EXPECT_EQ(a.addresses[0].ip, "198.51.100.10");
  EXPECT_EQ(a.addresses[0].ttl_s, 30u);  // TTL 5 → the minimum
  EXPECT_EQ(a.addresses[1].ip, "198.51.100.11");
  EXPECT_EQ(a.addresses[1].ttl_s, 600u);
  EXPECT_EQ(answer_lines(a.reply),
            (std::vector<std::string>{"www.allowed.test. 3600 in cname cdn.host.test.",
                                      "cdn.host.test. 5 in a 198.51.100.10",
                                      "cdn.host.test. 600 in a 198.51.100.11"}));
  ldns_pkt* r = parse(a.reply);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(ldns_pkt_id(r), 7);
  EXPECT_EQ(ldns_rr_list_rr_count(ldns_pkt_additional(r)), 0u);
  char* qn = ldns_rdf2str(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(r), 0)));
  EXPECT_STREQ(qn, "WWW.allowed.test.");  // the guest's case, echoed
  std::free(qn);
  ldns_pkt_free(r);
}

TEST(DnsMessage, AaaaTtlAboveTheMaximumIsCapped) {
  const AllowedNames n = names({"*.example.test"});
  QueryDecision d = decide_query(query("a.example.test", LDNS_RR_TYPE_AAAA), n);
  ASSERT_EQ(d.verdict, QueryDecision::Verdict::forward);
  const std::string up = make_upstream_query(d.question, 9);
  FilteredAnswer a = filter_upstream_answer(
      upstream_reply(up, {"a.example.test. 604800 IN AAAA 2001:db8::21"}), d.question, 9, {});
  ASSERT_EQ(a.addresses.size(), 1u);
  EXPECT_EQ(a.addresses[0].ip, "2001:db8::21");
  EXPECT_EQ(a.addresses[0].ttl_s, 3600u);
}

TEST(DnsMessage, ForeignRepliesAreIgnoredAndUpstreamFailuresBecomeServfail) {
  const AllowedNames n = names({"allowed.test"});
  QueryDecision d = decide_query(query("allowed.test", LDNS_RR_TYPE_A), n);
  const std::string up = make_upstream_query(d.question, 100);
  const std::string reply = upstream_reply(up, {"allowed.test. 60 IN A 198.51.100.10"});
  EXPECT_FALSE(filter_upstream_answer(reply, d.question, 101, {}).matched);  // wrong id
  const std::string other = upstream_reply(
      make_upstream_query(
          decide_query(query("other.test", LDNS_RR_TYPE_A), names({"other.test"})).question, 100),
      {"other.test. 60 IN A 203.0.113.5"});
  EXPECT_FALSE(filter_upstream_answer(other, d.question, 100, {}).matched);  // other question
  FilteredAnswer a =
      filter_upstream_answer(upstream_reply(up, {}, LDNS_RCODE_REFUSED), d.question, 100, {});
  ASSERT_TRUE(a.matched);
  EXPECT_EQ(a.rcode, Rcode::servfail);
  EXPECT_TRUE(a.addresses.empty());
  a = filter_upstream_answer(upstream_reply(up, {}, LDNS_RCODE_NXDOMAIN), d.question, 100, {});
  EXPECT_EQ(a.rcode, Rcode::nxdomain);
  // NXDOMAIN with records in its answer section (the dns_query fuzzer's finding,
  // corpus/dns_query/crash-nxdomain-with-a): no address is allowed, no record is passed on;
  // the same for a CNAME chain ending in an address.
  for (const auto& records :
       std::vector<std::vector<std::string>>{{"allowed.test. 300 IN A 198.51.100.10"},
                                             {"allowed.test. 300 IN CNAME cdn.host.test.",
                                              "cdn.host.test. 300 IN A 198.51.100.11"}}) {
    a = filter_upstream_answer(upstream_reply(up, records, LDNS_RCODE_NXDOMAIN), d.question, 100,
                               {});
    ASSERT_TRUE(a.matched);
    EXPECT_EQ(a.rcode, Rcode::nxdomain);
    EXPECT_TRUE(a.addresses.empty());
    EXPECT_TRUE(answer_lines(a.reply).empty());
  }
  // Garbage with the right id: SERVFAIL, not a crash.
  a = filter_upstream_answer(
      up.substr(0, 2) + std::string("\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00", 10) + "zz",
      d.question, 100, {});
  ASSERT_TRUE(a.matched);
  EXPECT_EQ(a.rcode, Rcode::servfail);
  EXPECT_TRUE(a.addresses.empty());
}

}  // namespace
