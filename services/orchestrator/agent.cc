#include "agent.h"

#include <capnp/message.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/llm.capnp.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <thread>

#include "common/client.h"
#include "common/log.h"
#include "common/trace_id.h"
#include "tool_output.h"

namespace nv::agent {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// =============================================================================== pure pieces

std::string system_prompt() {
  return "You are NeuroVisor's coding agent. You solve the user's task by writing and running "
         "code.\n"
         "You have one tool, execute_code(language, code): it runs the code in a fresh, "
         "isolated microVM (python, bash or javascript; no network) and returns the program's "
         "real stdout, stderr and exit status. Nothing persists between calls.\n"
         "Rules:\n"
         "- When a result needs computing, call execute_code instead of guessing; print what "
         "you need to see.\n"
         "- Read the tool result before you answer. If the code failed, fix it and run it "
         "again.\n"
         "- When you have the answer, reply with the final answer in plain text and call no "
         "tool.\n"
         "- If you cannot call tools natively, write the call as JSON in a ```json block: "
         "{\"name\": \"execute_code\", \"arguments\": {\"language\": \"python\", \"code\": "
         "\"print(1)\"}}\n";
}

std::string execute_code_schema() {
  return R"({"type":"object","properties":{)"
         R"("language":{"type":"string","enum":["python","bash","javascript"],)"
         R"("description":"the language of the code"},)"
         R"("code":{"type":"string","description":"the complete program to run; print the )"
         R"(results you need"}},"required":["language","code"]})";
}

namespace {

std::string trim(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && std::isspace(static_cast<unsigned char>(v[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(v[e - 1]))) --e;
  return std::string(v.substr(b, e - b));
}

std::string lower(std::string v) {
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v;
}

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string xml_unescape(std::string_view v) {
  static const std::pair<std::string_view, char> kEntities[] = {
      {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&amp;", '&'}};
  std::string out;
  for (size_t i = 0; i < v.size();) {
    bool done = false;
    if (v[i] == '&') {
      for (auto [ent, ch] : kEntities) {
        if (v.substr(i, ent.size()) == ent) {
          out += ch;
          i += ent.size();
          done = true;
          break;
        }
      }
    }
    if (!done) out += v[i++];
  }
  return out;
}

// A call from a parsed JSON value: {"name", "arguments"|"parameters"} or {"function": {...}}.
std::optional<ParsedCall> call_from_json(const rapidjson::Value& v) {
  if (!v.IsObject()) return std::nullopt;
  if (v.HasMember("function") && v["function"].IsObject()) return call_from_json(v["function"]);
  if (!v.HasMember("name") || !v["name"].IsString()) return std::nullopt;
  const rapidjson::Value* args = nullptr;
  for (const char* key : {"arguments", "parameters", "args", "input"}) {
    if (v.HasMember(key)) {
      args = &v[key];
      break;
    }
  }
  if (args == nullptr) return std::nullopt;
  ParsedCall c;
  c.name = v["name"].GetString();
  if (args->IsString()) {
    c.arguments_json = args->GetString();  // arguments given as JSON text
  } else if (args->IsObject()) {
    c.arguments_json = to_json(*args);
  } else {
    return std::nullopt;
  }
  return c;
}

// Calls in a JSON document: one call object or an array of them.
std::vector<ParsedCall> calls_from_json_text(std::string_view text) {
  std::vector<ParsedCall> out;
  rapidjson::Document d;
  std::string t = trim(text);
  d.Parse(t.c_str(), t.size());
  if (d.HasParseError()) return out;
  if (d.IsArray()) {
    for (auto& e : d.GetArray()) {
      if (auto c = call_from_json(e)) out.push_back(*c);
    }
  } else if (auto c = call_from_json(d)) {
    out.push_back(*c);
  }
  return out;
}

// The text between <tag ...> and </tag>, found from `from`; npos when absent.
struct Element {
  size_t begin = std::string_view::npos;  // of "<tag"
  size_t end = 0;                         // one past "</tag>"
  std::string attrs;                      // raw attribute text
  std::string inner;
};

std::optional<Element> find_element(std::string_view text, std::string_view tag, size_t from) {
  std::string open = "<" + std::string(tag);
  std::string close = "</" + std::string(tag) + ">";
  while (true) {
    size_t b = text.find(open, from);
    if (b == std::string_view::npos) return std::nullopt;
    size_t after = b + open.size();
    if (after < text.size() && text[after] != '>' && !std::isspace(static_cast<unsigned char>(
                                                         text[after]))) {
      from = after;  // <tag_other...>
      continue;
    }
    size_t gt = text.find('>', after);
    if (gt == std::string_view::npos) return std::nullopt;
    size_t c = text.find(close, gt + 1);
    if (c == std::string_view::npos) return std::nullopt;
    Element e;
    e.begin = b;
    e.end = c + close.size();
    e.attrs = std::string(text.substr(after, gt - after));
    e.inner = std::string(text.substr(gt + 1, c - gt - 1));
    return e;
  }
}

std::string attribute(const std::string& attrs, const std::string& name) {
  for (char q : {'"', '\''}) {
    std::string key = name + "=" + q;
    size_t p = attrs.find(key);
    if (p == std::string::npos) continue;
    size_t e = attrs.find(q, p + key.size());
    if (e == std::string::npos) continue;
    return xml_unescape(std::string_view(attrs).substr(p + key.size(), e - p - key.size()));
  }
  return {};
}

// Code inside XML keeps its own indentation; drop only the newline right after the opening tag
// and the blank end before the closing one. CDATA is unwrapped.
std::string element_code(std::string inner) {
  if (inner.starts_with("<![CDATA[") && inner.ends_with("]]>")) {
    return inner.substr(9, inner.size() - 12);
  }
  while (!inner.empty() && (inner.front() == '\n' || inner.front() == '\r')) inner.erase(0, 1);
  while (!inner.empty() && std::isspace(static_cast<unsigned char>(inner.back()))) inner.pop_back();
  return xml_unescape(inner);
}

// <arguments><k>v</k>...</arguments> → {"k": "v", ...}.
std::string xml_arguments_json(std::string_view inner) {
  rapidjson::Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  size_t pos = 0;
  while (true) {
    size_t lt = inner.find('<', pos);
    if (lt == std::string_view::npos || lt + 1 >= inner.size() || inner[lt + 1] == '/') break;
    size_t gt = inner.find('>', lt);
    if (gt == std::string_view::npos) break;
    std::string tag(inner.substr(lt + 1, gt - lt - 1));
    if (size_t sp = tag.find_first_of(" \t\n"); sp != std::string::npos) tag.resize(sp);
    auto el = find_element(inner, tag, lt);
    if (!el) break;
    std::string value = tag == "code" ? element_code(el->inner) : trim(xml_unescape(el->inner));
    d.AddMember(rapidjson::Value(tag.c_str(), a), rapidjson::Value(value.c_str(), a), a);
    pos = el->end;
  }
  return to_json(d);
}

// The end of the balanced JSON object starting at text[b] == '{' (string-aware), or npos.
size_t json_object_end(std::string_view text, size_t b) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = b; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{') ++depth;
    else if (c == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

}  // namespace

std::vector<ParsedCall> parse_text_tool_calls(std::string_view text) {
  std::vector<std::pair<size_t, ParsedCall>> found;
  std::string rest(text);  // consumed regions are blanked so later passes do not see them twice
  auto consume = [&](size_t b, size_t e) { std::fill(rest.begin() + b, rest.begin() + e, ' '); };

  // 1. <tool_call>…</tool_call>: JSON inside (Hermes/Qwen style) or XML name/arguments.
  for (size_t from = 0;;) {
    auto el = find_element(rest, "tool_call", from);
    if (!el) break;
    std::string inner = trim(el->inner);
    if (inner.starts_with("{") || inner.starts_with("[")) {
      for (auto& c : calls_from_json_text(inner)) found.emplace_back(el->begin, c);
    } else if (auto name = find_element(inner, "name", 0)) {
      ParsedCall c;
      c.name = trim(xml_unescape(name->inner));
      auto args = find_element(inner, "arguments", 0);
      c.arguments_json = args ? xml_arguments_json(args->inner) : "{}";
      found.emplace_back(el->begin, c);
    }
    consume(el->begin, el->end);
    from = el->end;
  }
  // 2. <execute_code language="python">CODE</execute_code> (or <language>/<code> children).
  for (size_t from = 0;;) {
    auto el = find_element(rest, "execute_code", from);
    if (!el) break;
    ParsedCall c;
    c.name = "execute_code";
    std::string language = attribute(el->attrs, "language");
    if (language.empty() && find_element(el->inner, "code", 0)) {
      c.arguments_json = xml_arguments_json(el->inner);
    } else {
      rapidjson::Document d(rapidjson::kObjectType);
      auto& a = d.GetAllocator();
      std::string code = element_code(el->inner);
      d.AddMember("language", rapidjson::Value(language.c_str(), a), a);
      d.AddMember("code", rapidjson::Value(code.c_str(), a), a);
      c.arguments_json = to_json(d);
    }
    found.emplace_back(el->begin, c);
    consume(el->begin, el->end);
    from = el->end;
  }
  // 3. Fenced blocks whose body is a JSON call: ```json, ```tool_call, ``` (other languages are
  //    code the model shows, not calls).
  for (size_t from = 0;;) {
    size_t b = rest.find("```", from);
    if (b == std::string::npos) break;
    size_t nl = rest.find('\n', b + 3);
    if (nl == std::string::npos) break;
    size_t e = rest.find("```", nl + 1);
    if (e == std::string::npos) break;
    std::string lang = lower(trim(std::string_view(rest).substr(b + 3, nl - b - 3)));
    if (lang.empty() || lang == "json" || lang == "tool_call" || lang == "tool_code") {
      auto calls = calls_from_json_text(std::string_view(rest).substr(nl + 1, e - nl - 1));
      for (auto& c : calls) found.emplace_back(b, c);
      if (!calls.empty()) consume(b, e + 3);
    }
    from = e + 3;
  }
  // 4. Bare JSON objects in the text that name a tool and carry arguments.
  for (size_t from = 0;;) {
    size_t b = rest.find('{', from);
    if (b == std::string::npos) break;
    size_t e = json_object_end(rest, b);
    if (e == std::string::npos) {
      from = b + 1;
      continue;
    }
    auto calls = calls_from_json_text(std::string_view(rest).substr(b, e - b));
    if (calls.empty()) {
      from = b + 1;  // maybe an inner object is the call
      continue;
    }
    for (auto& c : calls) found.emplace_back(b, c);
    consume(b, e);
    from = e;
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<ParsedCall> out;
  for (auto& [pos, c] : found) out.push_back(std::move(c));
  return out;
}

std::optional<CodeArgs> parse_code_args(std::string_view arguments_json, std::string* why) {
  const std::string usage =
      "execute_code takes {\"language\": \"python\" | \"bash\" | \"javascript\", \"code\": "
      "\"<program>\"}";
  rapidjson::Document d;
  std::string text(arguments_json.empty() ? std::string_view("{}") : arguments_json);
  d.Parse(text.c_str(), text.size());
  if (!d.HasParseError() && d.IsString()) {  // arguments encoded twice
    std::string inner = d.GetString();
    d.Parse(inner.c_str(), inner.size());
  }
  if (d.HasParseError() || !d.IsObject()) {
    *why = "the arguments are not a JSON object; " + usage;
    return std::nullopt;
  }
  if (!d.HasMember("code") || !d["code"].IsString()) {
    *why = "the \"code\" argument is missing or not a string; " + usage;
    return std::nullopt;
  }
  CodeArgs out;
  out.code = std::string(d["code"].GetString(), d["code"].GetStringLength());
  if (trim(out.code).empty()) {
    *why = "the \"code\" argument is empty; " + usage;
    return std::nullopt;
  }
  std::string lang = d.HasMember("language") && d["language"].IsString()
                         ? lower(trim(d["language"].GetString()))
                         : std::string();
  if (lang == "python" || lang == "python3" || lang == "py") {
    out.language = s::Language::PYTHON;
  } else if (lang == "bash" || lang == "shell") {
    out.language = s::Language::BASH;
  } else if (lang == "sh") {
    out.language = s::Language::SH;
  } else if (lang == "javascript" || lang == "js" || lang == "node" || lang == "nodejs") {
    out.language = s::Language::JAVASCRIPT;
  } else {
    *why = (lang.empty() ? std::string("the \"language\" argument is missing")
                         : "language \"" + lang + "\" is not available") +
           "; " + usage;
    return std::nullopt;
  }
  return out;
}

std::string status_name(s::TaskStatus status) {
  switch (status) {
    case s::TaskStatus::COMPLETED: return "completed";
    case s::TaskStatus::FAILED: return "failed";
    case s::TaskStatus::MAX_ITERATIONS: return "maxIterations";
    case s::TaskStatus::TIMED_OUT: return "timedOut";
    case s::TaskStatus::MODEL_UNREACHABLE: return "modelUnreachable";
    case s::TaskStatus::CANCELLED: return "cancelled";
    case s::TaskStatus::UNSET: break;
  }
  return "unset";
}

// ================================================================================= one task

namespace {

struct Call {
  std::string id, name, arguments_json;
};

struct Msg {
  s::Role role = s::Role::USER;
  std::string content;
  std::vector<Call> calls;      // assistant
  std::string tool_call_id;     // tool
  std::string tool_name;        // tool
};

bool printable(std::string_view v) {
  return std::all_of(v.begin(), v.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  });
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

struct Agent::Task {
  Agent& agent;
  std::shared_ptr<Request> req;
  Client client;
  std::string trace;
  std::string model;           // as asked ("" = the gateway's default)
  std::string answered_model;  // as the model server named it in its first reply
  std::string prompt;
  uint32_t max_iterations = 0;
  s::SizeTier tier = s::SizeTier::UNSET;
  Clock::time_point started = Clock::now();
  Clock::time_point deadline;
  milliseconds timeout{0};
  std::vector<Msg> messages;
  uint32_t iteration = 0;

  // Outcome and stats.
  s::TaskStatus status = s::TaskStatus::UNSET;
  std::optional<Error> error;
  std::string answer;
  uint32_t tool_calls = 0;
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  double load_ms = 0, llm_ms = 0, exec_ms = 0;

  Task(Agent& a, std::shared_ptr<Request> r)
      : agent(a), req(std::move(r)), client(a.ctx_, ClientOptions{a.options_.clients_endpoint,
                                                                  {}, {}, a.options_.limits}) {}

  milliseconds left() const {
    return std::max(milliseconds(0),
                    std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  }
  bool stopping() const { return agent.stop_->load(); }

  // A progress partial for this iteration; `fill` sets the union member.
  template <class F>
  void progress(F&& fill) {
    capnp::MallocMessageBuilder mb;
    auto p = bus::init_body<s::TaskProgress>(mb);
    p.setTraceId(trace);
    p.setIteration(iteration);
    fill(p);
    req->partial(mb);
  }

  // A bus call that also ends when the task is cancelled, the service stops, or the deadline
  // (+1 s for the broker's own deadline answer) passes.
  Result<Client::Incoming> bus_call(const std::string& service, capnp::MessageBuilder& body,
                                milliseconds deadline_ms, const Client::PartialFn& on_partial) {
    if (deadline_ms.count() <= 0) {  // 0 on the bus would mean "the broker's default"
      return make_error(ErrorCode::TIMED_OUT, "no time left before the task deadline");
    }
    uint64_t id = client.send(service, &body, deadline_ms, trace);
    auto end = Clock::now() + deadline_ms + std::chrono::seconds(1);
    while (true) {
      if (stopping()) {
        client.cancel(id, service);
        return make_error(ErrorCode::SHUTTING_DOWN, "the orchestrator is shutting down");
      }
      if (req->cancelled()) {
        client.cancel(id, service);
        return make_error(ErrorCode::CANCELLED, "the client cancelled the task");
      }
      auto remaining = std::chrono::duration_cast<milliseconds>(end - Clock::now());
      if (remaining.count() <= 0) {
        client.cancel(id, service);
        return make_error(ErrorCode::TIMED_OUT, "no answer from service '" + service +
                                                    "' within " +
                                                    std::to_string(deadline_ms.count()) + " ms",
                          true);
      }
      auto in = client.receive(std::min(remaining, milliseconds(100)));
      if (!in || in->header.request_id != id) continue;
      if (in->header.kind == bus::Kind::PARTIAL) {
        if (on_partial) on_partial(*in);
        continue;
      }
      if (in->header.kind == bus::Kind::ERROR) return in->error();
      return std::move(*in);
    }
  }

  // Whether any worker of `service` is registered with the broker (asked once per task and
  // service). The broker queues requests for a service nobody serves until their deadline;
  // asking first turns "no executor at all" into an immediate, clear error. When the broker
  // cannot say, the answer is yes and the call itself decides.
  std::map<std::string, bool> known;
  bool registered(const std::string& service) {
    if (auto it = known.find(service); it != known.end()) return it->second;
    capnp::MallocMessageBuilder mb;
    bus::init_body<s::StatusRequest>(mb);
    bool yes = true;
    if (auto r = bus_call("nv.status", mb, milliseconds(2000), {}); r) {
      if (auto st = r->body.root<s::StatusReply>(); st) {
        yes = false;
        for (auto svc : st.value().getServices()) {
          yes |= std::string_view(svc.getService().cStr()) == service;
        }
      }
    }
    if (yes) known[service] = true;  // a missing service is asked about again next time
    return yes;
  }

  void finish(s::TaskStatus st, std::optional<Error> e = std::nullopt) {
    status = st;
    if (e && e->service.empty()) e->service = "orchestrator";
    error = std::move(e);
  }

  // --- the LLM side -------------------------------------------------------------------------

  void fill_chat(s::ChatRequest::Builder c) {
    c.setTraceId(trace);
    c.setModel(model);
    c.setStream(false);
    c.setTemperature(-1);
    auto msgs = c.initMessages(static_cast<unsigned>(messages.size()));
    for (unsigned i = 0; i < messages.size(); ++i) {
      const Msg& m = messages[i];
      auto b = msgs[i];
      b.setRole(m.role);
      b.setContent(m.content);
      auto calls = b.initToolCalls(static_cast<unsigned>(m.calls.size()));
      for (unsigned j = 0; j < m.calls.size(); ++j) {
        calls[j].setId(m.calls[j].id);
        calls[j].setName(m.calls[j].name);
        calls[j].setArgumentsJson(m.calls[j].arguments_json);
      }
      b.setToolCallId(m.tool_call_id);
      b.setToolName(m.tool_name);
    }
    auto tools = c.initTools(1);
    tools[0].setName("execute_code");
    tools[0].setDescription(
        "Run a program in a fresh isolated microVM and return its stdout, stderr and exit "
        "status. Languages: python, bash, javascript. No network; nothing persists.");
    tools[0].setParametersJson(execute_code_schema());
  }

  // Ends the task after a failed LLM call, with the status and error that say what happened.
  void llm_failed(const Error& e) {
    bool first = iteration == 1;
    if (e.code == ErrorCode::CANCELLED) return finish(s::TaskStatus::CANCELLED, e);
    // The call's bus deadline is the task's time left rounded down to the millisecond, so the
    // broker may answer timedOut a little before `deadline`: allow for that.
    if (Clock::now() + milliseconds(50) >= deadline) {
      return finish(s::TaskStatus::TIMED_OUT,
                    make_error(ErrorCode::TIMED_OUT,
                               "the task deadline (" + std::to_string(timeout.count()) +
                                   " ms) passed while waiting for the model (" + e.message +
                                   "); raise --timeout or use a faster model"));
    }
    if (e.code == ErrorCode::LLM_TIMED_OUT || e.code == ErrorCode::TIMED_OUT) {
      return finish(s::TaskStatus::TIMED_OUT, e);
    }
    bool unreachable = e.code == ErrorCode::LLM_UNREACHABLE ||
                       e.code == ErrorCode::MODEL_NOT_FOUND ||
                       e.code == ErrorCode::UNAUTHORIZED;
    if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
      Error g = make_error(e.code,
                           "no nv-llm-gateway is serving \"llm\" (" + e.message +
                               "): start it, e.g. `./nv up` starts the whole stack, or "
                               "`nv-llm-gateway --llm-url URL` on its own");
      return finish(first ? s::TaskStatus::MODEL_UNREACHABLE : s::TaskStatus::FAILED, g);
    }
    if (unreachable && first) return finish(s::TaskStatus::MODEL_UNREACHABLE, e);
    finish(s::TaskStatus::FAILED, e);
  }

  // --- the exec side ------------------------------------------------------------------------

  // Tells the client and the model that a call could not run.
  std::string tool_error(const Error& e) {
    progress([&](s::TaskProgress::Builder p) { e.to_capnp(p.initToolError()); });
    log::warn("tool call could not run", {{"code", code_name(e.code)}, {"error", e.message}});
    return "error: the code did not run: " + e.message;
  }

  // Runs one execute_code call; returns the tool message for the model.
  std::string run_call(const Call& call) {
    const auto& o = agent.options_;
    if (call.name != "execute_code") {
      return tool_error(make_error(ErrorCode::BAD_REQUEST,
                                   "there is no tool named \"" + call.name +
                                       "\"; the only tool is execute_code(language, code)"));
    }
    std::string why;
    auto args = parse_code_args(call.arguments_json, &why);
    if (!args) return tool_error(make_error(ErrorCode::BAD_REQUEST, why));
    if (args->code.size() > o.max_code_bytes) {
      return tool_error(make_error(ErrorCode::BAD_REQUEST,
                                   "the code is " + std::to_string(args->code.size()) +
                                       " bytes; the limit is " +
                                       std::to_string(o.max_code_bytes)));
    }
    progress([&](s::TaskProgress::Builder p) {
      auto t = p.initToolCall();
      t.setLanguage(args->language);
      t.setCode(args->code);
      t.setCallId(call.id);
    });
    ++tool_calls;
    auto budget = std::min(left(), o.exec_timeout + o.exec_slack);
    if (budget < milliseconds(500)) {
      return tool_error(make_error(ErrorCode::TIMED_OUT,
                                   "the task deadline leaves no time to run code"));
    }
    if (!registered("exec")) {
      return tool_error(make_error(ErrorCode::UNKNOWN_SERVICE,
                                   "no code executor is registered (service \"exec\"): start "
                                   "nv-sandbox-executor (`./nv up` starts the whole stack)"));
    }
    capnp::MallocMessageBuilder mb;
    auto r = bus::init_body<s::ExecRequest>(mb);
    r.setTraceId(trace);
    r.setLanguage(args->language);
    r.setCode(args->code);
    r.setTimeoutMs(static_cast<uint32_t>(std::min(o.exec_timeout, budget).count()));
    r.setTier(tier);
    auto t0 = Clock::now();
    auto res = bus_call("exec", mb, budget, [&](Client::Incoming& in) {
      auto chunk = in.body.root<s::ExecChunk>();
      if (!chunk) return;
      progress([&](s::TaskProgress::Builder p) { p.setOutput(chunk.value()); });
    });
    exec_ms += ms_since(t0);
    if (!res) {
      Error e = res.error();
      if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
        e.message += " (is nv-sandbox-executor running? `nv status` shows the services)";
      }
      return tool_error(e);
    }
    auto result = res->body.root<s::ExecResult>();
    if (!result) return tool_error(result.error());
    progress([&](s::TaskProgress::Builder p) { p.setExecResult(result.value()); });
    return render_tool_output(result.value(), {.max_chars = o.max_tool_output_chars});
  }

  // --- the loop -----------------------------------------------------------------------------

  void run() {
    const auto& o = agent.options_;
    messages.push_back({s::Role::SYSTEM, system_prompt(), {}, {}, {}});
    messages.push_back({s::Role::USER, prompt, {}, {}, {}});
    std::string last_text;
    for (iteration = 1; iteration <= max_iterations; ++iteration) {
      progress([](s::TaskProgress::Builder p) { p.setThinking(); });
      if (!registered("llm")) {
        return llm_failed(make_error(ErrorCode::UNKNOWN_SERVICE,
                                     "no worker of service \"llm\" is registered"));
      }
      capnp::MallocMessageBuilder mb;
      fill_chat(bus::init_body<s::ChatRequest>(mb));
      auto t0 = Clock::now();
      auto res = bus_call("llm", mb, std::min(left(), o.llm_call_timeout), {});
      llm_ms += ms_since(t0);
      if (!res) return llm_failed(res.error());
      auto reply = res->body.root<s::ChatReply>();
      if (!reply) {
        return finish(s::TaskStatus::FAILED,
                      make_error(ErrorCode::LLM_BAD_RESPONSE,
                                 "the gateway's reply is unusable: " + reply.error().message));
      }
      auto r = reply.value();
      if (answered_model.empty()) answered_model = r.getModel().cStr();
      prompt_tokens += r.getPromptTokens();
      completion_tokens += r.getCompletionTokens();
      load_ms += static_cast<double>(r.getLoadDurationNs()) / 1e6;
      auto m = r.getMessage();
      Msg said{s::Role::ASSISTANT, m.getContent().cStr(), {}, {}, {}};
      for (auto c : m.getToolCalls()) {
        said.calls.push_back({c.getId().cStr(), c.getName().cStr(), c.getArgumentsJson().cStr()});
      }
      bool fallback = false;
      if (said.calls.empty()) {
        for (auto& c : parse_text_tool_calls(said.content)) {
          // Named like native calls so OpenAI servers can match the tool results to them.
          said.calls.push_back({"call_text_" + std::to_string(iteration) + "_" +
                                    std::to_string(said.calls.size()),
                                c.name, c.arguments_json});
        }
        fallback = !said.calls.empty();
      }
      uint32_t n_calls = static_cast<uint32_t>(said.calls.size());
      agent.events_.publish(
          "task.iteration",
          [&](s::Event::Builder e) {
            auto it = e.initTaskIteration();
            it.setIteration(iteration);
            it.setToolCalls(n_calls);
          },
          trace);
      log::info("model answered", {{"iteration", iteration},
                                   {"tool_calls", n_calls},
                                   {"fallback_parser", fallback},
                                   {"chars", said.content.size()}});
      last_text = said.content;
      if (said.calls.empty()) {
        answer = said.content;
        return finish(s::TaskStatus::COMPLETED);
      }
      if (!said.content.empty()) {
        progress([&](s::TaskProgress::Builder p) { p.setModelText(said.content); });
      }
      if (iteration == max_iterations) break;  // its calls would never be read by the model
      messages.push_back(said);
      size_t n = 0;
      for (const Call& c : said.calls) {
        std::string content =
            ++n > o.max_calls_per_iteration
                ? tool_error(make_error(ErrorCode::BAD_REQUEST,
                                        "too many tool calls in one answer (the limit is " +
                                            std::to_string(o.max_calls_per_iteration) + ")"))
                : run_call(c);
        if (stopping()) {
          return finish(s::TaskStatus::FAILED,
                        make_error(ErrorCode::SHUTTING_DOWN, "the orchestrator is shutting down"));
        }
        if (req->cancelled()) {
          return finish(s::TaskStatus::CANCELLED,
                        make_error(ErrorCode::CANCELLED, "the client cancelled the task"));
        }
        messages.push_back({s::Role::TOOL, content, {}, c.id, c.name});
      }
      if (Clock::now() >= deadline) {
        return finish(s::TaskStatus::TIMED_OUT,
                      make_error(ErrorCode::TIMED_OUT,
                                 "the task deadline (" + std::to_string(timeout.count()) +
                                     " ms) passed while code ran; raise --timeout"));
      }
    }
    iteration = max_iterations;
    answer = last_text;
    finish(s::TaskStatus::MAX_ITERATIONS,
           make_error(ErrorCode::BAD_REQUEST,
                      "the model was still calling tools after " +
                          std::to_string(max_iterations) +
                          " iterations; raise --max-iterations or simplify the task"));
  }

  void reply() {
    capnp::MallocMessageBuilder mb;
    auto r = bus::init_body<s::TaskResult>(mb);
    r.setTraceId(trace);
    r.setStatus(status);
    r.setAnswer(answer);
    if (error) error->to_capnp(r.initError());
    r.setModel(model.empty() ? answered_model : model);
    r.setIterations(std::min(iteration, max_iterations));
    r.setToolCalls(tool_calls);
    r.setPromptTokens(prompt_tokens);
    r.setCompletionTokens(completion_tokens);
    r.setModelLoadMs(load_ms);
    r.setLlmMs(llm_ms);
    r.setExecMs(exec_ms);
    r.setTotalMs(ms_since(started));
    req->reply(mb);
  }
};

// ================================================================================ the service

Agent::Agent(zmq::context_t& ctx, AgentOptions options)
    : ctx_(ctx), options_(std::move(options)),
      events_(ctx, options_.events_endpoint, "orchestrator",
              options_.instance.empty() ? default_instance("orchestrator") : options_.instance),
      stop_(&never_) {}

Agent::~Agent() = default;

void Agent::run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  WorkerOptions w;
  w.service = "task";
  w.broker_endpoint = options_.workers_endpoint;
  w.capacity = options_.max_tasks;
  w.heartbeat = options_.heartbeat;
  w.limits = options_.limits;
  w.instance = options_.instance;
  w.drain_timeout = milliseconds(5000);
  Worker worker(ctx_, w, [this](std::shared_ptr<Request> r) { handle(r); });
  log::info("agent loop serving \"task\"", {{"max_tasks", options_.max_tasks}});
  worker.run(stop);
}

void Agent::handle(const std::shared_ptr<Request>& req) {
  auto body = req->read<s::SubmitTask>();
  if (!body) {
    req->fail(body.error());
    return;
  }
  auto t = body.value();
  auto bad = [&](std::string why) { req->fail(make_error(ErrorCode::BAD_REQUEST, why)); };
  std::string_view prompt(t.getPrompt().cStr(), t.getPrompt().size());
  if (trim(prompt).empty()) return bad("prompt is empty: say what the task is");
  if (prompt.size() > options_.max_prompt_bytes) {
    return bad("prompt has " + std::to_string(prompt.size()) + " bytes; the limit is " +
               std::to_string(options_.max_prompt_bytes));
  }
  if (t.getMaxIterations() > options_.max_iterations_cap) {
    return bad("maxIterations is " + std::to_string(t.getMaxIterations()) + "; the limit is " +
               std::to_string(options_.max_iterations_cap));
  }
  if (static_cast<uint16_t>(t.getTier()) > static_cast<uint16_t>(s::SizeTier::LARGE)) {
    return bad("tier " + std::to_string(static_cast<uint16_t>(t.getTier())) +
               " is not small, medium or large");
  }
  if (t.getModel().size() > 200 || !printable(t.getModel().cStr())) {
    return bad("model must be at most 200 printable characters");
  }
  if (t.getTraceId().size() > 64 || !printable(t.getTraceId().cStr())) {
    return bad("traceId must be at most 64 printable characters");
  }

  Task task(*this, req);
  task.prompt = std::string(prompt);
  task.trace = t.getTraceId().size() > 0        ? std::string(t.getTraceId().cStr())
               : !req->header().trace_id.empty() ? req->header().trace_id
                                                 : new_uuid_v7();
  task.model = t.getModel().size() > 0 ? std::string(t.getModel().cStr()) : options_.default_model;
  task.max_iterations =
      t.getMaxIterations() > 0 ? t.getMaxIterations() : options_.default_max_iterations;
  task.tier = t.getTier();
  task.timeout = t.getTimeoutMs() > 0 ? milliseconds(t.getTimeoutMs())
                                      : options_.default_task_timeout;
  task.timeout = std::min(task.timeout, req->remaining());
  task.deadline = task.started + task.timeout;
  log::TraceScope scope(task.trace);
  log::info("task started", {{"model", task.model},
                             {"max_iterations", task.max_iterations},
                             {"timeout_ms", static_cast<int64_t>(task.timeout.count())}});
  events_.publish(
      "task.started",
      [&](s::Event::Builder e) {
        auto st = e.initTaskStarted();
        st.setModel(task.model);
        st.setPromptChars(static_cast<uint32_t>(prompt.size()));
      },
      task.trace);
  try {
    task.run();
  } catch (const std::exception& e) {
    // A bug must not take the task's client down with a missing answer: report it.
    log::error("task loop threw", {{"what", e.what()}});
    task.finish(s::TaskStatus::FAILED,
                make_error(ErrorCode::INTERNAL, std::string("internal error: ") + e.what()));
  } catch (const kj::Exception& e) {
    log::error("task loop threw", {{"what", e.getDescription().cStr()}});
    task.finish(s::TaskStatus::FAILED,
                make_error(ErrorCode::INTERNAL,
                           std::string("internal error: ") + e.getDescription().cStr()));
  }
  std::string st = status_name(task.status);
  double total = ms_since(task.started);
  events_.publish(
      "task.finished",
      [&](s::Event::Builder e) {
        auto f = e.initTaskFinished();
        f.setStatus(st);
        f.setIterations(std::min(task.iteration, task.max_iterations));
        f.setToolCalls(task.tool_calls);
        f.setDurationMs(total);
      },
      task.trace,
      task.status == s::TaskStatus::COMPLETED ? s::Severity::INFO : s::Severity::WARNING);
  log::info("task finished", {{"status", st},
                              {"iterations", std::min(task.iteration, task.max_iterations)},
                              {"tool_calls", task.tool_calls},
                              {"total_ms", total},
                              {"llm_ms", task.llm_ms},
                              {"exec_ms", task.exec_ms},
                              {"error", task.error ? task.error->message : std::string()}});
  task.reply();
}

}  // namespace nv::agent
