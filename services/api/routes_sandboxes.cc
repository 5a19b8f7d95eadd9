// routes_sandboxes.cc — /v1/sandboxes and /v1/snapshots: the "sandbox" bus service
// (schemas/sandbox.capnp) through its client library (common/sandbox_client.h), each call made
// with owner "tenant:<id>". Another tenant's sandbox is answered by the service exactly as one
// that does not exist (unknownSandbox → 404), never 403.
//
// Files travel as raw bytes (PUT body, GET answer), in pieces of at most 4 MiB on the bus (the
// bus's frame cap is 8 MiB): a larger upload is a replacing write of the first piece and appends
// of the rest; a larger download is read page by page and sent chunked.
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "api.h"
#include "common/enum_name.h"
#include "common/sandbox_client.h"
#include "common/sandbox_json.h"
#include "common/utf8.h"
#include "exec_json.h"
#include "http_json.h"

namespace nv::api {
namespace {

using namespace std::chrono_literals;
using W = rapidjson::Writer<rapidjson::StringBuffer>;
constexpr size_t kPiece = 4 << 20;

void text(W& w, const char* key, const std::string& s) { write_text(w, key, s); }

void labels_json(W& w, const std::vector<sandbox::Label>& labels) {
  w.Key("labels");
  w.StartObject();
  for (const auto& l : labels) {
    w.Key(l.key.c_str());
    text(w, nullptr, l.value);
  }
  w.EndObject();
}

void info_json(W& w, const sandbox::Info& i) {
  w.StartObject();
  text(w, "id", i.sandbox_id);
  w.Key("state");
  w.String(enum_name(i.state).c_str());
  w.Key("tier");
  w.String(enum_name(i.tier).c_str());
  w.Key("vcpus");
  w.Uint(i.vcpus);
  w.Key("memoryMib");
  w.Uint(i.memory_mib);
  text(w, "vmId", i.vm_id);
  w.Key("createdUnixMs");
  w.Int64(i.created_unix_ms);
  w.Key("deadlineUnixMs");
  w.Int64(i.deadline_unix_ms);
  w.Key("idleDeadlineUnixMs");
  w.Int64(i.idle_deadline_unix_ms);
  w.Key("lastActiveUnixMs");
  w.Int64(i.last_active_unix_ms);
  labels_json(w, i.labels);
  text(w, "parentId", i.parent_id);
  text(w, "fromSnapshot", i.from_snapshot);
  text(w, "cwd", i.cwd);
  text(w, "endReason", i.end_reason);
  w.Key("mounts");
  w.StartArray();
  for (const auto& m : i.mounts) sandbox::write_mount(w, m);
  w.EndArray();
  w.EndObject();
}

void entry_json(W& w, const sandbox::FileEntry& e) {
  w.StartObject();
  text(w, "path", e.path);
  w.Key("type");
  w.String(enum_name(e.type).c_str());
  w.Key("size");
  w.Uint64(e.size);
  w.Key("mode");
  w.Uint(e.mode);
  w.Key("mtimeUnixMs");
  w.Int64(e.mtime_unix_ms);
  text(w, "linkTarget", e.link_target);
  w.EndObject();
}

void snapshot_json(W& w, const sandbox::Snapshot& s) {
  w.StartObject();
  text(w, "name", s.name);
  w.Key("tier");
  w.String(enum_name(s.tier).c_str());
  text(w, "sourceSandboxId", s.source_sandbox_id);
  w.Key("createdUnixMs");
  w.Int64(s.created_unix_ms);
  w.Key("memoryBytes");
  w.Uint64(s.memory_bytes);
  w.Key("stateBytes");
  w.Uint64(s.state_bytes);
  w.EndObject();
}

// {"<key>": [items...]} or one item.
template <class T, class F>
std::string list_json(const char* key, const std::vector<T>& items, F each) {
  rapidjson::StringBuffer sb;
  W w(sb);
  w.StartObject();
  w.Key(key);
  w.StartArray();
  for (const auto& i : items) each(w, i);
  w.EndArray();
  w.EndObject();
  return std::string(sb.GetString()) + "\n";
}

template <class T, class F>
std::string one_json(const T& item, F each) {
  rapidjson::StringBuffer sb;
  W w(sb);
  each(w, item);
  return std::string(sb.GetString()) + "\n";
}

Status parse_labels(const rapidjson::Value& doc, std::vector<sandbox::Label>* out) {
  auto it = doc.FindMember("labels");
  if (it == doc.MemberEnd()) return {};
  for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
    if (!m->value.IsString()) {
      return make_error(ErrorCode::BAD_REQUEST, "labels: every value must be a string");
    }
    out->push_back({std::string(m->name.GetString(), m->name.GetStringLength()),
                    std::string(m->value.GetString(), m->value.GetStringLength())});
  }
  return {};
}

// A client of the sandbox service for this request: this thread's bus, the tenant as owner.
sandbox::SandboxClient client_for(Api& api, const Caller& c, std::chrono::milliseconds timeout) {
  sandbox::ClientCallOptions o;
  o.timeout = timeout;
  o.trace_id = c.trace_id;
  return sandbox::SandboxClient(api.bus(), c.owner(), o);
}

bool query_bool(const httplib::Request& req, const char* name, bool* out, std::string* bad) {
  if (!req.has_param(name)) return true;
  std::string v = req.get_param_value(name);
  if (v == "true" || v == "1" || v.empty()) {
    *out = true;
  } else if (v == "false" || v == "0") {
    *out = false;
  } else {
    *bad = std::string("query parameter '") + name + "' must be true or false";
    return false;
  }
  return true;
}

}  // namespace

void add_sandbox_routes(Api& api) {
  auto timeout = std::chrono::milliseconds(api.options().bus_timeout_ms);
  // Every handler here has the same prologue: a client for the tenant, and errors as JSON.
  using Fn = std::function<void(const httplib::Request&, httplib::Response&, Caller&,
                                sandbox::SandboxClient&)>;
  auto on = [&api, timeout](const std::string& method, const std::string& path, Fn fn,
                            bool raw = false) {
    api.route(
        method, path, kScopeSandbox,
        [&api, timeout, fn](const httplib::Request& req, httplib::Response& res, Caller& c) {
          auto sc = client_for(api, c, timeout);
          fn(req, res, c, sc);
        },
        raw);
  };
  auto fail = [](httplib::Response& res, const Error& e, const Caller& c) {
    send_bus_error(res, e, c.trace_id);
  };

  on("POST", "/v1/sandboxes",
     [&api, fail](const httplib::Request& req, httplib::Response& res, Caller& c,
                  sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       auto st = parse_object(req.body,
                              {{"tier", JType::string},
                               {"env", JType::object},
                               {"cwd", JType::string},
                               {"lifetimeMs", JType::uint32},
                               {"idleTimeoutMs", JType::uint32},
                               {"labels", JType::object},
                               {"fromSnapshot", JType::string},
                               {"mounts", JType::array}},
                              &doc);
       if (!st) return fail(res, st.error(), c);
       sandbox::Spec spec;
       if (auto it = doc.FindMember("mounts"); it != doc.MemberEnd()) {
         auto mounts = sandbox::mounts_from_json(it->value);
         if (!mounts) return fail(res, mounts.error(), c);
         spec.mounts = std::move(*mounts);
       }
       if (!spec.mounts.empty() && !api.options().allow_mounts) {
         return fail(res,
                     make_error(ErrorCode::MOUNT_REFUSED,
                                "host directory mounts are off in this nv-api (rule: nv-api "
                                "--allow-mounts is not set); nothing was leased"),
                     c);
       }
       if (doc.HasMember("tier") && !parse_tier(get_string(doc, "tier"), &spec.tier)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, "tier must be small, medium or large"),
                     c);
       }
       if (auto e = parse_env(doc, &spec.env); !e) return fail(res, e.error(), c);
       if (auto e = parse_labels(doc, &spec.labels); !e) return fail(res, e.error(), c);
       spec.cwd = get_string(doc, "cwd");
       spec.lifetime_ms = get_uint32(doc, "lifetimeMs");
       spec.idle_timeout_ms = get_uint32(doc, "idleTimeoutMs");
       spec.from_snapshot = get_string(doc, "fromSnapshot");
       // The tenant's limit, before a VM is leased.
       auto live = sc.list();
       if (!live) return fail(res, live.error(), c);
       int n = 0;
       for (const auto& i : *live) n += i.state != schema::SandboxState::DESTROYED ? 1 : 0;
       if (n >= api.options().max_sandboxes) {
         return fail(res,
                     make_error(ErrorCode::SANDBOX_LIMIT,
                                "tenant '" + c.tenant + "' has " + std::to_string(n) +
                                    " live sandboxes, its limit (--max-sandboxes); delete one"),
                     c);
       }
       auto r = sc.create(spec);
       if (!r) return fail(res, r.error(), c);
       res.status = 201;
       res.set_header("Location", "/v1/sandboxes/" + r->sandbox_id);
       res.set_content(one_json(*r, info_json), "application/json");
     });
  on("GET", "/v1/sandboxes",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       std::vector<sandbox::Label> labels;
       for (size_t i = 0; i < req.get_param_value_count("label"); ++i) {
         std::string kv = req.get_param_value("label", i);
         auto eq = kv.find('=');
         if (eq == std::string::npos) {
           return fail(res, make_error(ErrorCode::BAD_REQUEST, "label must be key=value"), c);
         }
         labels.push_back({kv.substr(0, eq), kv.substr(eq + 1)});
       }
       bool destroyed = false;
       std::string bad;
       if (!query_bool(req, "includeDestroyed", &destroyed, &bad)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, bad), c);
       }
       auto r = sc.list(labels, destroyed);
       if (!r) return fail(res, r.error(), c);
       res.set_content(list_json("sandboxes", *r, info_json), "application/json");
     });
  on("GET", "/v1/sandboxes/{id}",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       auto r = sc.get(req.matches[1]);
       if (!r) return fail(res, r.error(), c);
       res.set_content(one_json(*r, info_json), "application/json");
     });
  on("DELETE", "/v1/sandboxes/{id}",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       auto r = sc.destroy(req.matches[1]);
       if (!r) return fail(res, r.error(), c);
       res.set_content(one_json(*r, info_json), "application/json");
     });

  on("POST", "/v1/sandboxes/{id}/exec",
     [&api, fail](const httplib::Request& req, httplib::Response& res, Caller& c,
                  sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       auto st = parse_object(req.body,
                              exec_fields({{"cwd", JType::string},
                                           {"context", JType::string},
                                           {"background", JType::boolean}}),
                              &doc);
       if (!st) return fail(res, st.error(), c);
       sandbox::ExecSpec spec;
       if (!parse_language(get_string(doc, "language"), &spec.language)) {
         return fail(res,
                     make_error(ErrorCode::BAD_REQUEST,
                                "language must be python, bash, sh or javascript (node, js, py)"),
                     c);
       }
       spec.code = get_string(doc, "code");
       spec.stdin_data = get_string(doc, "stdin");
       if (auto e = parse_env(doc, &spec.env); !e) return fail(res, e.error(), c);
       spec.cwd = get_string(doc, "cwd");
       spec.timeout_ms = get_uint32(doc, "timeoutMs");
       spec.output_cap_bytes = get_uint32(doc, "outputCapBytes");
       spec.tail_bytes = get_uint32(doc, "tailBytes");
       spec.context = get_string(doc, "context");
       spec.background = get_bool(doc, "background");
       auto deadline = std::chrono::milliseconds(spec.timeout_ms ? spec.timeout_ms : 10000) +
                       std::chrono::milliseconds(api.options().bus_timeout_ms);
       sc.set_timeout(deadline);
       std::string id = req.matches[1];
       StreamFormat fmt = stream_format(req);
       if (fmt == StreamFormat::none) {
         auto r = sc.exec(id, spec);
         if (!r) return fail(res, r.error(), c);
         res.set_content(exec_result_json(*r, c.trace_id) + "\n", "application/json");
         return;
       }
       std::string trace = c.trace_id, owner = c.owner();
       res.set_header("Cache-Control", "no-store");
       res.set_chunked_content_provider(
           content_type(fmt),
           [&api, spec, id, trace, owner, fmt, deadline](size_t, httplib::DataSink& sink) {
             sandbox::ClientCallOptions o;
             o.timeout = deadline;
             o.trace_id = trace;
             sandbox::SandboxClient sc2(api.bus(), owner, o);
             auto emit = [&](const std::string& type, const std::string& json) {
               std::string e = stream_event(fmt, type, json);
               sink.write(e.data(), e.size());
             };
             auto r = sc2.exec(id, spec, [&](schema::Stream s, std::string_view data) {
               std::string type = stream_name(s);
               emit(type, "{\"event\":\"" + type + "\",\"data\":" + json_string(data) + "}");
             });
             if (r) {
               std::string j = exec_result_json(*r, trace);
               emit("result", "{\"event\":\"result\"," + j.substr(1));
             } else {
               std::string e = error_json(code_name(r.error().code), r.error().message, trace);
               emit("error", "{\"event\":\"error\"," + e.substr(1));
             }
             sink.done();
             return true;
           });
     });

  // ---- files ---------------------------------------------------------------------------------
  auto need_path = [](const httplib::Request& req, std::string* path) {
    if (!req.has_param("path") || req.get_param_value("path").empty()) return false;
    *path = req.get_param_value("path");
    return true;
  };
  on(
      "PUT", "/v1/sandboxes/{id}/files",
      [fail, need_path](const httplib::Request& req, httplib::Response& res, Caller& c,
                        sandbox::SandboxClient& sc) {
        std::string path, bad;
        if (!need_path(req, &path)) {
          return fail(res, make_error(ErrorCode::BAD_REQUEST, "query parameter 'path' is needed"),
                      c);
        }
        uint32_t mode = 0;
        if (req.has_param("mode")) {
          const std::string m = req.get_param_value("mode");
          if (m.empty() || m.size() > 4 || m.find_first_not_of("01234567") != std::string::npos) {
            return fail(res, make_error(ErrorCode::BAD_REQUEST, "mode must be octal, e.g. 0644"),
                        c);
          }
          mode = static_cast<uint32_t>(std::stoul(m, nullptr, 8));
        }
        bool append = false;
        if (!query_bool(req, "append", &append, &bad)) {
          return fail(res, make_error(ErrorCode::BAD_REQUEST, bad), c);
        }
        std::string_view body(req.body);
        Result<sandbox::FileEntry> r = make_error(ErrorCode::INTERNAL, "nothing written");
        size_t off = 0;
        do {
          size_t n = std::min(kPiece, body.size() - off);
          r = sc.write_file(req.matches[1], path, body.substr(off, n), mode, append || off > 0);
          if (!r) return fail(res, r.error(), c);
          off += n;
        } while (off < body.size());
        res.set_content(one_json(*r, entry_json), "application/json");
      },
      true);
  on("GET", "/v1/sandboxes/{id}/files",
     [&api, fail, need_path](const httplib::Request& req, httplib::Response& res, Caller& c,
                             sandbox::SandboxClient& sc) {
       std::string path;
       if (!need_path(req, &path)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, "query parameter 'path' is needed"),
                     c);
       }
       std::string id = req.matches[1];
       auto first = sc.read_file(id, path, 0, kPiece);
       if (!first) return fail(res, first.error(), c);
       if (first->eof) {
         res.set_content(first->data, "application/octet-stream");
         return;
       }
       // Larger: the first page now, the rest page by page as the client reads.
       auto head = std::make_shared<std::string>(std::move(first->data));
       std::string trace = c.trace_id, owner = c.owner();
       auto timeout = std::chrono::milliseconds(api.options().bus_timeout_ms);
       uint64_t size = first->size;
       res.set_content_provider(size, "application/octet-stream",
                                [&api, head, id, path, trace, owner, timeout](
                                    size_t offset, size_t length, httplib::DataSink& sink) {
                                  if (offset < head->size()) {
                                    size_t n = std::min(length, head->size() - offset);
                                    return sink.write(head->data() + offset, n);
                                  }
                                  sandbox::ClientCallOptions o;
                                  o.timeout = timeout;
                                  o.trace_id = trace;
                                  sandbox::SandboxClient sc2(api.bus(), owner, o);
                                  auto page = sc2.read_file(id, path, offset,
                                                            std::min<size_t>(length, kPiece));
                                  if (!page || page->data.empty())
                                    return false;  // the connection is closed short
                                  return sink.write(page->data.data(), page->data.size());
                                });
     });
  on("DELETE", "/v1/sandboxes/{id}/files",
     [fail, need_path](const httplib::Request& req, httplib::Response& res, Caller& c,
                       sandbox::SandboxClient& sc) {
       std::string path, bad;
       if (!need_path(req, &path)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, "query parameter 'path' is needed"),
                     c);
       }
       bool recursive = false;
       if (!query_bool(req, "recursive", &recursive, &bad)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, bad), c);
       }
       auto r = sc.remove_file(req.matches[1], path, recursive);
       if (!r) return fail(res, r.error(), c);
       res.set_content("{\"removed\":" + json_string(path) + "}\n", "application/json");
     });
  on("GET", "/v1/sandboxes/{id}/files/list",
     [fail, need_path](const httplib::Request& req, httplib::Response& res, Caller& c,
                       sandbox::SandboxClient& sc) {
       std::string path, bad;
       if (!need_path(req, &path)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, "query parameter 'path' is needed"),
                     c);
       }
       bool recursive = false;
       if (!query_bool(req, "recursive", &recursive, &bad)) {
         return fail(res, make_error(ErrorCode::BAD_REQUEST, bad), c);
       }
       auto r = sc.list_files(req.matches[1], path, recursive);
       if (!r) return fail(res, r.error(), c);
       res.set_content(list_json("entries", *r, entry_json), "application/json");
     });

  // ---- lifecycle ------------------------------------------------------------------------------
  on("POST", "/v1/sandboxes/{id}/fork",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       auto st =
           parse_object(req.body, {{"count", JType::uint32}, {"labels", JType::object}}, &doc);
       if (!st) return fail(res, st.error(), c);
       std::vector<sandbox::Label> labels;
       if (auto e = parse_labels(doc, &labels); !e) return fail(res, e.error(), c);
       sc.set_timeout(std::chrono::milliseconds(180000));
       auto r = sc.fork(req.matches[1], get_uint32(doc, "count", 1), labels);
       if (!r) return fail(res, r.error(), c);
       res.set_content(list_json("sandboxes", *r, info_json), "application/json");
     });
  on("POST", "/v1/sandboxes/{id}/snapshot",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       auto st = parse_object(req.body, {{"name", JType::string, true}}, &doc);
       if (!st) return fail(res, st.error(), c);
       sc.set_timeout(std::chrono::milliseconds(180000));
       auto r = sc.snapshot(req.matches[1], get_string(doc, "name"));
       if (!r) return fail(res, r.error(), c);
       res.status = 201;
       res.set_content(one_json(*r, snapshot_json), "application/json");
     });
  for (const char* op : {"pause", "resume"}) {
    bool pause = std::string(op) == "pause";
    on("POST", std::string("/v1/sandboxes/{id}/") + op,
       [fail, pause](const httplib::Request& req, httplib::Response& res, Caller& c,
                     sandbox::SandboxClient& sc) {
         rapidjson::Document doc;
         if (auto st = parse_object(req.body, {}, &doc); !st) return fail(res, st.error(), c);
         sc.set_timeout(std::chrono::milliseconds(180000));
         auto r = pause ? sc.pause(req.matches[1]) : sc.resume(req.matches[1]);
         if (!r) return fail(res, r.error(), c);
         res.set_content(one_json(*r, info_json), "application/json");
       });
  }
  on("POST", "/v1/sandboxes/{id}/keepalive",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       auto st = parse_object(req.body, {{"extendMs", JType::uint32}}, &doc);
       if (!st) return fail(res, st.error(), c);
       auto r = sc.keepalive(req.matches[1], get_uint32(doc, "extendMs"));
       if (!r) return fail(res, r.error(), c);
       res.set_content(one_json(*r, info_json), "application/json");
     });
  on("POST", "/v1/sandboxes/{id}/sync",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       rapidjson::Document doc;
       if (auto st = parse_object(req.body, {}, &doc); !st) return fail(res, st.error(), c);
       sc.set_timeout(std::chrono::milliseconds(600000));  // copying a large tree out
       auto r = sc.sync(req.matches[1]);
       if (!r) return fail(res, r.error(), c);
       res.set_content(list_json("synced", *r, sandbox::write_mount_sync), "application/json");
     });
  on("GET", "/v1/snapshots",
     [fail](const httplib::Request&, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       auto r = sc.snapshots();
       if (!r) return fail(res, r.error(), c);
       res.set_content(list_json("snapshots", *r, snapshot_json), "application/json");
     });
  on("DELETE", "/v1/snapshots/{name}",
     [fail](const httplib::Request& req, httplib::Response& res, Caller& c,
            sandbox::SandboxClient& sc) {
       auto r = sc.delete_snapshot(req.matches[1]);
       if (!r) return fail(res, r.error(), c);
       res.set_content("{\"deleted\":" + json_string(std::string(req.matches[1])) + "}\n",
                       "application/json");
     });
}

}  // namespace nv::api
