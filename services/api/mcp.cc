// mcp.cc — the MCP server's messages and tools (see mcp.h).
#include "mcp.h"

#include <nv/schema/exec.capnp.h>
#include <nv/schema/task.capnp.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sodium.h>

#include "common/enum_name.h"
#include "common/frames.h"
#include "common/json_depth.h"
#include "common/sandbox_client.h"
#include "common/sandbox_json.h"
#include "common/trace_id.h"
#include "common/utf8.h"
#include "exec_json.h"

namespace nv::mcp {
namespace {

using namespace std::chrono_literals;
using rapidjson::Document;
using rapidjson::Value;

const char* const kVersions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", nullptr};

std::string dump(const Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return sb.GetString();
}

// ---- tool table: names, descriptions and JSON Schemas (2020-12) -----------------------------

struct ToolDef {
  const char* name;
  const char* title;
  const char* description;
  const char* input_schema;
  const char* output_schema;
};

#define EXEC_OUT                                                                                 \
  R"({"type":"object","properties":{"exitCode":{"type":"integer"},"stdout":{"type":"string"},)"  \
  R"("stderr":{"type":"string"},"timedOut":{"type":"boolean"},"durationMs":{"type":"number"}},)" \
  R"("required":["exitCode","stdout","stderr"]})"
#define LANG R"("language":{"type":"string","enum":["python","bash","sh","javascript"]})"
#define SBX R"("sandboxId":{"type":"string","description":"id from create_sandbox"})"

const ToolDef kTools[] = {
    {"run_code", "Run code once",
     "Runs a program once in a fresh, throw-away microVM and returns its output and exit code.",
     R"({"type":"object","properties":{)" LANG
     R"(,"code":{"type":"string"},"timeoutMs":{"type":"integer","minimum":1}},)"
     R"("required":["language","code"],"additionalProperties":false})",
     EXEC_OUT},
    {"create_sandbox", "Create a sandbox",
     "Creates a sandbox: a microVM that keeps its files, processes and interpreter state "
     "between calls until destroyed (or its lifetime or idle timeout ends).",
     R"({"type":"object","properties":{"tier":{"type":"string","enum":["small","medium","large"]},)"
     R"("lifetimeMs":{"type":"integer","minimum":0},)"
     R"("idleTimeoutMs":{"type":"integer","minimum":0},)"
     R"("mounts":{"type":"array","maxItems":8,"description":"host directories copied in; the )"
     R"(server must allow mounts and hostPath be under the executor's --mount-root","items":)"
     R"({"type":"object","properties":{"hostPath":{"type":"string"},"guestPath":{"type":"string",)"
     R"("description":"absolute, under /home/agent"},"readOnly":{"type":"boolean"},)"
     R"("quotaBytes":{"type":"integer","minimum":0},"quotaFiles":{"type":"integer","minimum":0}},)"
     R"("required":["hostPath","guestPath"],"additionalProperties":false}}},)"
     R"("additionalProperties":false})",
     R"({"type":"object","properties":{"sandboxId":{"type":"string"},"state":{"type":"string"},)"
     R"("vmId":{"type":"string"}},"required":["sandboxId","state"]})"},
    {"exec", "Run code in a sandbox",
     "Runs a program in an existing sandbox; files and (with `context`) interpreter variables "
     "persist between calls.",
     R"({"type":"object","properties":{)" SBX R"(,)" LANG
     R"(,"code":{"type":"string"},"timeoutMs":{"type":"integer","minimum":1},)"
     R"("context":{"type":"string","description":"name of a persistent python/javascript interpreter"}},)"
     R"("required":["sandboxId","language","code"],"additionalProperties":false})",
     EXEC_OUT},
    {"write_file", "Write a file",
     "Writes a file in a sandbox (under /home/agent or /tmp), replacing it.",
     R"({"type":"object","properties":{)" SBX
     R"(,"path":{"type":"string"},"content":{"type":"string"},)"
     R"("encoding":{"type":"string","enum":["utf-8","base64"],"default":"utf-8"}},)"
     R"("required":["sandboxId","path","content"],"additionalProperties":false})",
     R"({"type":"object","properties":{"path":{"type":"string"},"size":{"type":"integer"}},)"
     R"("required":["path","size"]})"},
    {"read_file", "Read a file",
     "Reads a file from a sandbox (at most 4 MiB); `encoding` base64 for binary files.",
     R"({"type":"object","properties":{)" SBX
     R"(,"path":{"type":"string"},"encoding":{"type":"string","enum":["utf-8","base64"],"default":"utf-8"}},)"
     R"("required":["sandboxId","path"],"additionalProperties":false})",
     R"({"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"},)"
     R"("encoding":{"type":"string"},"size":{"type":"integer"}},"required":["path","content","size"]})"},
    {"list_files", "List files", "Lists a directory in a sandbox.",
     R"({"type":"object","properties":{)" SBX
     R"(,"path":{"type":"string"},"recursive":{"type":"boolean"}},)"
     R"("required":["sandboxId","path"],"additionalProperties":false})",
     R"({"type":"object","properties":{"entries":{"type":"array","items":{"type":"object",)"
     R"("properties":{"path":{"type":"string"},"type":{"type":"string"},"size":{"type":"integer"}}}}},)"
     R"("required":["entries"]})"},
    {"fork_sandbox", "Fork a sandbox",
     "Makes `count` new sandboxes with the running state (files, processes, interpreters) of "
     "one; the original keeps running.",
     R"({"type":"object","properties":{)" SBX
     R"(,"count":{"type":"integer","minimum":1,"maximum":16}},)"
     R"("required":["sandboxId"],"additionalProperties":false})",
     R"({"type":"object","properties":{"sandboxIds":{"type":"array","items":{"type":"string"}}},)"
     R"("required":["sandboxIds"]})"},
    {"destroy_sandbox", "Destroy a sandbox", "Destroys a sandbox and its microVM.",
     R"({"type":"object","properties":{)" SBX
     R"(},"required":["sandboxId"],"additionalProperties":false})",
     R"({"type":"object","properties":{"sandboxId":{"type":"string"},"state":{"type":"string"}},)"
     R"("required":["sandboxId","state"]})"},
    {"submit_task", "Submit an agent task",
     "Gives a task to NeuroVisor's own agent: a model writes code, runs it in microVMs and "
     "answers. Progress is reported while it runs.",
     R"({"type":"object","properties":{"prompt":{"type":"string"},"model":{"type":"string"},)"
     R"("maxIterations":{"type":"integer","minimum":1}},"required":["prompt"],"additionalProperties":false})",
     R"({"type":"object","properties":{"status":{"type":"string"},"answer":{"type":"string"},)"
     R"("iterations":{"type":"integer"},"toolCalls":{"type":"integer"}},"required":["status","answer"]})"},
};

// ---- JSON-RPC plumbing ------------------------------------------------------------------------

std::string response(const Value& id, const Value& result) {
  Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  d.AddMember("jsonrpc", "2.0", a);
  d.AddMember("id", Value(id, a), a);
  d.AddMember("result", Value(result, a), a);
  return dump(d);
}

std::string rpc_error(const Value& id, int code, const std::string& message) {
  Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  d.AddMember("jsonrpc", "2.0", a);
  d.AddMember("id", Value(id, a), a);
  Value e(rapidjson::kObjectType);
  e.AddMember("code", code, a);
  std::string m = utf8::sanitize(message);
  e.AddMember("message", Value(m.c_str(), a), a);
  d.AddMember("error", e, a);
  return dump(d);
}

class ToolError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Call {
  Client& bus;
  const Options& opt;
  const Value& args;
  std::string trace;
  std::function<void(const std::string&)> progress;  // no-op without a progressToken

  std::string str(const char* k, bool required = true) const {
    auto it = args.FindMember(k);
    if (it == args.MemberEnd()) {
      if (required) throw ToolError(std::string("argument '") + k + "' is required");
      return {};
    }
    if (!it->value.IsString())
      throw ToolError(std::string("argument '") + k + "' must be a string");
    return {it->value.GetString(), it->value.GetStringLength()};
  }
  uint32_t num(const char* k, uint32_t def) const {
    auto it = args.FindMember(k);
    if (it == args.MemberEnd()) return def;
    if (!it->value.IsUint())
      throw ToolError(std::string("argument '") + k + "' must be a non-negative integer");
    return it->value.GetUint();
  }
  bool flag(const char* k) const {
    auto it = args.FindMember(k);
    if (it == args.MemberEnd()) return false;
    if (!it->value.IsBool()) throw ToolError(std::string("argument '") + k + "' must be a boolean");
    return it->value.GetBool();
  }
  sandbox::SandboxClient sandboxes(std::chrono::milliseconds timeout) const {
    sandbox::ClientCallOptions o;
    o.timeout = timeout;
    o.trace_id = trace;
    return sandbox::SandboxClient(bus, opt.owner, o);
  }
  std::chrono::milliseconds bus_timeout() const {
    return std::chrono::milliseconds(opt.bus_timeout_ms);
  }
};

[[noreturn]] void fail(const Error& e) { throw ToolError(code_name(e.code) + ": " + e.message); }

schema::Language language(const Call& c) {
  schema::Language l;
  if (!api::parse_language(c.str("language"), &l)) {
    throw ToolError("language must be python, bash, sh or javascript");
  }
  return l;
}

std::string b64(std::string_view s) {
  std::string out(sodium_base64_encoded_len(s.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(s.data()),
                    s.size(), sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();
  return out;
}

std::string unb64(const std::string& s) {
  std::string out(s.size(), '\0');
  size_t n = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), s.data(),
                        s.size(), " \r\n", &n, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    throw ToolError("content is not valid base64");
  }
  out.resize(n);
  return out;
}

std::string run_code(Call& c) {
  capnp::MallocMessageBuilder mb;
  auto e = bus::init_body<schema::ExecRequest>(mb);
  e.setTraceId(c.trace);
  e.setLanguage(language(c));
  e.setCode(c.str("code"));
  uint32_t timeout = c.num("timeoutMs", 0);
  e.setTimeoutMs(timeout);
  auto deadline = std::chrono::milliseconds(timeout ? timeout : 10000) + c.bus_timeout();
  auto r = c.bus.call(
      "exec", &mb, deadline,
      [&](Client::Incoming& in) {
        if (auto ch = in.body.root<schema::ExecChunk>(); ch) {  // "started vm=...", then output
          auto d = ch->getData();
          c.progress(std::string(reinterpret_cast<const char*>(d.begin()), d.size()));
        }
      },
      c.trace);
  if (!r) fail(r.error());
  auto body = r->body.root<schema::ExecResult>();
  if (!body) fail(body.error());
  return api::exec_result_json(*body, c.trace);
}

std::string create_sandbox(Call& c) {
  sandbox::Spec spec;
  if (auto t = c.str("tier", false); !t.empty() && !api::parse_tier(t, &spec.tier)) {
    throw ToolError("tier must be small, medium or large");
  }
  spec.lifetime_ms = c.num("lifetimeMs", 0);
  spec.idle_timeout_ms = c.num("idleTimeoutMs", 0);
  if (auto it = c.args.FindMember("mounts"); it != c.args.MemberEnd()) {
    auto mounts = sandbox::mounts_from_json(it->value);
    if (!mounts) fail(mounts.error());
    spec.mounts = std::move(*mounts);
  }
  if (!spec.mounts.empty() && !c.opt.allow_mounts) {
    fail(make_error(ErrorCode::MOUNT_REFUSED,
                    "host directory mounts are off in this server (rule: --allow-mounts is not "
                    "set); nothing was leased"));
  }
  auto r = c.sandboxes(c.bus_timeout()).create(spec);
  if (!r) fail(r.error());
  return "{\"sandboxId\":" + api::json_string(r->sandbox_id) +
         ",\"state\":\"running\",\"vmId\":" + api::json_string(r->vm_id) + "}";
}

std::string exec(Call& c) {
  sandbox::ExecSpec spec;
  spec.language = language(c);
  spec.code = c.str("code");
  spec.timeout_ms = c.num("timeoutMs", 0);
  spec.context = c.str("context", false);
  auto deadline =
      std::chrono::milliseconds(spec.timeout_ms ? spec.timeout_ms : 10000) + c.bus_timeout();
  auto r = c.sandboxes(deadline).exec(c.str("sandboxId"), spec,
                                      [&](schema::Stream, std::string_view data) {
                                        c.progress(std::string(data));  // status, then output
                                      });
  if (!r) fail(r.error());
  return api::exec_result_json(*r, c.trace);
}

std::string write_file(Call& c) {
  std::string content = c.str("content");
  std::string enc = c.str("encoding", false);
  if (enc == "base64") {
    content = unb64(content);
  } else if (!enc.empty() && enc != "utf-8") {
    throw ToolError("encoding must be utf-8 or base64");
  }
  if (content.size() > (4u << 20))
    throw ToolError("content is over 4 MiB; use nv-api's files route");
  std::string path = c.str("path");
  auto r = c.sandboxes(c.bus_timeout()).write_file(c.str("sandboxId"), path, content);
  if (!r) fail(r.error());
  return "{\"path\":" + api::json_string(r->path) + ",\"size\":" + std::to_string(r->size) + "}";
}

std::string read_file(Call& c) {
  std::string enc = c.str("encoding", false);
  if (!enc.empty() && enc != "utf-8" && enc != "base64")
    throw ToolError("encoding must be utf-8 or base64");
  auto r = c.sandboxes(c.bus_timeout()).read_file(c.str("sandboxId"), c.str("path"), 0, 4u << 20);
  if (!r) fail(r.error());
  bool base64 = enc == "base64";
  return "{\"path\":" + api::json_string(r->path) +
         ",\"content\":" + api::json_string(base64 ? b64(r->data) : r->data) + ",\"encoding\":\"" +
         (base64 ? "base64" : "utf-8") + "\",\"size\":" + std::to_string(r->size) + "}";
}

std::string list_files(Call& c) {
  auto r = c.sandboxes(c.bus_timeout())
               .list_files(c.str("sandboxId"), c.str("path"), c.flag("recursive"));
  if (!r) fail(r.error());
  std::string out = "{\"entries\":[";
  for (size_t i = 0; i < r->size(); ++i) {
    const auto& e = (*r)[i];
    std::string type = enum_name(e.type);
    out += (i ? "," : "") + std::string("{\"path\":") + api::json_string(e.path) + ",\"type\":\"" +
           type + "\",\"size\":" + std::to_string(e.size) + "}";
  }
  return out + "]}";
}

std::string fork_sandbox(Call& c) {
  auto r = c.sandboxes(180s).fork(c.str("sandboxId"), c.num("count", 1));
  if (!r) fail(r.error());
  std::string out = "{\"sandboxIds\":[";
  for (size_t i = 0; i < r->size(); ++i)
    out += (i ? "," : "") + api::json_string((*r)[i].sandbox_id);
  return out + "]}";
}

std::string destroy_sandbox(Call& c) {
  auto r = c.sandboxes(c.bus_timeout()).destroy(c.str("sandboxId"));
  if (!r) fail(r.error());
  return "{\"sandboxId\":" + api::json_string(r->sandbox_id) + ",\"state\":\"destroyed\"}";
}

std::string submit_task(Call& c) {
  capnp::MallocMessageBuilder mb;
  auto s = bus::init_body<schema::SubmitTask>(mb);
  s.setPrompt(c.str("prompt"));
  s.setModel(c.str("model", false));
  s.setMaxIterations(c.num("maxIterations", 0));
  s.setTraceId(c.trace);
  auto r = c.bus.call(
      "task", &mb, 600s,
      [&](Client::Incoming& in) {
        auto p = in.body.root<schema::TaskProgress>();
        if (!p) return;
        using P = schema::TaskProgress;
        std::string it = "iteration " + std::to_string(p->getIteration()) + ": ";
        switch (p->which()) {
          case P::THINKING:
            c.progress(it + "asking the model");
            break;
          case P::TOOL_CALL:
            c.progress(it + "running code: " + std::string(p->getToolCall().getCode().cStr()));
            break;
          case P::EXEC_RESULT:
            c.progress(it + "code exited " + std::to_string(p->getExecResult().getExitCode()));
            break;
          case P::MODEL_TEXT:
            c.progress(it + p->getModelText().cStr());
            break;
          default:
            break;  // deltas and output are too fine-grained for progress messages
        }
      },
      c.trace);
  if (!r) fail(r.error());
  auto t = r->body.root<schema::TaskResult>();
  if (!t) fail(t.error());
  if (t->getStatus() != schema::TaskStatus::COMPLETED) {
    std::string why =
        t->hasError() ? Error::from_capnp(t->getError()).to_string() : "not completed";
    throw ToolError("the task ended without an answer: " + why);
  }
  return "{\"status\":\"completed\",\"answer\":" + api::json_string(t->getAnswer().cStr()) +
         ",\"iterations\":" + std::to_string(t->getIterations()) +
         ",\"toolCalls\":" + std::to_string(t->getToolCalls()) + "}";
}

using ToolFn = std::string (*)(Call&);
ToolFn tool_fn(const std::string& name) {
  if (name == "run_code") return run_code;
  if (name == "create_sandbox") return create_sandbox;
  if (name == "exec") return exec;
  if (name == "write_file") return write_file;
  if (name == "read_file") return read_file;
  if (name == "list_files") return list_files;
  if (name == "fork_sandbox") return fork_sandbox;
  if (name == "destroy_sandbox") return destroy_sandbox;
  if (name == "submit_task") return submit_task;
  return nullptr;
}

}  // namespace

const char* const* supported_versions() { return kVersions; }

bool Server::handle(const std::string& message, const Emit& emit) {
  Document in;
  Value null_id;
  if (json_nesting_exceeds(message)) {
    emit(rpc_error(null_id, -32700, "the message nests too deeply"));
    return true;
  }
  in.Parse(message.data(), message.size());
  if (in.HasParseError()) {
    emit(rpc_error(null_id, -32700, "parse error: the message is not JSON"));
    return true;
  }
  if (!in.IsObject()) {
    emit(rpc_error(null_id, -32600, "a message is one JSON-RPC object (batches are not served)"));
    return true;
  }
  auto id_it = in.FindMember("id");
  auto method_it = in.FindMember("method");
  bool is_request = id_it != in.MemberEnd() && method_it != in.MemberEnd();
  if (!is_request) return false;  // notifications (initialized, cancelled) and responses
  const Value& id = id_it->value;
  if (!(id.IsString() || id.IsInt64()) || !method_it->value.IsString()) {
    emit(rpc_error(null_id, -32600, "invalid request: id must be a string or integer"));
    return true;
  }
  std::string method = method_it->value.GetString();
  Value empty(rapidjson::kObjectType);
  auto params_it = in.FindMember("params");
  const Value& params =
      params_it != in.MemberEnd() && params_it->value.IsObject() ? params_it->value : empty;

  Document result(rapidjson::kObjectType);
  auto& a = result.GetAllocator();
  if (method == "initialize") {
    std::string asked;
    if (auto v = params.FindMember("protocolVersion");
        v != params.MemberEnd() && v->value.IsString()) {
      asked = v->value.GetString();
    }
    std::string chosen = "2025-06-18";
    for (const char* const* v = kVersions; *v; ++v) {
      if (asked == *v) chosen = asked;
    }
    result.AddMember("protocolVersion", Value(chosen.c_str(), a), a);
    Value caps(rapidjson::kObjectType), tools(rapidjson::kObjectType);
    tools.AddMember("listChanged", false, a);
    caps.AddMember("tools", tools, a);
    result.AddMember("capabilities", caps, a);
    Value info(rapidjson::kObjectType);
    info.AddMember("name", "neurovisor", a);
    info.AddMember("title", "NeuroVisor microVM sandboxes", a);
    info.AddMember("version", NV_VERSION, a);
    result.AddMember("serverInfo", info, a);
    result.AddMember("instructions",
                     "Run code in throw-away microVMs (run_code) or in sandboxes that live across "
                     "calls (create_sandbox, exec, files, fork_sandbox, destroy_sandbox).",
                     a);
    emit(response(id, result));
    return true;
  }
  if (method == "ping") {
    emit(response(id, result));
    return true;
  }
  if (method == "tools/list") {
    Value list(rapidjson::kArrayType);
    for (const auto& t : kTools) {
      Value tool(rapidjson::kObjectType);
      tool.AddMember("name", Value(t.name, a), a);
      tool.AddMember("title", Value(t.title, a), a);
      tool.AddMember("description", Value(t.description, a), a);
      Document in_schema(&a), out_schema(&a);
      in_schema.Parse(t.input_schema);
      out_schema.Parse(t.output_schema);
      tool.AddMember("inputSchema", Value(in_schema, a), a);
      tool.AddMember("outputSchema", Value(out_schema, a), a);
      list.PushBack(tool, a);
    }
    result.AddMember("tools", list, a);
    emit(response(id, result));
    return true;
  }
  if (method != "tools/call") {
    emit(rpc_error(id, -32601, "method '" + method + "' is not served"));
    return true;
  }
  auto name_it = params.FindMember("name");
  if (name_it == params.MemberEnd() || !name_it->value.IsString()) {
    emit(rpc_error(id, -32602, "tools/call needs params.name"));
    return true;
  }
  std::string name = name_it->value.GetString();
  ToolFn fn = tool_fn(name);
  if (!fn) {
    emit(rpc_error(id, -32602, "unknown tool '" + name + "'"));
    return true;
  }
  auto args_it = params.FindMember("arguments");
  if (args_it != params.MemberEnd() && !args_it->value.IsObject()) {
    emit(rpc_error(id, -32602, "params.arguments must be an object"));
    return true;
  }
  const Value& args = args_it != params.MemberEnd() ? args_it->value : empty;
  // Progress notifications, when the caller asked for them with a token.
  Value token;
  if (auto meta = params.FindMember("_meta");
      meta != params.MemberEnd() && meta->value.IsObject()) {
    if (auto t = meta->value.FindMember("progressToken");
        t != meta->value.MemberEnd() && (t->value.IsString() || t->value.IsInt64())) {
      token.CopyFrom(t->value, a);
    }
  }
  uint64_t step = 0;
  Call call{bus_, options_, args, options_.trace_id.empty() ? new_uuid_v7() : options_.trace_id,
            [&](const std::string& msg) {
              if (token.IsNull()) return;
              Document n(rapidjson::kObjectType);
              auto& na = n.GetAllocator();
              n.AddMember("jsonrpc", "2.0", na);
              n.AddMember("method", "notifications/progress", na);
              Value p(rapidjson::kObjectType);
              p.AddMember("progressToken", Value(token, na), na);
              p.AddMember("progress", ++step, na);
              std::string clean = utf8::sanitize(msg.substr(0, 4096));
              p.AddMember("message", Value(clean.c_str(), na), na);
              n.AddMember("params", p, na);
              emit(dump(n));
            }};
  std::string structured;
  bool is_error = false;
  bool allowed = name == "submit_task" ? options_.allow_tasks : options_.allow_sandboxes;
  try {
    if (!allowed) throw ToolError("this API key lacks the scope the tool '" + name + "' needs");
    structured = fn(call);
  } catch (const ToolError& e) {
    structured = e.what();
    is_error = true;
  } catch (const std::exception& e) {
    structured = std::string("internal error: ") + e.what();
    is_error = true;
  }
  Value content(rapidjson::kArrayType), block(rapidjson::kObjectType);
  block.AddMember("type", "text", a);
  block.AddMember("text", Value(structured.c_str(), a), a);
  content.PushBack(block, a);
  result.AddMember("content", content, a);
  if (!is_error) {
    Document sc(&a);
    sc.Parse(structured.c_str());
    result.AddMember("structuredContent", Value(sc, a), a);
  }
  result.AddMember("isError", is_error, a);
  emit(response(id, result));
  return true;
}

}  // namespace nv::mcp
