// The span builder of nv-metrics-exporter without sockets: events in, spans and OTLP/JSON out.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <functional>

#include "common/events.h"
#include "otlp_exporter.h"
#include "trace_spans.h"

namespace {

using nv::tracing::Span;
using nv::tracing::TraceAssembler;
namespace s = nv::schema;

const std::string kTrace = "0193b3c4-5e6f-7abc-8def-0123456789ab";
const std::string kHex = "0193b3c45e6f7abc8def0123456789ab";

void add(TraceAssembler& a, const std::string& topic, int64_t time_ns, const std::string& trace,
         const std::function<void(s::Event::Builder)>& fill, int64_t now_ns = 0) {
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<s::Event>();
  nv::stamp_event(e, topic, "svc", "h/svc/1", trace, s::Severity::INFO);
  e.setTimeNs(time_ns);
  fill(e);
  a.add(e.asReader(), now_ns);
}

const Span* named(const std::vector<Span>& spans, const std::string& name) {
  for (const auto& sp : spans) {
    if (sp.name == name) return &sp;
  }
  return nullptr;
}

TEST(TraceSpans, TraceIdIsTheUuidsSixteenBytesInHex) {
  EXPECT_EQ(nv::tracing::otlp_trace_id(kTrace), kHex);
  EXPECT_EQ(nv::tracing::otlp_trace_id("0193B3C4-5E6F-7ABC-8DEF-0123456789AB"), kHex);
  EXPECT_EQ(nv::tracing::otlp_trace_id("00000000-0000-0000-0000-000000000000"), "");
  EXPECT_EQ(nv::tracing::otlp_trace_id("0193b3c45e6f7abc8def0123456789ab"), "");  // no dashes
  EXPECT_EQ(nv::tracing::otlp_trace_id("0193b3c4-5e6f-7abc-8def-0123456789ag"), "");
  EXPECT_EQ(nv::tracing::otlp_trace_id(""), "");
}

TEST(TraceSpans, EndpointGetsTheTracesPathUnlessItHasOne) {
  EXPECT_EQ(nv::tracing::otlp_traces_url("http://127.0.0.1:4318").value(),
            "http://127.0.0.1:4318/v1/traces");
  EXPECT_EQ(nv::tracing::otlp_traces_url("http://127.0.0.1:4318/").value(),
            "http://127.0.0.1:4318/v1/traces");
  EXPECT_EQ(nv::tracing::otlp_traces_url("https://c.example:443/otlp/v1/traces").value(),
            "https://c.example:443/otlp/v1/traces");
  EXPECT_FALSE(nv::tracing::otlp_traces_url("127.0.0.1:4318"));
  EXPECT_FALSE(nv::tracing::otlp_traces_url("grpc://127.0.0.1:4317"));
  EXPECT_FALSE(nv::tracing::otlp_traces_url("http:///v1/traces"));
}

TEST(TraceSpans, AnExecWithoutATaskIsARootRequestWithItsLeaseAndRun) {
  TraceAssembler a({.linger_ns = 100});
  add(a, "vm.acquired", 1'000'000, kTrace, [](s::Event::Builder e) {
    auto p = e.initVmAcquired();
    p.setVmId("vm-1");
    p.setTier(s::SizeTier::SMALL);
    p.setWaitMs(0.25);
  });
  add(a, "exec.started", 2'000'000, kTrace, [](s::Event::Builder e) {
    e.initExecStarted().setVmId("vm-1");
    e.getExecStarted().setLanguage(s::Language::BASH);
  });
  add(
      a, "exec.finished", 9'000'000, kTrace,
      [](s::Event::Builder e) {
        auto p = e.initExecFinished();
        p.setVmId("vm-1");
        p.setLanguage(s::Language::BASH);
        p.setDurationMs(8.5);
        p.setStatus("timeout");
      },
      10);
  EXPECT_TRUE(a.take_ready(50).empty());  // lingering for the release
  add(
      a, "vm.released", 9'500'000, kTrace,
      [](s::Event::Builder e) { e.initVmReleased().setVmId("vm-1"); }, 60);
  auto spans = a.take_ready(110);
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(a.open_traces(), 0u);
  const Span* req = named(spans, "exec.request");
  const Span* lease = named(spans, "vm.lease");
  const Span* run = named(spans, "exec bash");
  ASSERT_TRUE(req && lease && run);
  EXPECT_EQ(req->parent_id, "");
  EXPECT_EQ(req->start_ns, 9'000'000 - 8'500'000);
  EXPECT_EQ(req->status, nv::tracing::StatusCode::error);
  EXPECT_EQ(lease->parent_id, req->span_id);
  EXPECT_EQ(lease->start_ns, 1'000'000 - 250'000);
  EXPECT_EQ(lease->end_ns, 9'500'000);
  EXPECT_EQ(run->parent_id, lease->span_id);
  EXPECT_EQ(run->start_ns, 2'000'000);
  EXPECT_EQ(run->end_ns, 9'000'000);
  for (const auto& sp : spans) EXPECT_EQ(sp.trace_id, kHex);
}

TEST(TraceSpans, EventsWithoutAUuidTraceOrOfOtherTopicsMakeNoSpans) {
  TraceAssembler a({.linger_ns = 0});
  add(a, "exec.finished", 1, "", [](s::Event::Builder e) { e.initExecFinished().setStatus("ok"); });
  add(a, "exec.finished", 1, "not-a-uuid",
      [](s::Event::Builder e) { e.initExecFinished().setStatus("ok"); });
  add(a, "vm.stats", 1, kTrace, [](s::Event::Builder e) { e.initVmStats().setVmId("v"); });
  EXPECT_EQ(a.open_traces(), 0u);
  EXPECT_TRUE(a.take_all().empty());
}

TEST(TraceSpans, AnUnfinishedTaskIsFlushedAfterMaxAgeAndMarkedAsSuch) {
  TraceAssembler a({.linger_ns = 0, .max_age_ns = 1000});
  add(
      a, "task.started", 5, kTrace, [](s::Event::Builder e) { e.initTaskStarted().setModel("m"); },
      0);
  add(
      a, "llm.call", 50, kTrace,
      [](s::Event::Builder e) {
        auto p = e.initLlmCall();
        p.setModel("m");
        p.setOutcome("timedOut");
      },
      1);
  EXPECT_TRUE(a.take_ready(999).empty());
  auto spans = a.take_ready(1000);
  ASSERT_EQ(spans.size(), 2u);
  const Span* task = named(spans, "task");
  ASSERT_TRUE(task);
  EXPECT_EQ(task->status, nv::tracing::StatusCode::error);
  EXPECT_EQ(task->status_message, "task.finished was not seen");
  EXPECT_EQ(named(spans, "chat m")->parent_id, task->span_id);
  EXPECT_EQ(named(spans, "chat m")->status, nv::tracing::StatusCode::error);
}

TEST(TraceSpans, BeyondMaxTracesTheOldestGoesOutAsItIs) {
  TraceAssembler a({.max_traces = 2, .linger_ns = 1'000'000});
  const std::string traces[] = {"0193b3c4-5e6f-7abc-8def-000000000001",
                                "0193b3c4-5e6f-7abc-8def-000000000002",
                                "0193b3c4-5e6f-7abc-8def-000000000003"};
  for (int i = 0; i < 3; ++i) {
    add(
        a, "task.started", 1, traces[i], [](s::Event::Builder e) { e.initTaskStarted(); }, i);
  }
  EXPECT_EQ(a.open_traces(), 2u);
  auto spans = a.take_ready(3);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].trace_id, "0193b3c45e6f7abc8def000000000001");
}

TEST(TraceSpans, OtlpJsonGroupsByServiceWithHexIdsIntegerEnumsAndStringTimes) {
  Span sp;
  sp.trace_id = kHex;
  sp.span_id = "00f067aa0ba902b7";
  sp.name = "chat \"m\"";
  sp.kind = nv::tracing::SpanKind::client;
  sp.start_ns = 1700000000000000000;
  sp.end_ns = 1700000000000000123;
  sp.service = "llm-gateway";
  sp.instance = "h/llm-gateway/7";
  sp.attributes = {
      {"a.s", std::string("x")}, {"a.i", int64_t{9007199254740993}}, {"a.d", 1.5}, {"a.b", true}};
  sp.status = nv::tracing::StatusCode::error;
  sp.status_message = "boom";
  Span child = sp;
  child.span_id = "00f067aa0ba902b8";
  child.parent_id = sp.span_id;
  child.service = "orchestrator";
  std::string json = nv::tracing::otlp_json({sp, child}, "1.2.3");
  rapidjson::Document d;
  d.Parse(json.c_str());
  ASSERT_FALSE(d.HasParseError()) << json;
  ASSERT_EQ(d["resourceSpans"].Size(), 2u);
  const auto& r0 = d["resourceSpans"][0];
  EXPECT_STREQ(r0["resource"]["attributes"][0]["key"].GetString(), "service.name");
  EXPECT_STREQ(r0["resource"]["attributes"][0]["value"]["stringValue"].GetString(), "llm-gateway");
  const auto& scope = r0["scopeSpans"][0];
  EXPECT_STREQ(scope["scope"]["version"].GetString(), "1.2.3");
  const auto& j = scope["spans"][0];
  EXPECT_STREQ(j["traceId"].GetString(), kHex.c_str());
  EXPECT_STREQ(j["spanId"].GetString(), "00f067aa0ba902b7");
  EXPECT_FALSE(j.HasMember("parentSpanId"));
  EXPECT_STREQ(j["name"].GetString(), "chat \"m\"");
  EXPECT_EQ(j["kind"].GetInt(), 3);
  EXPECT_STREQ(j["startTimeUnixNano"].GetString(), "1700000000000000000");
  EXPECT_STREQ(j["endTimeUnixNano"].GetString(), "1700000000000000123");
  EXPECT_STREQ(j["attributes"][1]["value"]["intValue"].GetString(), "9007199254740993");
  EXPECT_EQ(j["attributes"][2]["value"]["doubleValue"].GetDouble(), 1.5);
  EXPECT_TRUE(j["attributes"][3]["value"]["boolValue"].GetBool());
  EXPECT_EQ(j["status"]["code"].GetInt(), 2);
  EXPECT_STREQ(j["status"]["message"].GetString(), "boom");
  EXPECT_STREQ(d["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["parentSpanId"].GetString(),
               "00f067aa0ba902b7");
}

}  // namespace
