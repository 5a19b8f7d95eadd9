// nv-submit — give NeuroVisor a task and watch it: the model writes code, the code runs in a
// microVM, the model reads the real output, and the answer comes back with stats.
//
//   nv-submit "Write a Python script that finds all prime numbers under 100"
//
// Talks to the orchestrator's "task" service over the bus (clients endpoint), prints the
// TaskProgress stream as it arrives and the TaskResult at the end. Exit codes (also in --help):
//   0 completed · 2 usage · 3 orchestrator unreachable · 4 model unreachable · 5 task failed ·
//   6 max iterations reached · 7 timed out
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/task.capnp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/client.h"
#include "common/enum_name.h"
#include "common/config.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/json.h"
#include "common/mount_arg.h"
#include "common/service.h"
#include "common/utf8.h"

namespace {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

enum Exit : int {
  kCompleted = 0,
  kUsage = 2,
  kOrchestratorUnreachable = 3,
  kModelUnreachable = 4,
  kFailed = 5,
  kMaxIterations = 6,
  kTimedOut = 7,
};

constexpr const char* kExitCodes =
    "\nexit codes:\n"
    "  0  the task completed (the answer is printed)\n"
    "  2  usage error\n"
    "  3  the orchestrator is unreachable: start the stack with ./nv up (installed:\n"
    "     systemctl start neurovisor.target); `nv status` names the service that is down\n"
    "  4  the model is unreachable: start it (`ollama serve`), pull the model (`ollama pull "
    "MODEL`),\n"
    "     or point nv-llm-gateway at a running server (--llm-url URL or OLLAMA_HOST)\n"
    "  5  the task failed (the error says why)\n"
    "  6  the model was still calling tools when --max-iterations was reached\n"
    "  7  the task timed out (--timeout, or the model did not answer in time)\n"
    "     (a --mount outside the executor's --mount-root fails the task at once with\n"
    "     mountRefused before any model call: exit 5)\n"
    "  130 / 143  interrupted by Ctrl-C (SIGINT) / SIGTERM: the task is cancelled upstream\n"
    "     (the model call is abandoned, the running program's VM released)\n";

// One line saying what was cancelled; the exit status is 128 + the signal (130, 143).
int interrupted(const char* what) {
  std::cout.flush();
  std::cerr << "\nnv-submit: " << nv::interrupt::signal_name(nv::interrupt::requested()) << ": "
            << what << "\n";
  return nv::interrupt::exit_code();
}

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
std::string data(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

std::string language_name(s::Language l) {
  switch (l) {
    case s::Language::PYTHON:
      return "python";
    case s::Language::BASH:
      return "bash";
    case s::Language::SH:
      return "sh";
    case s::Language::JAVASCRIPT:
      return "javascript";
    case s::Language::UNSET:
      break;
  }
  return "unknown";
}

std::string status_name(s::TaskStatus st) { return nv::enum_name(st); }

std::string seconds(double ms, int precision = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f s", precision, ms / 1000.0);
  return buf;
}

// Program bytes as JSON text: each ill-formed sequence becomes U+FFFD (common/utf8.h).
std::string utf8(const std::string& in) { return nv::utf8::sanitize(in); }

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
void put(Writer& w, const char* key, const std::string& v) {
  w.Key(key);
  std::string u = utf8(v);
  w.String(u.c_str(), static_cast<rapidjson::SizeType>(u.size()));
}

// ------------------------------------------------------------------------------ the display

// Prints the progress stream for people; keeps a JSON copy for --json.
// The model's text is printed piece by piece as it streams in; its reasoning too, dimmed (ANSI
// SGR 2 on a terminal, else after a "thinking: " label), unless --no-thinking.
class View {
 public:
  View(bool quiet, bool json, bool thinking)
      : quiet_(quiet), json_(json), thinking_(thinking), tty_(isatty(STDOUT_FILENO) == 1) {}

  void on_progress(s::TaskProgress::Reader p) {
    if (json_) record(p);
    if (quiet_ || json_) return;
    auto which = p.which();
    if (which == s::TaskProgress::THINKING_DELTA) {
      if (!thinking_) return;
      run(Run::thinking);
      streamed(text(p.getThinkingDelta()));
      return;
    }
    if (which == s::TaskProgress::MODEL_DELTA) {
      run(Run::text);
      streamed(text(p.getModelDelta()));
      streamed_ = p.getIteration();
      return;
    }
    run(Run::none);
    switch (which) {
      case s::TaskProgress::THINKING:
        std::cout << "▶ iteration " << p.getIteration() << ": asking the model…\n";
        break;
      case s::TaskProgress::MODEL_TEXT:
        // Already on screen when it streamed.
        if (streamed_ != p.getIteration()) print_block(text(p.getModelText()), "  ");
        break;
      case s::TaskProgress::NOTICE:
        std::cout << "↻ " << text(p.getNotice()) << "\n";
        break;
      case s::TaskProgress::MODEL_DELTA:
      case s::TaskProgress::THINKING_DELTA:
        break;
      case s::TaskProgress::TOOL_CALL: {
        auto t = p.getToolCall();
        std::string tool = t.getTool().size() ? text(t.getTool()) : "execute_code";
        if (tool == "execute_code") {
          std::cout << "⚙ execute_code (" << language_name(t.getLanguage()) << ")\n";
        } else {
          std::cout << "⚙ " << tool << " " << text(t.getPath()) << "\n";
        }
        if (t.getCode().size() > 0) print_block(text(t.getCode()), "│ ");
        break;
      }
      case s::TaskProgress::TOOL_RESULT:
        print_block(text(p.getToolResult()), "  → ");
        break;
      case s::TaskProgress::OUTPUT: {
        auto c = p.getOutput();
        if (c.getStream() == s::Stream::STATUS) {
          std::cout << "  · " << data(c.getData()) << "\n";
        } else {
          auto& buf = c.getStream() == s::Stream::STDERR ? err_ : out_;
          buf += data(c.getData());
          flush_lines(c.getStream() == s::Stream::STDERR, false);
        }
        break;
      }
      case s::TaskProgress::EXEC_RESULT: {
        flush_lines(false, true);
        flush_lines(true, true);
        auto r = p.getExecResult();
        // The end of a stream past the sandbox's cap, after a line saying what is missing.
        for (bool is_err : {false, true}) {
          auto head = is_err ? r.getStderr() : r.getStdout();
          auto tail = is_err ? r.getStderrTail() : r.getStdoutTail();
          uint64_t total = is_err ? r.getStderrBytes() : r.getStdoutBytes();
          if (tail.size() == 0) continue;
          uint64_t have = head.size() + tail.size();
          std::cout << "  [… " << (total > have ? total - have : 0) << " bytes of "
                    << (is_err ? "stderr" : "stdout") << " left out …]\n";
          (is_err ? err_ : out_) += data(tail);
          flush_lines(is_err, true);
        }
        // The guest's own run time, unless its clock disagrees with the host's wall time (a
        // starved TCG guest's clock jumps); then the host's.
        double ms =
            r.getDurationMs() > 0 && (r.getWallMs() <= 0 || r.getDurationMs() <= r.getWallMs())
                ? r.getDurationMs()
                : r.getWallMs();
        if (r.getTimedOut()) {
          std::cout << "⏱ timed out after " << seconds(ms) << "\n";
        } else if (r.getSignal() != 0) {
          std::cout << "✗ killed by signal " << r.getSignal() << " after " << seconds(ms) << "\n";
        } else {
          std::cout << (r.getExitCode() == 0 ? "✓" : "✗") << " exit " << r.getExitCode() << " in "
                    << seconds(ms) << "\n";
        }
        if (r.getHostKilled() && r.getNote().size() > 0) {
          std::cout << "  · " << text(r.getNote()) << "\n";
        }
        break;
      }
      case s::TaskProgress::TOOL_ERROR:
        std::cout << "✗ tool error: " << text(p.getToolError().getMessage())
                  << " (the model is told)\n";
        break;
    }
    std::cout.flush();
  }

  std::string progress_json() const { return "[" + progress_ + "]"; }

  // Ends a streamed run (before the result is printed).
  void done() {
    if (!quiet_ && !json_) run(Run::none);
    std::cout.flush();
  }

 private:
  enum class Run { none, text, thinking };
  // Switches between streamed text, streamed reasoning and whole lines.
  void run(Run next) {
    if (next == run_) return;
    if (run_ == Run::thinking && tty_) std::cout << "\x1b[0m";
    if (run_ != Run::none && !at_line_start_) std::cout << "\n";
    at_line_start_ = true;
    if (next == Run::thinking) {
      std::cout << (tty_ ? "\x1b[2m" : "thinking: ");
      at_line_start_ = tty_;
    }
    run_ = next;
  }
  void streamed(const std::string& t) {
    std::cout << t << std::flush;
    if (!t.empty()) at_line_start_ = t.back() == '\n';
  }

  static void print_block(const std::string& t, const char* prefix) {
    std::istringstream in(t);
    std::string line;
    while (std::getline(in, line)) std::cout << prefix << line << "\n";
  }

  void flush_lines(bool err, bool all) {
    auto& buf = err ? err_ : out_;
    const char* prefix = err ? "  ! " : "  ";
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::cout << prefix << buf.substr(0, nl) << "\n";
      buf.erase(0, nl + 1);
    }
    if (all && !buf.empty()) {
      std::cout << prefix << buf << "\n";
      buf.clear();
    }
  }

  void record(s::TaskProgress::Reader p) {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("iteration");
    w.Uint(p.getIteration());
    switch (p.which()) {
      case s::TaskProgress::THINKING:
        put(w, "kind", "thinking");
        break;
      case s::TaskProgress::MODEL_TEXT:
        put(w, "kind", "modelText");
        put(w, "text", text(p.getModelText()));
        break;
      case s::TaskProgress::TOOL_CALL:
        put(w, "kind", "toolCall");
        put(w, "language", language_name(p.getToolCall().getLanguage()));
        put(w, "code", text(p.getToolCall().getCode()));
        put(w, "callId", text(p.getToolCall().getCallId()));
        put(w, "tool",
            p.getToolCall().getTool().size() ? text(p.getToolCall().getTool())
                                             : std::string("execute_code"));
        put(w, "path", text(p.getToolCall().getPath()));
        break;
      case s::TaskProgress::TOOL_RESULT:
        put(w, "kind", "toolResult");
        put(w, "text", text(p.getToolResult()));
        break;
      case s::TaskProgress::OUTPUT: {
        auto c = p.getOutput();
        put(w, "kind", "output");
        put(w, "stream",
            c.getStream() == s::Stream::STDOUT   ? "stdout"
            : c.getStream() == s::Stream::STDERR ? "stderr"
                                                 : "status");
        put(w, "data", data(c.getData()));
        break;
      }
      case s::TaskProgress::EXEC_RESULT: {
        auto r = p.getExecResult();
        put(w, "kind", "execResult");
        w.Key("exitCode");
        w.Int(r.getExitCode());
        w.Key("signal");
        w.Int(r.getSignal());
        w.Key("durationMs");
        w.Double(r.getDurationMs());
        w.Key("wallMs");
        w.Double(r.getWallMs());
        w.Key("timedOut");
        w.Bool(r.getTimedOut());
        w.Key("truncated");
        w.Bool(r.getTruncated());
        put(w, "stdout", data(r.getStdout()));
        put(w, "stderr", data(r.getStderr()));
        put(w, "stdoutTail", data(r.getStdoutTail()));
        put(w, "stderrTail", data(r.getStderrTail()));
        w.Key("stdoutBytes");
        w.Uint64(r.getStdoutBytes());
        w.Key("stderrBytes");
        w.Uint64(r.getStderrBytes());
        put(w, "vmId", text(r.getVmId()));
        break;
      }
      case s::TaskProgress::TOOL_ERROR:
        put(w, "kind", "toolError");
        put(w, "code", nv::code_name(p.getToolError().getCode()));
        put(w, "message", text(p.getToolError().getMessage()));
        break;
      case s::TaskProgress::MODEL_DELTA:
        put(w, "kind", "modelDelta");
        put(w, "text", text(p.getModelDelta()));
        break;
      case s::TaskProgress::THINKING_DELTA:
        put(w, "kind", "thinkingDelta");
        put(w, "text", text(p.getThinkingDelta()));
        break;
      case s::TaskProgress::NOTICE:
        put(w, "kind", "notice");
        put(w, "text", text(p.getNotice()));
        break;
    }
    w.EndObject();
    if (!progress_.empty()) progress_ += ",";
    progress_.append(sb.GetString(), sb.GetSize());
  }

  bool quiet_, json_, thinking_, tty_;
  Run run_ = Run::none;
  bool at_line_start_ = true;
  uint32_t streamed_ = 0;  // the last iteration whose text streamed
  std::string out_, err_;
  std::string progress_;
};

// What to tell a person whose model is unreachable.
std::string model_hint(const std::string& model) {
  std::string m = model.empty() ? "MODEL (the gateway's --model)" : model;
  return "to fix it: start the model server (`ollama serve`), pull the model (`ollama pull " + m +
         "`), or point nv-llm-gateway at a running server with --llm-url URL or OLLAMA_HOST "
         "(add --llm-api openai for OpenAI-compatible servers), then try again";
}

int exit_for(s::TaskStatus st) {
  switch (st) {
    case s::TaskStatus::COMPLETED:
      return kCompleted;
    case s::TaskStatus::MODEL_UNREACHABLE:
      return kModelUnreachable;
    case s::TaskStatus::MAX_ITERATIONS:
      return kMaxIterations;
    case s::TaskStatus::TIMED_OUT:
      return kTimedOut;
    case s::TaskStatus::FAILED:
    case s::TaskStatus::CANCELLED:
    case s::TaskStatus::UNSET:
      break;
  }
  return kFailed;
}

int unreachable(const std::string& why, bool json) {
  std::string msg = "nv-submit: cannot reach the orchestrator: " + why +
                    "; `nv status` names what is down; `./nv up` starts it (installed: "
                    "systemctl start neurovisor.target)";
  if (json) {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("exitCode");
    w.Int(kOrchestratorUnreachable);
    put(w, "error", msg);
    w.EndObject();
    std::cout << sb.GetString() << "\n";
  }
  std::cerr << msg << "\n";
  return kOrchestratorUnreachable;
}

void add_options(nv::Config& c) {
  c.add_string("model", "",
               "model to use (\"\" = the orchestrator's, else the gateway's "
               "--model)");
  c.add_int("max-iterations", 0, "LLM calls at most (0 = the orchestrator's default, 10)");
  c.add_number("timeout-ms", 0,
               "how long the whole task may take, ms (0 = the orchestrator's "
               "default)");
  c.range("timeout-ms", 0, 86400000).alias_flag("timeout-ms", "timeout", 1000);
  c.add_string("tier", "", "VM size for the code: small | medium | large (\"\" = small)");
  c.alias_flag("tier", "size");  // the seed's spelling
  c.add_bool("json", false,
             "print one JSON document: the TaskResult, the progress list and "
             "the exit code");
  c.add_bool("quiet", false, "print the answer only");
  c.add_bool("no-thinking", false,
             "do not show the model's reasoning (shown dimmed by default; "
             "--json keeps it as thinkingDelta entries)");
  c.add_string("trace-id", "", "trace id to use (\"\" = the orchestrator mints a UUID v7)");
  c.add_string("runtime-dir", "",
               "the stack's runtime directory (default: $NV_RUNTIME_DIR, "
               "/run/neurovisor as root, else $XDG_RUNTIME_DIR/neurovisor)");
  c.add_string("clients-endpoint", "",
               "the orchestrator's client endpoint (default "
               "ipc://RUNTIME_DIR/clients.sock)");
  c.add_number("connect-timeout-ms", 3000,
               "how long to wait for the orchestrator to answer a "
               "ping, ms");
  c.range("connect-timeout-ms", 1, 3600000);
  c.alias_flag("connect-timeout-ms", "connect-timeout", 1000);
}

constexpr const char* kMountHelp =
    "\nhost directories:\n"
    "  --mount HOST:GUEST[:ro|:rw]   (repeatable, at most 8) copy a host directory into the\n"
    "     task's sandbox. HOST: ~ and relative paths are taken from your home and current\n"
    "     directory; GUEST: absolute under /home/agent, or relative to it. ro (the default)\n"
    "     or rw; a rw mount's changes are copied back to HOST when the task ends, whatever\n"
    "     its status (written to a temp file and renamed; the result is a notice in the\n"
    "     progress). HOST must be under one of the executor's --mount-root directories.\n"
    "\nnetwork (the pool manager runs with --net):\n"
    "  --allow ENTRY   (repeatable, at most 64) the task's sandbox may reach ENTRY: a CIDR with\n"
    "     an optional port (198.51.100.0/24, 198.51.100.7:443, [2001:db8::1]:443) or a domain\n"
    "     (example.org, *.example.org; resolved by the sandbox's DNS). Without --allow the\n"
    "     sandbox has no network. Metadata, link-local, private and the host's addresses stay\n"
    "     denied whatever is allowed (egressDenied).\n";

// Takes every "--NAME X" / "--NAME=X" out of argv (Config has no repeatable options): --mount
// and --allow.
std::vector<std::string> take_repeated(int* argc, char** argv, const std::string& name,
                                       const std::string& shape, std::string* problem) {
  std::vector<std::string> out;
  const std::string flag = "--" + name, eq = flag + "=";
  int w = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") {  // the rest is the task's text
      while (i < *argc) argv[w++] = argv[i++];
      break;
    }
    if (a == flag) {
      if (i + 1 >= *argc) {
        *problem = flag + " needs a value " + shape;
        continue;
      }
      out.emplace_back(argv[++i]);
    } else if (a.rfind(eq, 0) == 0) {
      out.emplace_back(a.substr(eq.size()));
    } else {
      argv[w++] = argv[i];
    }
  }
  *argc = w;
  return out;
}

int run(int argc, char** argv) {
  std::string mount_problem, allow_problem;
  std::vector<std::string> mount_args =
      take_repeated(&argc, argv, "mount", "HOST:GUEST[:ro|:rw]", &mount_problem);
  std::vector<std::string> allow_args =
      take_repeated(&argc, argv, "allow", "CIDR[:PORT] or a domain", &allow_problem);
  nv::Config c("nv-submit \"TASK\"",
               "give NeuroVisor a task: the model writes code, it runs in "
               "a microVM, you get the answer");
  add_options(c);
  if (auto st = c.parse(argc, argv); !st) {
    std::cerr << "nv-submit: " << st.error().message << "\n(see nv-submit --help)\n";
    return kUsage;
  }
  if (c.help_requested()) {
    std::cout << c.help() << kMountHelp << kExitCodes;
    return 0;
  }
  std::string task;
  for (const auto& p : c.positional()) task += (task.empty() ? "" : " ") + p;
  bool json = c.boolean("json"), quiet = c.boolean("quiet");
  std::string problems;
  auto problem = [&](const std::string& p) { problems += "nv-submit: " + p + "\n"; };
  if (task.empty()) problem("say what the task is: nv-submit \"TASK\"");
  int64_t max_iter = c.integer("max-iterations");
  if (max_iter < 0 || max_iter > 100) problem("--max-iterations must be in [0, 100]");
  double timeout_s = c.number("timeout");
  if (timeout_s < 0 || timeout_s > 86400) problem("--timeout must be in [0, 86400] seconds");
  s::SizeTier tier = s::SizeTier::UNSET;
  const std::string& t = c.str("tier");
  if (t == "small")
    tier = s::SizeTier::SMALL;
  else if (t == "medium")
    tier = s::SizeTier::MEDIUM;
  else if (t == "large")
    tier = s::SizeTier::LARGE;
  else if (!t.empty())
    problem("--tier must be small, medium or large");
  if (json && quiet) problem("--json and --quiet do not go together");
  if (!mount_problem.empty()) problem(mount_problem);
  std::vector<nv::sandbox::Mount> mounts;
  for (const auto& m : mount_args) {
    auto parsed = nv::sandbox::parse_mount_arg(m);
    if (!parsed) {
      problem(parsed.error().message);
    } else {
      mounts.push_back(*parsed);
    }
  }
  if (mounts.size() > 8) problem("at most 8 --mount");
  if (!allow_problem.empty()) problem(allow_problem);
  if (allow_args.size() > 64) problem("at most 64 --allow");  // checked in full by the pool
  if (!problems.empty()) {
    std::cerr << problems << "(see nv-submit --help)\n";
    return kUsage;
  }

  std::string rt = c.str("runtime-dir").empty() ? nv::default_runtime_dir() : c.str("runtime-dir");
  std::string endpoint = c.str("clients-endpoint").empty()
                             ? nv::bus::ipc_endpoint(rt + "/clients.sock")
                             : c.str("clients-endpoint");
  if (auto path = nv::bus::ipc_path(endpoint); !path.empty()) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return unreachable(path + " does not exist", json);
  }

  zmq::context_t ctx(1);
  nv::Client client(ctx, nv::ClientOptions{endpoint, {}, {}, {}});
  nv::interrupt::install();

  // 1. Is anyone there, and does it run the agent loop?
  {
    capnp::MallocMessageBuilder mb;
    nv::bus::init_body<s::StatusRequest>(mb);
    auto wait = milliseconds(static_cast<int64_t>(c.number("connect-timeout") * 1000));
    auto st = client.call("nv.status", &mb, wait);
    if (nv::interrupt::requested()) return interrupted("cancelled before the task was sent");
    if (!st) return unreachable("no answer on " + endpoint + " (" + st.error().message + ")", json);
    auto reply = st->body.root<s::StatusReply>();
    if (!reply) return unreachable("a bad status answer (" + reply.error().message + ")", json);
    bool has_task = false;
    for (auto svc : reply.value().getServices()) has_task |= text(svc.getService()) == "task";
    if (!has_task) {
      return unreachable(
          "the orchestrator at " + endpoint + " has no \"task\" service (started with --no-agent?)",
          json);
    }
  }

  // 2. Submit and follow.
  capnp::MallocMessageBuilder mb;
  auto sub = nv::bus::init_body<s::SubmitTask>(mb);
  sub.setPrompt(task);
  sub.setModel(c.str("model"));
  sub.setMaxIterations(static_cast<uint32_t>(max_iter));
  sub.setTimeoutMs(static_cast<uint32_t>(timeout_s * 1000));
  sub.setTier(tier);
  sub.setTraceId(c.str("trace-id"));
  nv::sandbox::mounts_to_capnp(mounts, sub.initMounts(static_cast<unsigned>(mounts.size())));
  if (!allow_args.empty()) {
    auto n = sub.initNetwork();
    n.setMode(s::NetworkMode::ALLOW);
    auto l = n.initAllow(static_cast<unsigned>(allow_args.size()));
    for (unsigned i = 0; i < l.size(); ++i) l.set(i, allow_args[i]);
  }
  // The orchestrator enforces the task deadline; the bus deadline only has to outlast it.
  auto deadline = timeout_s > 0 ? milliseconds(static_cast<int64_t>(timeout_s * 1000) + 30'000)
                                : milliseconds(24LL * 3600 * 1000);
  View view(quiet, json, !c.boolean("no-thinking"));
  uint64_t id = client.send("task", &mb, deadline, c.str("trace-id"));
  auto end = Clock::now() + deadline + std::chrono::seconds(2);
  std::optional<nv::Client::Incoming> final;
  while (!final) {
    if (nv::interrupt::requested()) {
      client.cancel(id, "task");
      return interrupted("the task was cancelled (its model call abandoned, its VM released)");
    }
    if (Clock::now() > end) {
      return unreachable("no answer to the task before its deadline", json);
    }
    auto in = client.receive(milliseconds(200));
    if (!in || in->header.request_id != id) continue;
    if (in->header.kind == nv::bus::Kind::PARTIAL) {
      auto p = in->body.root<s::TaskProgress>();
      if (p) view.on_progress(p.value());
      continue;
    }
    final = std::move(in);
  }
  view.done();
  if (final->header.kind == nv::bus::Kind::ERROR) {
    nv::Error e = final->error();
    bool gone = e.code == nv::ErrorCode::UNKNOWN_SERVICE || e.code == nv::ErrorCode::NO_WORKER ||
                e.code == nv::ErrorCode::SHUTTING_DOWN || e.code == nv::ErrorCode::WORKER_LOST ||
                e.code == nv::ErrorCode::BROKER_LOST;
    if (gone) return unreachable(e.to_string(), json);
    if (json) {
      rapidjson::StringBuffer sb;
      Writer w(sb);
      w.StartObject();
      w.Key("exitCode");
      w.Int(kFailed);
      put(w, "error", e.to_string());
      w.EndObject();
      std::cout << sb.GetString() << "\n";
    }
    std::cerr << "nv-submit: the task was refused: " << e.to_string() << "\n";
    return kFailed;
  }
  auto res = final->body.root<s::TaskResult>();
  if (!res) {
    std::cerr << "nv-submit: unreadable result: " << res.error().message << "\n";
    return kFailed;
  }
  auto r = res.value();
  int code = exit_for(r.getStatus());
  if (json) {
    std::cout << "{\"exitCode\":" << code << ",\"result\":" << nv::to_json(r)
              << ",\"progress\":" << view.progress_json() << "}\n";
    return code;
  }
  std::string answer = text(r.getAnswer());
  std::string error = r.hasError() ? text(r.getError().getMessage()) : std::string();
  if (quiet) {
    if (r.getStatus() == s::TaskStatus::COMPLETED) {
      std::cout << answer << (answer.ends_with('\n') ? "" : "\n");
    } else {
      std::cerr << "nv-submit: " << status_name(r.getStatus()) << ": " << error << "\n";
      if (code == kModelUnreachable) std::cerr << model_hint(text(r.getModel())) << "\n";
    }
    return code;
  }
  if (r.getStatus() == s::TaskStatus::COMPLETED) {
    std::cout << "═ answer ═\n" << answer << (answer.ends_with('\n') ? "" : "\n");
  } else {
    std::cout << "═ " << status_name(r.getStatus()) << " ═\n";
    if (!answer.empty()) std::cout << answer << (answer.ends_with('\n') ? "" : "\n");
    std::cerr << "nv-submit: " << error << "\n";
    if (code == kModelUnreachable) std::cerr << model_hint(text(r.getModel())) << "\n";
  }
  std::cout << "iterations " << r.getIterations() << " · tool calls " << r.getToolCalls()
            << " · model load " << seconds(r.getModelLoadMs(), 1) << " · total "
            << seconds(r.getTotalMs(), 1) << " · trace " << text(r.getTraceId()) << "\n";
  if (double ft = r.getFirstTokenMs(); ft > 0) {
    std::cout << "first token "
              << (ft < 1000 ? std::to_string(std::lround(ft)) + " ms" : seconds(ft)) << "\n";
  }
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "nv-submit: " << e.what() << "\n";
    return kFailed;
  } catch (const kj::Exception& e) {
    std::cerr << "nv-submit: " << e.getDescription().cStr() << "\n";
    return kFailed;
  }
}
