// nv-exec: run code once in a fresh microVM through the orchestrator's "exec" service.
//
//   nv-exec python -c 'print(2**100)'
//   nv-exec bash script.sh
//   nv-exec node -e 'console.log(1+1)'
//   echo data | nv-exec --stdin python script.py
//   nv-exec --put in.csv:/tmp/in.csv --get /tmp/out.png:out.png python plot.py
//
// Output streams live to this process's stdout/stderr (--json: one JSON object at the end
// instead). Exit status: the program's own exit code; 128+N when a signal N ended it; 124 when
// it timed out; 2 usage error; 3 the orchestrator is unreachable; 4 no executor is registered;
// 125 the sandbox failed (typed error printed); 130 after SIGINT (Ctrl-C), 143 after SIGTERM:
// the request is cancelled upstream first, so the VM is released at once.
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "common/client.h"
#include "common/curve.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/service.h"
#include "common/trace_id.h"
#include "common/utf8.h"

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr int kExitNoWorker = 4;
constexpr int kExitTimeout = 124;
constexpr int kExitSandboxFailed = 125;

const char* kUsage =
    "usage: nv-exec [options] LANGUAGE (-c CODE | -e CODE | FILE)\n"
    "Runs code once in a fresh microVM through the orchestrator's \"exec\" service.\n"
    "\n"
    "LANGUAGE: python (python3, py), bash, sh, node (javascript, js)\n"
    "  -c CODE, -e CODE       the program text (either flag, any language)\n"
    "  FILE                   read the program text from FILE\n"
    "options:\n"
    "  --stdin                send this process's stdin to the program\n"
    "  --put LOCAL:REMOTE     copy a local file into the guest first (REMOTE under /tmp or\n"
    "                         /home/agent; a relative REMOTE is taken under /home/agent,\n"
    "                         the program's working directory); repeatable\n"
    "  --get REMOTE:LOCAL     copy a guest file back afterwards; repeatable\n"
    "  --env NAME=VALUE       environment variable for the program; repeatable\n"
    "  --timeout-ms MS        program timeout (default: the executor's, 10000; at most its\n"
    "                         --max-timeout-ms, 300000); --timeout S: the same in seconds\n"
    "  --tier small|medium|large   VM size (1 vCPU/256 MiB, 2/512, 4/1024; default small);\n"
    "                         --size: the seed's spelling\n"
    "  --output-cap BYTES     stdout+stderr bytes kept (default: the executor's, 1 MiB)\n"
    "  --json                 print one JSON object with the result instead of streaming\n"
    "  --verbose              also print the executor's status lines (VM id) on stderr\n"
    "  --deadline-ms MS       give up after MS in all (default: timeout + 60000);\n"
    "                         --deadline S: the same in seconds\n"
    "  --runtime-dir DIR      the stack's runtime dir (default: $NV_RUNTIME_DIR, ...)\n"
    "  --clients-endpoint EP  the orchestrator's client endpoint (default ipc://RT/clients.sock;\n"
    "                         --endpoint: the older spelling)\n"
    "  --curve-key FILE       this client's CURVE key (NAME.key) for tcp:// endpoints\n"
    "  --curve-server-key FILE  the orchestrator's public key (NAME.pub)\n"
    "exit status: the program's exit code; 128+N after signal N; 124 timed out; 2 usage;\n"
    "  3 orchestrator unreachable; 4 no executor registered; 125 the sandbox failed;\n"
    "  130 interrupted (Ctrl-C), 143 terminated: the run is cancelled and its VM released.\n"
    "  A --get that fails turns an exit code of 0 into 1.\n";

struct Transfer {
  std::string local, remote;
};

struct Args {
  nv::schema::Language language = nv::schema::Language::UNSET;
  std::string language_name;
  std::string code;
  bool send_stdin = false;
  std::vector<Transfer> puts, gets;
  std::vector<std::pair<std::string, std::string>> env;
  double timeout_s = 0;
  nv::schema::SizeTier tier = nv::schema::SizeTier::UNSET;
  uint32_t output_cap = 0;
  bool json = false;
  bool verbose = false;
  double deadline_s = 0;
  std::string runtime_dir, endpoint, curve_key, curve_server_key;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "nv-exec: %s\n(see nv-exec --help)\n", msg.c_str());
  std::exit(kExitUsage);
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

bool parse_language(const std::string& s, nv::schema::Language* out) {
  using L = nv::schema::Language;
  if (s == "python" || s == "python3" || s == "py")
    *out = L::PYTHON;
  else if (s == "bash")
    *out = L::BASH;
  else if (s == "sh")
    *out = L::SH;
  else if (s == "node" || s == "nodejs" || s == "javascript" || s == "js")
    *out = L::JAVASCRIPT;
  else
    return false;
  return true;
}

Transfer split_transfer(const std::string& flag, const std::string& v) {
  auto colon = v.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == v.size()) {
    usage_error(flag + " wants FROM:TO, got '" + v + "'");
  }
  return {v.substr(0, colon), v.substr(colon + 1)};
}

// A relative guest path is taken in the program's working directory, the run user's home.
std::string guest_path(const std::string& p) { return p[0] == '/' ? p : "/home/agent/" + p; }

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> rest;
  bool have_code = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const std::string& name) -> std::string {
      auto eq = arg.find('=');
      if (arg.rfind("--", 0) == 0 && eq != std::string::npos) return arg.substr(eq + 1);
      if (i + 1 >= argc) usage_error(name + " needs a value");
      return argv[++i];
    };
    auto is = [&](const char* name) {
      return arg == name || arg.rfind(std::string(name) + "=", 0) == 0;
    };
    auto number = [&](const std::string& name) {
      std::string v = value(name);
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !std::isfinite(d) || d <= 0) {
        usage_error(name + " wants a positive number, got '" + v + "'");
      }
      return d;
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--stdin") {
      a.send_stdin = true;
    } else if (arg == "--json") {
      a.json = true;
    } else if (arg == "--verbose") {
      a.verbose = true;
    } else if (is("--put")) {
      auto t = split_transfer("--put", value("--put"));
      a.puts.push_back({t.local, guest_path(t.remote)});
    } else if (is("--get")) {
      auto t = split_transfer("--get", value("--get"));  // REMOTE:LOCAL
      a.gets.push_back({/*local=*/t.remote, /*remote=*/guest_path(t.local)});
    } else if (is("--env")) {
      std::string v = value("--env");
      auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) {
        usage_error("--env wants NAME=VALUE, got '" + v + "'");
      }
      a.env.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (is("--timeout-ms")) {
      a.timeout_s = number("--timeout-ms") / 1000;
    } else if (is("--timeout")) {
      a.timeout_s = number("--timeout");
    } else if (is("--deadline-ms")) {
      a.deadline_s = number("--deadline-ms") / 1000;
    } else if (is("--deadline")) {
      a.deadline_s = number("--deadline");
    } else if (is("--output-cap")) {
      a.output_cap = static_cast<uint32_t>(number("--output-cap"));
    } else if (is("--tier") || is("--size")) {
      std::string v = value(is("--tier") ? "--tier" : "--size");
      using T = nv::schema::SizeTier;
      if (v == "small")
        a.tier = T::SMALL;
      else if (v == "medium")
        a.tier = T::MEDIUM;
      else if (v == "large")
        a.tier = T::LARGE;
      else
        usage_error("--tier must be small, medium or large, not '" + v + "'");
    } else if (is("--runtime-dir")) {
      a.runtime_dir = value("--runtime-dir");
    } else if (is("--clients-endpoint") || is("--endpoint")) {
      a.endpoint = value(is("--endpoint") ? "--endpoint" : "--clients-endpoint");
    } else if (is("--curve-key")) {
      a.curve_key = value("--curve-key");
    } else if (is("--curve-server-key")) {
      a.curve_server_key = value("--curve-server-key");
    } else if (a.language_name.empty() && arg.rfind("-", 0) != 0) {
      a.language_name = arg;
      if (!parse_language(arg, &a.language)) {
        usage_error("unknown language '" + arg + "' (python, bash, sh, node)");
      }
    } else if (!a.language_name.empty() && (arg == "-c" || arg == "-e")) {
      if (i + 1 >= argc) usage_error(arg + " needs the program text");
      if (have_code) usage_error("give the program once (-c/-e CODE or FILE)");
      a.code = argv[++i];
      have_code = true;
    } else if (!a.language_name.empty() && arg.rfind("-", 0) != 0) {
      if (have_code) {
        usage_error("arguments to the program ('" + arg +
                    "') are not supported; pass data "
                    "with --stdin, --env or --put");
      }
      if (!read_file(arg, &a.code)) usage_error("cannot read " + arg + ": " + std::strerror(errno));
      have_code = true;
    } else {
      usage_error("unknown option '" + arg + "'");
    }
  }
  if (a.language_name.empty()) usage_error("which language? (python, bash, sh, node)");
  if (!have_code) usage_error("no program: give -c CODE, -e CODE or a FILE");
  return a;
}

// Program bytes as JSON text: each ill-formed sequence becomes U+FFFD (common/utf8.h).
std::string utf8_clean(const std::string& s) { return nv::utf8::sanitize(s); }

std::string data_string(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

// Bytes of a stream in neither the head nor the tail of an ExecResult.
uint64_t left_out(capnp::Data::Reader head, capnp::Data::Reader tail, uint64_t total) {
  uint64_t have = head.size() + tail.size();
  return total > have ? total - have : 0;
}

void write_all(FILE* f, const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, f) != n) {
    // The reader went away (a closed pipe); nothing useful left to do with the output.
  }
  std::fflush(f);
}

std::string error_json(const nv::Error& e) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("code");
  w.String(nv::code_name(e.code).c_str());
  w.Key("message");
  w.String(utf8_clean(e.message).c_str());
  w.Key("retryable");
  w.Bool(e.retryable);
  w.Key("service");
  w.String(e.service.c_str());
  w.EndObject();
  w.EndObject();
  return sb.GetString();
}

int report_error(const Args& a, const nv::Error& e, int code) {
  if (a.json) {
    std::printf("%s\n", error_json(e).c_str());
  } else {
    std::fprintf(stderr, "nv-exec: %s\n", e.to_string().c_str());
  }
  return code;
}

// One line saying what was cancelled; the exit status is 128 + the signal (130, 143).
int interrupted(const std::string* trace_id) {
  const int sig = nv::interrupt::requested();
  if (trace_id) {
    std::fprintf(stderr,
                 "nv-exec: %s: the execution was cancelled; its VM is released (trace %s)\n",
                 nv::interrupt::signal_name(sig).c_str(), trace_id->c_str());
  } else {
    std::fprintf(stderr, "nv-exec: %s: cancelled before the execution was sent\n",
                 nv::interrupt::signal_name(sig).c_str());
  }
  return nv::interrupt::exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  nv::interrupt::install();

  // ---- The request.
  capnp::MallocMessageBuilder mb;
  auto req = nv::bus::init_body<nv::schema::ExecRequest>(mb);
  std::string trace_id = nv::new_uuid_v7();
  req.setTraceId(trace_id);
  req.setLanguage(a.language);
  req.setCode(a.code);
  if (a.send_stdin) {
    std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    req.setStdin(kj::arrayPtr(reinterpret_cast<const kj::byte*>(in.data()), in.size()));
  }
  auto env = req.initEnv(static_cast<unsigned>(a.env.size()));
  for (unsigned i = 0; i < a.env.size(); ++i) {
    env[i].setName(a.env[i].first);
    env[i].setValue(a.env[i].second);
  }
  std::vector<std::string> put_data(a.puts.size());
  auto puts = req.initPutFiles(static_cast<unsigned>(a.puts.size()));
  for (unsigned i = 0; i < a.puts.size(); ++i) {
    if (!read_file(a.puts[i].local, &put_data[i])) {
      usage_error("--put: cannot read " + a.puts[i].local + ": " + std::strerror(errno));
    }
    puts[i].setPath(a.puts[i].remote);
    puts[i].setData(
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(put_data[i].data()), put_data[i].size()));
  }
  auto gets = req.initGetFiles(static_cast<unsigned>(a.gets.size()));
  for (unsigned i = 0; i < a.gets.size(); ++i) gets.set(i, a.gets[i].remote);
  req.setTimeoutMs(static_cast<uint32_t>(std::lround(a.timeout_s * 1000)));
  req.setOutputCapBytes(a.output_cap);
  req.setTier(a.tier);

  // ---- The orchestrator.
  std::string rt = a.runtime_dir.empty() ? nv::default_runtime_dir() : a.runtime_dir;
  nv::ClientOptions co;
  co.endpoint = a.endpoint.empty() ? nv::bus::ipc_endpoint(rt + "/clients.sock") : a.endpoint;
  if (!a.curve_key.empty()) {
    auto k = nv::curve::load(a.curve_key);
    if (!k) usage_error("--curve-key: " + k.error().message);
    co.curve_keys = k.value();
  }
  if (!a.curve_server_key.empty()) {
    auto k = nv::curve::load(a.curve_server_key);
    if (!k) usage_error("--curve-server-key: " + k.error().message);
    co.curve_server_key = k->public_key;
  }
  zmq::context_t ctx(1);
  nv::Client client(ctx, co);
  {
    // A quick nv.status first: tells "not running" and "no executor" apart from a slow run.
    auto st = client.call("nv.status", nullptr, std::chrono::milliseconds(2000));
    if (nv::interrupt::requested()) return interrupted(nullptr);
    if (!st && st.error().code == nv::ErrorCode::TIMED_OUT) {
      return report_error(
          a,
          nv::make_error(nv::ErrorCode::TIMED_OUT, "the orchestrator at " + co.endpoint +
                                                       " is unreachable; start the stack: ./nv up"),
          kExitUnreachable);
    }
    if (st) {
      auto body = st->body.root<nv::schema::StatusReply>();
      bool have_exec = false;
      if (body) {
        for (auto s : body->getServices()) have_exec = have_exec || s.getService() == "exec";
      }
      if (body && !have_exec) {
        return report_error(
            a,
            nv::make_error(nv::ErrorCode::NO_WORKER,
                           "no executor registered with the orchestrator at " + co.endpoint +
                               "; start nv-sandbox-executor (./nv up) and check "
                               "`nv status`"),
            kExitNoWorker);
      }
    }
  }

  double timeout_s = a.timeout_s > 0 ? a.timeout_s : 10.0;
  double deadline_s = a.deadline_s > 0 ? a.deadline_s : timeout_s + 60.0;
  auto deadline = std::chrono::milliseconds(std::lround(deadline_s * 1000));
  uint64_t id = client.send("exec", &mb, deadline, trace_id);
  auto give_up = std::chrono::steady_clock::now() + deadline + std::chrono::seconds(2);

  std::optional<nv::Client::Incoming> final_answer;
  while (!final_answer) {
    if (nv::interrupt::requested()) {
      client.cancel(id, "exec");
      return interrupted(&trace_id);
    }
    if (std::chrono::steady_clock::now() > give_up) {
      return report_error(a,
                          nv::make_error(nv::ErrorCode::TIMED_OUT,
                                         "no answer from the orchestrator within " +
                                             std::to_string(std::lround(deadline_s)) + " s"),
                          kExitSandboxFailed);
    }
    auto in = client.receive(std::chrono::milliseconds(100));
    if (!in || in->header.request_id != id) continue;
    if (in->final()) {
      final_answer = std::move(in);
      break;
    }
    auto chunk = in->body.root<nv::schema::ExecChunk>();
    if (!chunk) continue;
    auto data = chunk->getData();
    switch (chunk->getStream()) {
      case nv::schema::Stream::STDOUT:
        if (!a.json) write_all(stdout, data.begin(), data.size());
        break;
      case nv::schema::Stream::STDERR:
        if (!a.json) write_all(stderr, data.begin(), data.size());
        break;
      default:
        if (a.verbose) std::fprintf(stderr, "nv-exec: %s\n", data_string(data).c_str());
        break;
    }
  }

  if (final_answer->header.kind == nv::bus::Kind::ERROR) {
    auto e = final_answer->error();
    int code = e.code == nv::ErrorCode::NO_WORKER     ? kExitNoWorker
               : e.code == nv::ErrorCode::BROKER_LOST ? kExitUnreachable
                                                      : kExitSandboxFailed;
    if (e.code == nv::ErrorCode::NO_WORKER) {
      e.message += " (no executor registered, or none had a free VM in time)";
    }
    return report_error(a, e, code);
  }
  auto body = final_answer->body.root<nv::schema::ExecResult>();
  if (!body) return report_error(a, body.error(), kExitSandboxFailed);
  auto r = body.value();

  // ---- Files back.
  bool get_failed = false;
  std::vector<std::string> saved(r.getFiles().size());
  for (unsigned i = 0; i < r.getFiles().size(); ++i) {
    auto f = r.getFiles()[i];
    std::string local;
    for (auto& g : a.gets) {
      if (g.remote == f.getPath().cStr()) local = g.local;
    }
    if (!f.getFound() || local.empty()) {
      get_failed = true;
      if (!a.json) {
        std::fprintf(stderr, "nv-exec: --get %s: %s\n", f.getPath().cStr(),
                     f.getError().size() ? f.getError().cStr() : "not found");
      }
      continue;
    }
    std::ofstream out(local, std::ios::binary | std::ios::trunc);
    auto d = f.getData();
    out.write(reinterpret_cast<const char*>(d.begin()), static_cast<std::streamsize>(d.size()));
    if (!out) {
      get_failed = true;
      std::fprintf(stderr, "nv-exec: cannot write %s: %s\n", local.c_str(), std::strerror(errno));
      continue;
    }
    saved[i] = local;
  }

  int code = r.getExitCode();
  if (r.getTimedOut())
    code = kExitTimeout;
  else if (r.getSignal() > 0)
    code = 128 + r.getSignal();
  else if (code < 0)
    code = kExitSandboxFailed;
  if (code == 0 && get_failed) code = 1;

  if (a.json) {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    auto str = [&](const char* k, const std::string& v) {
      w.Key(k);
      std::string c = utf8_clean(v);
      w.String(c.c_str(), static_cast<rapidjson::SizeType>(c.size()));
    };
    w.StartObject();
    w.Key("exitCode");
    w.Int(r.getExitCode());
    w.Key("signal");
    w.Int(r.getSignal());
    w.Key("timedOut");
    w.Bool(r.getTimedOut());
    w.Key("truncated");
    w.Bool(r.getTruncated());
    w.Key("hostKilled");
    w.Bool(r.getHostKilled());
    str("note", r.getNote());
    str("vm_id", r.getVmId());
    str("trace_id", trace_id);
    w.Key("durationMs");
    w.Double(r.getDurationMs());
    w.Key("wallMs");
    w.Double(r.getWallMs());
    str("stdout", data_string(r.getStdout()));
    str("stderr", data_string(r.getStderr()));
    w.Key("stdoutBytes");
    w.Uint64(r.getStdoutBytes());
    w.Key("stderrBytes");
    w.Uint64(r.getStderrBytes());
    // The end of a stream past the cap, and how much between head and tail is missing.
    str("stdout_tail", data_string(r.getStdoutTail()));
    str("stderr_tail", data_string(r.getStderrTail()));
    w.Key("stdout_left_out");
    w.Uint64(left_out(r.getStdout(), r.getStdoutTail(), r.getStdoutBytes()));
    w.Key("stderr_left_out");
    w.Uint64(left_out(r.getStderr(), r.getStderrTail(), r.getStderrBytes()));
    w.Key("files");
    w.StartArray();
    for (unsigned i = 0; i < r.getFiles().size(); ++i) {
      auto f = r.getFiles()[i];
      w.StartObject();
      str("path", f.getPath());
      w.Key("found");
      w.Bool(f.getFound());
      str("error", f.getError());
      w.Key("bytes");
      w.Uint64(f.getData().size());
      str("saved_to", saved[i]);
      w.EndObject();
    }
    w.EndArray();
    w.Key("nvExecStatus");
    w.Int(code);
    w.EndObject();
    std::printf("%s\n", sb.GetString());
  } else {
    // The head streamed live; the end of a stream that went past the cap comes now, after a
    // line saying how much is missing in between.
    for (auto [head, tail, total, f, name] :
         {std::tuple{r.getStdout(), r.getStdoutTail(), r.getStdoutBytes(), stdout, "stdout"},
          std::tuple{r.getStderr(), r.getStderrTail(), r.getStderrBytes(), stderr, "stderr"}}) {
      uint64_t missing = left_out(head, tail, total);
      if (missing == 0 && tail.size() == 0) continue;
      std::fflush(stdout);
      std::fprintf(stderr, "\nnv-exec: [… %llu bytes of %s left out …]\n",
                   static_cast<unsigned long long>(missing), name);
      write_all(f, tail.begin(), tail.size());
    }
    if (r.getTruncated()) {
      std::fprintf(stderr, "nv-exec: output truncated (the program wrote %llu bytes)\n",
                   static_cast<unsigned long long>(r.getStdoutBytes() + r.getStderrBytes()));
    }
    if (r.getTimedOut()) {
      std::fprintf(stderr, "nv-exec: timed out after %.1f s%s\n", timeout_s,
                   r.getHostKilled() ? " (the VM was destroyed)" : "");
    } else if (r.getHostKilled() || r.getNote().size()) {
      std::fprintf(stderr, "nv-exec: %s\n", r.getNote().cStr());
    }
  }
  return code;
}
