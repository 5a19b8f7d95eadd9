// api_unit_test.cc — nv-api's parts that need no server: W3C traceparent → bus trace id, strict
// JSON bodies (unknown fields, wrong types, nesting), the bus error → HTTP status table, and API
// keys (a key verifies; a changed secret, another id, a malformed key do not; the file holds
// only hashes; it is re-read when it changes).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "api.h"
#include "api_keys.h"
#include "http_json.h"

namespace {

using nv::ErrorCode;
using nv::api::FieldSpec;
using nv::api::JType;

TEST(Traceparent, ValidHeaderGivesUuidText) {
  // The W3C spec's own example (https://www.w3.org/TR/trace-context/#examples-of-http-traceparent-headers).
  EXPECT_EQ(
      nv::api::trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
      "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
  EXPECT_EQ(
      nv::api::trace_id_from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
      "0af76519-16cd-43dd-8448-eb211c80319c");
}

TEST(Traceparent, InvalidHeadersAreIgnored) {
  for (const char* h : {"", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent
                        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
                        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"}) {
    EXPECT_EQ(nv::api::trace_id_from_traceparent(h), "") << h;
  }
}

TEST(Traceparent, OursRoundTrips) {
  std::string tp = nv::api::traceparent_for("4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
  ASSERT_EQ(tp.size(), 55u);
  EXPECT_EQ(nv::api::trace_id_from_traceparent(tp), "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
}

const std::vector<FieldSpec> kFields = {
    {"language", JType::string, true}, {"timeoutMs", JType::uint32}, {"env", JType::object}};

std::string parse_error(const std::string& body) {
  rapidjson::Document d;
  auto st = nv::api::parse_object(body, kFields, &d);
  return st ? "" : st.error().message;
}

TEST(StrictJson, AcceptsTheSpec) {
  EXPECT_EQ(parse_error(R"({"language":"python","timeoutMs":10,"env":{}})"), "");
  EXPECT_EQ(parse_error(R"({"language":"python"})"), "");
}

TEST(StrictJson, RefusesEachKindOfBadBody) {
  EXPECT_NE(parse_error(R"({"language":"python","x":1})").find("unknown field 'x'"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"language":"python","timeoutMs":-1})").find("'timeoutMs' must be"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"language":"python","timeoutMs":4294967296})").find("timeoutMs"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"language":"python","timeoutMs":1.5})").find("timeoutMs"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"language":7})").find("'language' must be a string"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({})").find("'language' is required"), std::string::npos);
  EXPECT_NE(parse_error("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error(R"({"language":"python"} trailing)").find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(parse_error("[]").find("JSON object"), std::string::npos);
  EXPECT_NE(parse_error(std::string(200, '[')).find("nests deeper"), std::string::npos);
  EXPECT_NE(parse_error("{\"language\":\"\xff\"}").find("not valid JSON"), std::string::npos);
}

TEST(StatusTable, BusErrorsMapToHttp) {
  EXPECT_EQ(nv::api::http_status(ErrorCode::BAD_REQUEST), 400);
  EXPECT_EQ(nv::api::http_status(ErrorCode::UNKNOWN_SANDBOX), 404);  // never 403
  EXPECT_EQ(nv::api::http_status(ErrorCode::UNKNOWN_SNAPSHOT), 404);
  EXPECT_EQ(nv::api::http_status(ErrorCode::NOT_FOUND), 404);
  EXPECT_EQ(nv::api::http_status(ErrorCode::SANDBOX_STATE), 409);
  EXPECT_EQ(nv::api::http_status(ErrorCode::SANDBOX_LIMIT), 429);
  EXPECT_EQ(nv::api::http_status(ErrorCode::OVERLOADED), 429);
  EXPECT_EQ(nv::api::http_status(ErrorCode::VM_FAILED), 502);
  EXPECT_EQ(nv::api::http_status(ErrorCode::NO_WORKER), 503);
  EXPECT_EQ(nv::api::http_status(ErrorCode::TIMED_OUT), 504);
  EXPECT_EQ(nv::api::http_status(static_cast<ErrorCode>(999)), 500);
}

class Keys : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nv-api-keys-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/api-keys";
  }
  void TearDown() override {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string add(const std::string& tenant, uint8_t scopes, nv::api::KeyRecord* rec) {
    auto key = nv::api::generate_key(tenant, scopes, rec);
    EXPECT_TRUE(key.ok());
    std::ofstream(path_, std::ios::app) << nv::api::record_line(*rec);
    return *key;
  }
  std::string dir_, path_;
};

TEST_F(Keys, VerifyOnlyTheRightKey) {
  nv::api::KeyRecord a, b;
  std::string ka = add("alice", nv::api::kScopeSandbox, &a);
  nv::api::KeyStore store(path_);
  ASSERT_TRUE(store.load().ok());
  auto got = store.verify(ka);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->tenant, "alice");
  EXPECT_EQ(got->scopes, nv::api::kScopeSandbox);
  std::string tampered = ka;
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  EXPECT_FALSE(store.verify(tampered));
  EXPECT_FALSE(store.verify("nvk_" + std::string(16, '0') + ka.substr(20)));  // another id
  EXPECT_FALSE(store.verify(""));
  EXPECT_FALSE(store.verify(ka + "0"));
  EXPECT_FALSE(store.verify("Bearer " + ka));
  // The file holds the id and a hash, never the secret.
  std::ifstream in(path_);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find(ka.substr(21)), std::string::npos);
  EXPECT_NE(text.find(a.id), std::string::npos);
  // A key added while the store is in use is seen (the file is re-read when it changes).
  std::string kb = add("bob", nv::api::kScopeTask | nv::api::kScopeAdmin, &b);
  auto gb = store.verify(kb);
  ASSERT_TRUE(gb);
  EXPECT_EQ(gb->tenant, "bob");
}

TEST_F(Keys, BadLinesAndNamesAreRefused) {
  std::ofstream(path_) << "# comment\nnot a key line\n0123 bob sandbox abcd\n";
  nv::api::KeyStore store(path_);
  ASSERT_TRUE(store.load().ok());
  EXPECT_EQ(store.size(), 0u);
  nv::api::KeyRecord r;
  EXPECT_FALSE(nv::api::generate_key("bad tenant", nv::api::kScopeTask, &r).ok());
  EXPECT_FALSE(nv::api::generate_key("", nv::api::kScopeTask, &r).ok());
  uint8_t s = 0;
  EXPECT_FALSE(nv::api::parse_scopes("root", &s));
  EXPECT_FALSE(nv::api::parse_scopes("", &s));
  EXPECT_TRUE(nv::api::parse_scopes("sandbox,admin", &s));
  EXPECT_EQ(s, nv::api::kScopeSandbox | nv::api::kScopeAdmin);
}

}  // namespace
