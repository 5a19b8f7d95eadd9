// sandbox_cmd.cc — `nv sandbox`: the sandbox service (schemas/sandbox.capnp) from the command
// line, through the typed client (common/sandbox_client.h). Output and JSON: sandbox_print.cc.
#include "sandbox_cmd.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nv/schema/bus.capnp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "common/client.h"
#include "common/curve.h"
#include "common/interrupt.h"
#include "common/mount_arg.h"
#include "common/sandbox_client.h"
#include "common/sandbox_route.h"
#include "common/service.h"
#include "sandbox_print.h"

namespace nv::launcher {

namespace {

namespace fs = std::filesystem;
namespace sb = nv::sandbox;
namespace s = nv::schema;
using std::chrono::milliseconds;

constexpr const char* kSandboxUsage =
    "usage: nv sandbox COMMAND [options]\n"
    "Sandboxes that live: one microVM used by many calls; files, background processes and\n"
    "python/javascript contexts persist between them. The owner is uid:<your uid>.\n"
    "\n"
    "  create [--tier small|medium|large] [--env K=V]... [--cwd DIR] [--lifetime-ms N]\n"
    "         [--idle-ms N] [--label K=V]... [--from-snapshot NAME] [--mount "
    "HOST:GUEST[:ro|:rw]]...\n"
    "                              a new sandbox from the warm pool (or a snapshot); prints its "
    "id\n"
    "                              --mount: copy a host directory in (at most 8); HOST: ~ and\n"
    "                              relative paths from your home/current dir, under one of the\n"
    "                              executor's --mount-root; GUEST: under /home/agent (relative:\n"
    "                              to it); ro (the default) or rw\n"
    "         [--allow CIDR[:PORT]|DOMAIN]... [--max-connections N] [--bandwidth BYTES_PER_S]\n"
    "                              --allow: egress the sandbox may use (needs the pool's --net;\n"
    "                              none: no network at all); metadata, link-local, private and\n"
    "                              host addresses stay denied (egressDenied, exit 8)\n"
    "         [--inference] [--model NAME]... [--token-budget N]\n"
    "                              an Ollama/OpenAI endpoint in the guest at 127.0.0.1:11434\n"
    "                              (OLLAMA_HOST, OPENAI_BASE_URL) bridged to nv-llm-gateway\n"
    "  sync ID                     copy the read-write mounts out to the host now (also done\n"
    "                              at rm); prints what each wrote, removed and skipped\n"
    "  exec ID [--lang python|bash|sh|js] [--context NAME] [--background] [--env K=V]...\n"
    "       [--cwd DIR] [--timeout-ms N] [--stdin] [--output-cap BYTES] [--verbose] CODE|-\n"
    "                              run CODE (- : read it from stdin); output streams live;\n"
    "                              --context: a persistent python/javascript interpreter;\n"
    "                              --background: start it and return (see `processes`)\n"
    "  cp LOCAL ID:PATH            copy a local file in (- : stdin), binary-exact\n"
    "  cp ID:PATH LOCAL            copy a file out (- : stdout; a directory: keeps the name)\n"
    "       [--piece-bytes N]      bytes per request (default: 32 MiB, at most the bus frame\n"
    "                              cap --max-frame-bytes less 64 KiB; 8 MiB on a default stack)\n"
    "  ls ID PATH [-r]             list a directory (-r: recursive) or show one file\n"
    "  get ID                      the sandbox's state, deadlines, labels\n"
    "  ls-all [--label K=V]... [--all]   your sandboxes (--all: also those destroyed lately)\n"
    "  processes ID                the processes in the sandbox\n"
    "  kill ID PID [SIG]           signal a process (SIG: a number or TERM, KILL, INT, HUP, ...;\n"
    "                              default TERM)\n"
    "  fork ID [-n N] [--label K=V]...   N (1..16, default 1) copies of a running sandbox\n"
    "  snapshot ID NAME            a named snapshot of a running sandbox (memory and disk)\n"
    "  snapshots                   your snapshots\n"
    "  snapshot-rm NAME            delete a snapshot\n"
    "  pause ID · resume ID        state to disk and RAM freed · back to running\n"
    "  keepalive ID [--extend-ms N]   reset the idle timeout (and move the lifetime's end)\n"
    "  rm ID                       destroy the sandbox\n"
    "\n"
    "options for every command:\n"
    "  --json                      one JSON object on stdout (camelCase; errors as\n"
    "                              {\"error\": {\"code\", \"message\", ...}})\n"
    "  --deadline-ms MS            give up on one request after MS (default 120000; exec:\n"
    "                              its timeout + 60000)\n"
    "  --runtime-dir DIR           the stack's runtime dir (default $NV_RUNTIME_DIR, ...)\n"
    "  --clients-endpoint EP       the orchestrator's client endpoint (ipc://RT/clients.sock)\n"
    "  --curve-key FILE, --curve-server-key FILE   CURVE keys for tcp:// endpoints\n"
    "  --max-frame-bytes N         the stack's bus frame cap (default 8388608)\n"
    "\n"
    "exit status: 0 done; exec: the program's exit code, 128+N after signal N, 124 timed out\n"
    "  (--background: 0 once started); 2 usage or a request the service refused as bad\n"
    "  (badRequest); 3 the orchestrator is unreachable; 4 no executor serves sandboxes;\n"
    "  5 no such sandbox, snapshot, file or process (unknownSandbox, unknownSnapshot, notFound);\n"
    "  6 a limit is reached (sandboxLimit, poolExhausted, overloaded); 7 the sandbox's state does\n"
    "  not allow it (sandboxState, e.g. exec on a paused sandbox); 8 a host mount was refused\n"
    "  (mountRefused: outside every --mount-root of the executor; nothing was leased) or its\n"
    "  quota is used up (mountQuota: sync), or a network entry is denied (egressDenied);\n"
    "  125 the sandbox failed\n"
    "  (vmFailed, guestProtocol, timedOut, ...); 130 interrupted (Ctrl-C), 143 terminated: the\n"
    "  request is cancelled upstream.\n";

constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr int kExitNoExecutor = 4;
constexpr int kExitNotFound = 5;
constexpr int kExitLimit = 6;
constexpr int kExitState = 7;
constexpr int kExitMount = 8;
constexpr int kExitTimeout = 124;
constexpr int kExitFailed = 125;
constexpr uint64_t kMaxPiece = 32u << 20;  // sandbox.capnp FileWrite.data, FileRead.length

// The exit status of a typed error.
int exit_code_for(const Error& e) {
  switch (e.code) {
    case ErrorCode::BAD_REQUEST:
      return kExitUsage;
    case ErrorCode::BROKER_LOST:
      return kExitUnreachable;
    case ErrorCode::UNKNOWN_SERVICE:
    case ErrorCode::NO_WORKER:
      return kExitNoExecutor;
    case ErrorCode::UNKNOWN_SANDBOX:
    case ErrorCode::UNKNOWN_SNAPSHOT:
    case ErrorCode::NOT_FOUND:
      return kExitNotFound;
    case ErrorCode::SANDBOX_LIMIT:
    case ErrorCode::POOL_EXHAUSTED:
    case ErrorCode::OVERLOADED:
      return kExitLimit;
    case ErrorCode::SANDBOX_STATE:
      return kExitState;
    case ErrorCode::MOUNT_REFUSED:
    case ErrorCode::MOUNT_QUOTA:
    case ErrorCode::EGRESS_DENIED:
      return kExitMount;
    case ErrorCode::CANCELLED:
      return interrupt::requested() ? interrupt::exit_code() : kExitFailed;
    default:
      return kExitFailed;
  }
}

struct Usage {
  std::string message;
};

// The command line: the command, its positional arguments and every option.
struct Args {
  std::string command;
  std::vector<std::string> pos;
  bool json = false, verbose = false, recursive = false, background = false, all = false;
  bool send_stdin = false, help = false;
  std::string runtime_dir, endpoint, curve_key, curve_server_key;
  uint64_t deadline_ms = 0, max_frame_bytes = 8u << 20, piece_bytes = 0;
  sb::Spec spec;  // create
  sb::ExecSpec exec;
  std::string lang = "bash";
  std::vector<sb::Label> labels;  // fork, ls-all
  uint32_t count = 1;             // fork
  uint32_t extend_ms = 0;         // keepalive
};

uint64_t number(const std::string& flag, const std::string& v, uint64_t lo, uint64_t hi) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE || n < lo || n > hi) {
    throw Usage{flag + " wants a whole number in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "], got '" + v + "'"};
  }
  return n;
}

std::pair<std::string, std::string> key_value(const std::string& flag, const std::string& v) {
  auto eq = v.find('=');
  if (eq == std::string::npos || eq == 0) throw Usage{flag + " wants K=V, got '" + v + "'"};
  return {v.substr(0, eq), v.substr(eq + 1)};
}

s::SizeTier parse_tier(const std::string& v) {
  if (v == "small") return s::SizeTier::SMALL;
  if (v == "medium") return s::SizeTier::MEDIUM;
  if (v == "large") return s::SizeTier::LARGE;
  throw Usage{"--tier must be small, medium or large, not '" + v + "'"};
}

s::Language parse_lang(const std::string& v) {
  if (v == "python" || v == "python3" || v == "py") return s::Language::PYTHON;
  if (v == "bash") return s::Language::BASH;
  if (v == "sh") return s::Language::SH;
  if (v == "js" || v == "javascript" || v == "node") return s::Language::JAVASCRIPT;
  throw Usage{"--lang must be python, bash, sh or js, not '" + v + "'"};
}

// Signal names as kill(1) takes them, with or without "SIG".
int parse_signal(std::string v) {
  static const std::pair<const char*, int> kNames[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT},
      {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"ALRM", SIGALRM}};
  if (!v.empty() && v[0] >= '0' && v[0] <= '9') {
    return static_cast<int>(number("SIG", v, 1, 64));
  }
  std::string n = v.rfind("SIG", 0) == 0 ? v.substr(3) : v;
  for (auto& [name, sig] : kNames) {
    if (n == name) return sig;
  }
  throw Usage{"unknown signal '" + v + "' (a number 1..64, or TERM, KILL, INT, HUP, ...)"};
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto is = [&](const char* name) {
      return arg == name || arg.rfind(std::string(name) + "=", 0) == 0;
    };
    auto value = [&](const std::string& name) -> std::string {
      auto eq = arg.find('=');
      if (arg.rfind("--", 0) == 0 && eq != std::string::npos) return arg.substr(eq + 1);
      if (i + 1 >= argc) throw Usage{name + " needs a value"};
      return argv[++i];
    };
    if (arg == "--") {  // the rest is positional (e.g. code that starts with '-')
      for (++i; i < argc; ++i) (a.command.empty() ? a.command : a.pos.emplace_back()) = argv[i];
      break;
    }
    if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else if (arg == "--json") {
      a.json = true;
    } else if (arg == "--verbose") {
      a.verbose = true;
    } else if (arg == "-r" || arg == "--recursive") {
      a.recursive = true;
    } else if (arg == "--background") {
      a.background = true;
    } else if (arg == "--all") {
      a.all = true;
    } else if (arg == "--stdin") {
      a.send_stdin = true;
    } else if (is("--runtime-dir")) {
      a.runtime_dir = value("--runtime-dir");
    } else if (is("--clients-endpoint")) {
      a.endpoint = value("--clients-endpoint");
    } else if (is("--curve-key")) {
      a.curve_key = value("--curve-key");
    } else if (is("--curve-server-key")) {
      a.curve_server_key = value("--curve-server-key");
    } else if (is("--deadline-ms")) {
      a.deadline_ms = number("--deadline-ms", value("--deadline-ms"), 1, 86'400'000);
    } else if (is("--max-frame-bytes")) {
      a.max_frame_bytes = number("--max-frame-bytes", value("--max-frame-bytes"), 1024, 1u << 30);
    } else if (is("--piece-bytes")) {
      a.piece_bytes = number("--piece-bytes", value("--piece-bytes"), 1, kMaxPiece);
    } else if (is("--tier")) {
      a.spec.tier = parse_tier(value("--tier"));
    } else if (is("--env")) {
      auto kv = key_value("--env", value("--env"));
      a.spec.env.push_back(kv);
      a.exec.env.push_back(kv);
    } else if (is("--cwd")) {
      a.spec.cwd = a.exec.cwd = value("--cwd");
    } else if (is("--lifetime-ms")) {
      a.spec.lifetime_ms =
          static_cast<uint32_t>(number("--lifetime-ms", value("--lifetime-ms"), 1, UINT32_MAX));
    } else if (is("--idle-ms")) {
      a.spec.idle_timeout_ms =
          static_cast<uint32_t>(number("--idle-ms", value("--idle-ms"), 1, UINT32_MAX));
    } else if (is("--label")) {
      auto [k, v] = key_value("--label", value("--label"));
      a.spec.labels.push_back({k, v});
      a.labels.push_back({k, v});
    } else if (is("--mount")) {
      auto m = sb::parse_mount_arg(value("--mount"));
      if (!m) throw Usage{m.error().message};
      if (a.spec.mounts.size() == 8) throw Usage{"at most 8 --mount"};
      a.spec.mounts.push_back(*m);
    } else if (is("--allow")) {
      if (a.spec.network.entries.size() == 64) throw Usage{"at most 64 --allow"};
      a.spec.network.allow = true;
      a.spec.network.entries.push_back(value("--allow"));
    } else if (is("--max-connections")) {
      a.spec.network.max_connections =
          static_cast<uint32_t>(number("--max-connections", value("--max-connections"), 1, 65535));
    } else if (is("--bandwidth")) {
      a.spec.network.bandwidth =
          static_cast<uint64_t>(number("--bandwidth", value("--bandwidth"), 1000, 10'000'000'000));
    } else if (arg == "--inference") {
      a.spec.inference.enabled = true;
    } else if (is("--model")) {
      if (a.spec.inference.models.size() == 16) throw Usage{"at most 16 --model"};
      a.spec.inference.enabled = true;
      a.spec.inference.models.push_back(value("--model"));
    } else if (is("--token-budget")) {
      a.spec.inference.enabled = true;
      a.spec.inference.token_budget = static_cast<uint64_t>(
          number("--token-budget", value("--token-budget"), 1, 1'000'000'000'000));
    } else if (is("--from-snapshot")) {
      a.spec.from_snapshot = value("--from-snapshot");
    } else if (is("--lang") || arg == "-l") {
      a.lang = value("--lang");
      a.exec.language = parse_lang(a.lang);
    } else if (is("--context")) {
      a.exec.context = value("--context");
    } else if (is("--timeout-ms")) {
      a.exec.timeout_ms =
          static_cast<uint32_t>(number("--timeout-ms", value("--timeout-ms"), 1, 86'400'000));
    } else if (is("--output-cap")) {
      a.exec.output_cap_bytes =
          static_cast<uint32_t>(number("--output-cap", value("--output-cap"), 1, UINT32_MAX));
    } else if (arg == "-n" || is("--count")) {
      a.count = static_cast<uint32_t>(number("-n", value("-n"), 1, 16));
    } else if (is("--extend-ms")) {
      a.extend_ms =
          static_cast<uint32_t>(number("--extend-ms", value("--extend-ms"), 1, UINT32_MAX));
    } else if (arg.size() > 1 && arg[0] == '-' && arg != "-") {
      throw Usage{"unknown option '" + arg + "'"};
    } else if (a.command.empty()) {
      a.command = arg;
    } else {
      a.pos.push_back(arg);
    }
  }
  if (a.exec.language == s::Language::UNSET) a.exec.language = s::Language::BASH;
  a.exec.background = a.background;
  return a;
}

// Each command's positional arguments: at least `least`, at most `most`.
struct Shape {
  const char* command;
  size_t least, most;
  const char* usage;
};
constexpr Shape kShapes[] = {
    {"create", 0, 0,
     "[--tier T] [--env K=V]... [--label K=V]... [--from-snapshot NAME] [--mount H:G[:ro|:rw]]..."},
    {"sync", 1, 1, "ID"},
    {"exec", 2, 2, "ID [--lang L] [--context NAME] [--background] CODE|-"},
    {"cp", 2, 2, "LOCAL ID:PATH | ID:PATH LOCAL"},
    {"ls", 2, 2, "ID PATH [-r]"},
    {"get", 1, 1, "ID"},
    {"ls-all", 0, 0, "[--label K=V]... [--all]"},
    {"processes", 1, 1, "ID"},
    {"kill", 2, 3, "ID PID [SIG]"},
    {"fork", 1, 1, "ID [-n N] [--label K=V]..."},
    {"snapshot", 2, 2, "ID NAME"},
    {"snapshots", 0, 0, ""},
    {"snapshot-rm", 1, 1, "NAME"},
    {"pause", 1, 1, "ID"},
    {"resume", 1, 1, "ID"},
    {"keepalive", 1, 1, "ID [--extend-ms N]"},
    {"rm", 1, 1, "ID"},
};

// A known command with the right number of arguments, or Usage.
void check_shape(const Args& a) {
  for (const auto& sh : kShapes) {
    if (a.command != sh.command) continue;
    if (a.pos.size() < sh.least || a.pos.size() > sh.most) {
      throw Usage{"usage: nv sandbox " + a.command + " " + sh.usage};
    }
    return;
  }
  throw Usage{"unknown command '" + a.command + "'"};
}

bool read_all(const std::string& path, std::string* out) {
  if (path == "-") {
    out->assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    return !std::cin.bad();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

// "ID:PATH" → {id, path}; nullopt for a local path.
std::optional<std::pair<std::string, std::string>> remote(const std::string& v) {
  auto colon = v.find(':');
  if (colon == std::string::npos || v.rfind("sbx-", 0) != 0) return std::nullopt;
  auto slash = v.find('/');
  if (slash != std::string::npos && slash < colon) return std::nullopt;
  return std::make_pair(v.substr(0, colon), v.substr(colon + 1));
}

class Command {
 public:
  Command(Args a, Client& client, std::string owner)
      : a_(std::move(a)),
        out_(a_.json),
        sbx_(client, std::move(owner),
             sb::ClientCallOptions{milliseconds(a_.deadline_ms ? a_.deadline_ms : 120000), {}}) {}

  int run() {
    const std::string& c = a_.command;
    if (c == "create") return create();
    if (c == "exec") return exec();
    if (c == "cp") return cp();
    if (c == "ls") return ls();
    if (c == "get") return info_of([&] { return sbx_.get(a_.pos[0]); });
    if (c == "ls-all") return ls_all();
    if (c == "processes") return processes();
    if (c == "kill") return kill();
    if (c == "fork") return fork();
    if (c == "snapshot") return snapshot();
    if (c == "snapshots") return snapshots();
    if (c == "snapshot-rm") return snapshot_rm();
    if (c == "pause") return info_of([&] { return sbx_.pause(a_.pos[0]); });
    if (c == "resume") return info_of([&] { return sbx_.resume(a_.pos[0]); });
    if (c == "keepalive") {
      return info_of([&] { return sbx_.keepalive(a_.pos[0], a_.extend_ms); });
    }
    if (c == "rm") return info_of([&] { return sbx_.destroy(a_.pos[0]); });
    if (c == "sync") return sync();
    throw Usage{"unknown command '" + c + "'"};
  }

 private:
  int failed(Error e) {
    // Calls on a sandbox go to "sandbox.<executor>" of its id; no such service means no live
    // executor made that id (preflight saw the "sandbox" service): an unknown sandbox.
    if (e.code == ErrorCode::UNKNOWN_SERVICE && e.message.find("'sandbox.") != std::string::npos) {
      e = make_error(
          ErrorCode::UNKNOWN_SANDBOX,
          "no such sandbox: no executor that serves its id is running (" + e.message + ")");
    }
    out_.error(e);
    return exit_code_for(e);
  }

  // A command on one sandbox that answers its SandboxInfo.
  template <class F>
  int info_of(F call) {
    auto r = call();
    if (!r) return failed(r.error());
    out_.info(*r, a_.command);
    return 0;
  }

  int sync() {
    auto r = sbx_.sync(a_.pos[0]);
    if (!r) return failed(r.error());
    out_.synced(*r);
    return 0;
  }

  int create() {
    auto r = sbx_.create(a_.spec);
    if (!r) return failed(r.error());
    out_.created(*r);
    return 0;
  }

  int exec() {
    sb::ExecSpec spec = a_.exec;
    if (a_.pos[1] == "-") {
      if (a_.send_stdin) throw Usage{"--stdin and CODE '-' both want stdin; give one"};
      if (!read_all("-", &spec.code)) throw Usage{"cannot read the code from stdin"};
    } else {
      spec.code = a_.pos[1];
    }
    if (a_.send_stdin && !read_all("-", &spec.stdin_data)) throw Usage{"cannot read stdin"};
    uint32_t timeout = spec.timeout_ms ? spec.timeout_ms : 10000;
    sbx_.set_timeout(milliseconds(a_.deadline_ms ? a_.deadline_ms : timeout + 60000ull));
    auto r = sbx_.exec(a_.pos[0], spec, [&](s::Stream stream, std::string_view data) {
      out_.chunk(stream, data, a_.verbose);
    });
    if (!r) return failed(r.error());
    int code = r->exit_code;
    if (a_.background) {
      code = 0;
    } else if (r->timed_out) {
      code = kExitTimeout;
    } else if (r->signal > 0) {
      code = 128 + r->signal;
    } else if (code < 0) {
      code = kExitFailed;
    }
    out_.exec_result(*r, a_.pos[0], code, a_.background, timeout);
    return code;
  }

  // Bytes per request: at most the schema's 32 MiB and the bus frame cap less room for the
  // envelope (a larger frame is refused by the broker: oversizedFrame).
  uint64_t piece() const {
    uint64_t cap = a_.max_frame_bytes > (128u << 10) ? a_.max_frame_bytes - (64u << 10) : 64u << 10;
    return std::min({a_.piece_bytes ? a_.piece_bytes : kMaxPiece, kMaxPiece, cap});
  }

  int cp() {
    auto from = remote(a_.pos[0]), to = remote(a_.pos[1]);
    if (from.has_value() == to.has_value()) {
      throw Usage{
          "cp copies between this host and a sandbox: one side is ID:PATH, the other a "
          "local path"};
    }
    return to ? copy_in(a_.pos[0], to->first, to->second)
              : copy_out(from->first, from->second, a_.pos[1]);
  }

  int copy_in(const std::string& local, const std::string& id, const std::string& path) {
    std::string data;
    if (!read_all(local, &data)) throw Usage{"cannot read " + local + ": " + std::strerror(errno)};
    uint32_t mode = 0;
    struct stat st {};
    if (local != "-" && ::stat(local.c_str(), &st) == 0) mode = st.st_mode & 0777;
    uint64_t n = piece(), done = 0;
    size_t requests = 0;
    do {  // an empty file is one (empty) replacing write
      uint64_t len = std::min<uint64_t>(n, data.size() - done);
      auto r = sbx_.write_file(id, path, std::string_view(data).substr(done, len), mode, done > 0);
      if (!r) return failed(r.error());
      done += len;
      ++requests;
    } while (done < data.size());
    out_.copied(local, id + ":" + path, done, requests);
    return 0;
  }

  int copy_out(const std::string& id, const std::string& path, std::string local) {
    if (local != "-" && fs::is_directory(local)) {
      local = (fs::path(local) / fs::path(path).filename()).string();
    }
    std::ofstream file;
    if (local != "-") {
      file.open(local, std::ios::binary | std::ios::trunc);
      if (!file) throw Usage{"cannot write " + local + ": " + std::strerror(errno)};
    }
    std::ostream& out = local == "-" ? std::cout : file;
    uint64_t offset = 0, n = piece();
    size_t requests = 0;
    while (true) {
      auto r = sbx_.read_file(id, path, offset, n);
      if (!r) {
        if (local != "-") {
          file.close();
          std::error_code ec;
          fs::remove(local, ec);  // no partial copy left behind
        }
        return failed(r.error());
      }
      ++requests;
      out.write(r->data.data(), static_cast<std::streamsize>(r->data.size()));
      offset += r->data.size();
      if (r->eof || r->data.empty() || offset >= r->size) break;
    }
    out.flush();
    if (!out) {
      return failed(
          make_error(ErrorCode::INTERNAL, "writing " + local + ": " + std::strerror(errno)));
    }
    out_.copied(id + ":" + path, local, offset, requests);
    return 0;
  }

  int ls() {
    auto st = sbx_.stat_file(a_.pos[0], a_.pos[1]);
    if (!st) return failed(st.error());
    if (st->type != s::FileType::DIRECTORY) {
      out_.entries({*st});
      return 0;
    }
    auto r = sbx_.list_files(a_.pos[0], a_.pos[1], a_.recursive);
    if (!r) return failed(r.error());
    out_.entries(*r);
    return 0;
  }

  int ls_all() {
    auto r = sbx_.list(a_.labels, a_.all);
    if (!r) return failed(r.error());
    out_.infos(*r);
    return 0;
  }

  int processes() {
    auto r = sbx_.processes(a_.pos[0]);
    if (!r) return failed(r.error());
    out_.processes(*r);
    return 0;
  }

  int kill() {
    auto pid = static_cast<int32_t>(number("PID", a_.pos[1], 1, INT32_MAX));
    int sig = a_.pos.size() > 2 ? parse_signal(a_.pos[2]) : SIGTERM;
    auto r = sbx_.signal(a_.pos[0], pid, sig);
    if (!r) return failed(r.error());
    out_.done("signal " + std::to_string(sig) + " sent to process " + std::to_string(pid));
    return 0;
  }

  int fork() {
    auto r = sbx_.fork(a_.pos[0], a_.count, a_.labels);
    if (!r) return failed(r.error());
    out_.infos(*r, /*ids_only=*/true);
    return 0;
  }

  int snapshot() {
    auto r = sbx_.snapshot(a_.pos[0], a_.pos[1]);
    if (!r) return failed(r.error());
    out_.snapshots({*r}, /*one=*/true);
    return 0;
  }

  int snapshots() {
    auto r = sbx_.snapshots();
    if (!r) return failed(r.error());
    out_.snapshots(*r, false);
    return 0;
  }

  int snapshot_rm() {
    auto r = sbx_.delete_snapshot(a_.pos[0]);
    if (!r) return failed(r.error());
    out_.done("snapshot " + a_.pos[0] + " deleted");
    return 0;
  }

  Args a_;
  Printer out_;
  sb::SandboxClient sbx_;
};

// nv.status: tells "no orchestrator" and "no executor serves sandboxes" apart from a failure.
std::optional<Error> preflight(Client& client, const std::string& endpoint) {
  auto st = client.call("nv.status", nullptr, milliseconds(2000));
  if (interrupt::requested()) return make_error(ErrorCode::CANCELLED, "interrupted");
  if (!st) {
    if (st.error().code == ErrorCode::TIMED_OUT || st.error().code == ErrorCode::BROKER_LOST) {
      Error e = make_error(ErrorCode::BROKER_LOST, "the orchestrator at " + endpoint +
                                                       " is unreachable; start the stack: nv up");
      return e;
    }
    return std::nullopt;  // the call itself will say
  }
  auto body = st->body.root<s::StatusReply>();
  if (!body) return std::nullopt;
  for (auto svc : body->getServices()) {
    if (std::string_view(svc.getService().cStr()) == kSandboxService) return std::nullopt;
  }
  return make_error(ErrorCode::NO_WORKER, "no executor serves sandboxes (service \"sandbox\") at " +
                                              endpoint +
                                              "; start nv-sandbox-executor (nv up) and check "
                                              "`nv status`");
}

}  // namespace

int sandbox_main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const Usage& u) {
    std::cerr << "nv sandbox: " << u.message << "\n(see nv sandbox --help)\n";
    return kExitUsage;
  }
  if (a.help || a.command == "help") {
    std::cout << kSandboxUsage;
    return 0;
  }
  if (a.command.empty()) {
    std::cerr << kSandboxUsage;
    return kExitUsage;
  }
  try {
    check_shape(a);
  } catch (const Usage& u) {
    std::cerr << "nv sandbox: " << u.message << "\n(see nv sandbox --help)\n";
    return kExitUsage;
  }
  ::signal(SIGPIPE, SIG_IGN);
  interrupt::install();
  std::string rt = a.runtime_dir.empty() ? default_runtime_dir() : a.runtime_dir;
  ClientOptions co;
  co.endpoint = a.endpoint.empty() ? bus::ipc_endpoint(rt + "/clients.sock") : a.endpoint;
  co.limits.max_frame_bytes = a.max_frame_bytes + (1u << 20);  // answers carry whole pieces
  Printer early(a.json);
  try {
    if (!a.curve_key.empty()) {
      auto k = curve::load(a.curve_key);
      if (!k) throw Usage{"--curve-key: " + k.error().message};
      co.curve_keys = k.value();
    }
    if (!a.curve_server_key.empty()) {
      auto k = curve::load(a.curve_server_key);
      if (!k) throw Usage{"--curve-server-key: " + k.error().message};
      co.curve_server_key = k->public_key;
    }
    zmq::context_t ctx(1);
    Client client(ctx, co);
    if (auto e = preflight(client, co.endpoint)) {
      early.error(*e);
      return exit_code_for(*e);
    }
    Command cmd(a, client, "uid:" + std::to_string(::getuid()));
    int code = cmd.run();
    if (interrupt::requested()) {
      std::cerr << "nv sandbox " << a.command << ": "
                << interrupt::signal_name(interrupt::requested())
                << ": the request was cancelled upstream\n";
      return interrupt::exit_code();
    }
    return code;
  } catch (const Usage& u) {
    std::cerr << "nv sandbox " << a.command << ": " << u.message << "\n(see nv sandbox --help)\n";
    return kExitUsage;
  }
}

}  // namespace nv::launcher
