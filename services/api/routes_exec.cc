// routes_exec.cc — POST /v1/exec: run code once in a fresh microVM (the bus service "exec", as
// nv-exec does). JSON in; JSON out, or the output streamed as NDJSON or Server-Sent Events when
// the Accept header asks for application/x-ndjson or text/event-stream:
//   {"event":"status","data":"started vm=..."}  {"event":"stdout","data":"42\n"}  ...
//   {"event":"result", <the result object>}      or {"event":"error","error":{...}}
#include <nv/schema/exec.capnp.h>

#include "api.h"
#include "common/frames.h"
#include "exec_json.h"

namespace nv::api {
namespace {

using namespace std::chrono_literals;

struct ExecCall {
  std::shared_ptr<capnp::MallocMessageBuilder> mb = std::make_shared<capnp::MallocMessageBuilder>();
  std::chrono::milliseconds deadline{0};
};

Result<ExecCall> build_exec(const httplib::Request& req, const Caller& c, const ApiOptions& o) {
  rapidjson::Document doc;
  if (auto st = parse_object(req.body, exec_fields({{"tier", JType::string}}), &doc); !st) {
    return st.error();
  }
  ExecCall call;
  auto e = bus::init_body<schema::ExecRequest>(*call.mb);
  e.setTraceId(c.trace_id);
  schema::Language lang;
  if (!parse_language(get_string(doc, "language"), &lang)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "language must be python, bash, sh or javascript (node, js, py)");
  }
  e.setLanguage(lang);
  e.setCode(get_string(doc, "code"));
  std::string in = get_string(doc, "stdin");
  e.setStdin(kj::arrayPtr(reinterpret_cast<const kj::byte*>(in.data()), in.size()));
  std::vector<std::pair<std::string, std::string>> env;
  if (auto st = parse_env(doc, &env); !st) return st.error();
  auto el = e.initEnv(static_cast<unsigned>(env.size()));
  for (unsigned i = 0; i < env.size(); ++i) {
    el[i].setName(env[i].first);
    el[i].setValue(env[i].second);
  }
  e.setTimeoutMs(get_uint32(doc, "timeoutMs"));
  e.setOutputCapBytes(get_uint32(doc, "outputCapBytes"));
  e.setTailBytes(get_uint32(doc, "tailBytes"));
  if (doc.HasMember("tier")) {
    schema::SizeTier t;
    if (!parse_tier(get_string(doc, "tier"), &t)) {
      return make_error(ErrorCode::BAD_REQUEST, "tier must be small, medium or large");
    }
    e.setTier(t);
  }
  uint32_t timeout = get_uint32(doc, "timeoutMs", 10000);
  call.deadline = std::chrono::milliseconds(timeout ? timeout : 10000) +
                  std::chrono::milliseconds(o.bus_timeout_ms);
  return call;
}

}  // namespace

void add_exec_routes(Api& api) {
  api.route("POST", "/v1/exec", kScopeSandbox,
            [&api](const httplib::Request& req, httplib::Response& res, Caller& c) {
              auto call = build_exec(req, c, api.options());
              if (!call) return send_bus_error(res, call.error(), c.trace_id);
              StreamFormat fmt = stream_format(req);
              if (fmt == StreamFormat::none) {
                auto r = api.call("exec", call->mb.get(), call->deadline, c.trace_id);
                if (!r) return send_bus_error(res, r.error(), c.trace_id);
                auto body = r->body.root<schema::ExecResult>();
                if (!body) return send_bus_error(res, body.error(), c.trace_id);
                res.set_content(exec_result_json(*body, c.trace_id) + "\n", "application/json");
                return;
              }
              std::string trace = c.trace_id;
              ExecCall ec = std::move(*call);
              res.set_header("Cache-Control", "no-store");
              res.set_chunked_content_provider(
                  content_type(fmt), [&api, ec, trace, fmt](size_t, httplib::DataSink& sink) {
                    auto emit = [&](const std::string& type, const std::string& json) {
                      std::string e = stream_event(fmt, type, json);
                      sink.write(e.data(), e.size());
                    };
                    auto r = api.call(
                        "exec", ec.mb.get(), ec.deadline, trace,
                        [&](Client::Incoming& in) {
                          auto chunk = in.body.root<schema::ExecChunk>();
                          if (!chunk) return;
                          std::string type;
                          std::string json = exec_chunk_json(*chunk, &type);
                          emit(type, json);
                        },
                        [&] { return sink.is_writable(); });
                    if (r) {
                      if (auto body = r->body.root<schema::ExecResult>(); body) {
                        std::string j = exec_result_json(*body, trace);
                        emit("result", "{\"event\":\"result\"," + j.substr(1));
                      } else {
                        r = body.error();
                      }
                    }
                    if (!r) {
                      std::string e =
                          error_json(code_name(r.error().code), r.error().message, trace);
                      emit("error", "{\"event\":\"error\"," + e.substr(1));
                    }
                    sink.done();
                    return true;
                  });
            });
}

}  // namespace nv::api
