// nv-audit: prints the NeuroVisor event stream as JSON lines on stdout, one event per line,
// flushed as it arrives — suitable for shipping audit logs (`nv-audit --follow >> audit.jsonl`).
//
//   nv-audit                          events arriving within --wait-ms (1000), then exit
//   nv-audit --follow                 until SIGINT/SIGTERM
//   nv-audit --since-start --follow   everything the orchestrator kept since it started, then live
//   nv-audit --topic vm. --topic security.alert     (or --topic vm.,security.alert)
//
// With --since-start the subscription is opened first (and given --settle-ms to reach the
// orchestrator), then the history ("nv.events") fetched and printed in order, then live events;
// a live event already printed from the history (same id) is skipped, so nothing is shown twice
// and nothing published in between is lost.
//
// Exit codes: 0 done (also when stdout's reader goes away), 1 unexpected failure, 2 bad usage,
// 3 orchestrator unreachable.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/client.h"
#include "common/config.h"
#include "common/events.h"
#include "common/interrupt.h"
#include "common/service.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

std::atomic<bool> g_stop{false};

// Config keeps one value per option; --topic may be repeated, so every occurrence is merged into
// one comma-separated "--topic=a,b" before parsing.
std::vector<std::string> merge_repeated_topics(int argc, char** argv) {
  std::vector<std::string> args{argv[0]};
  std::string topics;
  bool any = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (; i < argc; ++i) args.emplace_back(argv[i]);
      break;
    }
    std::string value;
    if (a == "--topic" && i + 1 < argc) {
      value = argv[++i];
    } else if (a.rfind("--topic=", 0) == 0) {
      value = a.substr(8);
    } else {
      args.push_back(a);
      continue;
    }
    topics += (any ? "," : "") + value;
    any = true;
  }
  if (any) args.push_back("--topic=" + topics);
  return args;
}

std::atomic<int> g_signal{0};  // the signal that stopped it, for the exit status

void signal_thread(sigset_t set) {
  while (!g_stop.load()) {
    timespec ts{0, 200 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) {
      g_signal = sig;
      g_stop = true;
    }
  }
}

bool wanted(const std::string& topic, const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (topic.rfind(p, 0) == 0) return true;
  }
  return false;
}

// Writes one line and flushes. False when stdout is gone (e.g. `nv-audit | head -1` finished).
bool print_line(const std::string& json) {
  if (std::fwrite(json.data(), 1, json.size(), stdout) != json.size()) return false;
  if (std::fputc('\n', stdout) == EOF) return false;
  return std::fflush(stdout) == 0;
}

void add_options(nv::Config& c) {
  c.add_string("topic", "",
               "only events whose topic starts with this; repeat the flag or "
               "separate with commas (\"\" = all)");
  c.add_bool("follow", false, "keep printing until SIGINT/SIGTERM");
  c.add_int("wait-ms", 1000, "without --follow: how long to print arriving events, then exit");
  c.add_bool("since-start", false,
             "first print the events the orchestrator kept since it "
             "started, then live ones");
  c.add_bool("json", true, "print one JSON object per line (the only format)");
  c.add_int("connect-timeout-ms", 2000, "how long to wait for the orchestrator to answer");
  c.add_int("settle-ms", 100,
            "with --since-start: time given to the subscription to reach the "
            "orchestrator before the history is taken");
}

std::string unreachable_message(const std::string& endpoint, const std::string& detail) {
  return "nv-audit: the orchestrator is unreachable at " + endpoint + " (" + detail +
         "). Is the stack up? run `./nv up`\n";
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by a thread (sigtimedwait), so block them before any thread exists.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  nv::Config config("nv-audit",
                    "prints the NeuroVisor event stream, one JSON object per line on stdout\n"
                    "exit codes: 0 ok, 2 bad usage, 3 orchestrator unreachable");
  nv::add_bus_options(config);
  add_options(config);
  auto args = merge_repeated_topics(argc, argv);
  std::vector<const char*> cargs;
  for (const auto& a : args) cargs.push_back(a.c_str());
  if (auto st = config.parse(static_cast<int>(cargs.size()), cargs.data()); !st) {
    std::cerr << "nv-audit: " << st.error().message << "\n";
    return kExitUsage;
  }
  if (config.help_requested()) {
    std::cout << config.help();
    return kExitOk;
  }
  std::string usage;
  if (!config.positional().empty()) {
    usage += "unexpected argument '" + config.positional()[0] + "'; ";
  }
  if (!config.boolean("json")) usage += "JSON is the only output format; ";
  if (config.integer("wait-ms") < 0) usage += "--wait-ms must not be negative; ";
  if (config.integer("connect-timeout-ms") < 1) usage += "--connect-timeout-ms must be positive; ";
  if (config.integer("settle-ms") < 0) usage += "--settle-ms must not be negative; ";
  std::optional<nv::curve::KeyPair> keys;
  std::string server_key;
  if (!config.str("curve-key").empty()) {
    auto k = nv::curve::load(config.str("curve-key"));
    if (k)
      keys = k.value();
    else
      usage += k.error().message + "; ";
  }
  if (!config.str("curve-server-key").empty()) {
    auto k = nv::curve::load(config.str("curve-server-key"));
    if (k)
      server_key = k->public_key;
    else
      usage += k.error().message + "; ";
  }
  if (!usage.empty()) {
    usage.resize(usage.size() - 2);
    std::cerr << "nv-audit: " << usage << " (see --help)\n";
    return kExitUsage;
  }

  std::string rt =
      config.str("runtime-dir").empty() ? nv::default_runtime_dir() : config.str("runtime-dir");
  nv::Endpoints ep = nv::endpoints_from(config, rt);
  auto topics = nv::split_commas(config.str("topic"));
  bool follow = config.boolean("follow");
  auto wait = std::chrono::milliseconds(config.integer("wait-ms"));
  auto connect_timeout = std::chrono::milliseconds(config.integer("connect-timeout-ms"));

  // An ipc:// endpoint whose socket file is missing means no orchestrator: say so at once.
  for (const auto& endpoint : {ep.clients, ep.events_out}) {
    auto path = nv::bus::ipc_path(endpoint);
    struct stat st {};
    if (!path.empty() && ::stat(path.c_str(), &st) != 0) {
      std::cerr << unreachable_message(endpoint, "no socket file");
      return kExitUnreachable;
    }
  }

  std::thread sig(signal_thread, set);
  int rc = kExitOk;
  {
    zmq::context_t ctx(1);
    nv::bus::Limits limits;
    limits.max_frame_bytes = static_cast<size_t>(config.integer("max-frame-bytes"));
    // 1. Subscribe first: live events queue from here on while the history is fetched.
    nv::EventSubscriber sub(ctx, ep.events_out, topics, keys, server_key);
    nv::ClientOptions copts{ep.clients, keys, server_key, limits};
    nv::Client client(ctx, copts);

    // A SUB socket's subscription reaches the orchestrator's XPUB asynchronously, and nothing
    // tells us when; an event published between the history snapshot and that moment would be
    // in neither. On one host the connection takes well under a millisecond: give it a margin
    // (more with --since-start across hosts via --settle-ms) before taking the snapshot.
    if (config.boolean("since-start")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(config.integer("settle-ms")));
    }

    // 2. The orchestrator must answer: the history with --since-start, else nv.status.
    capnp::MallocMessageBuilder mb;
    std::string service = config.boolean("since-start") ? "nv.events" : "nv.status";
    if (service == "nv.events") {
      auto req = nv::bus::init_body<nv::schema::HistoryRequest>(mb);
      if (topics.size() == 1) req.setTopicPrefix(topics[0]);  // else filtered here
    } else {
      nv::bus::init_body<nv::schema::StatusRequest>(mb);
    }
    // Client::call waits deadline + 1 s; the deadline is what the broker itself allows.
    auto deadline =
        std::max(connect_timeout - std::chrono::milliseconds(1000), std::chrono::milliseconds(500));
    auto reply = client.call(service, &mb, deadline);
    std::unordered_set<std::string> printed;
    if (!reply) {
      if (reply.error().code == nv::ErrorCode::TIMED_OUT) {
        std::cerr << unreachable_message(
            ep.clients, "no answer within " + std::to_string(connect_timeout.count()) + " ms");
        rc = kExitUnreachable;
      } else {
        std::cerr << "nv-audit: " << service << " failed: " << reply.error().to_string() << "\n";
        rc = kExitFailure;
      }
    } else if (service == "nv.events") {
      auto history = reply->body.root<nv::schema::HistoryReply>();
      if (!history) {
        std::cerr << "nv-audit: unusable history: " << history.error().to_string() << "\n";
        rc = kExitFailure;
      } else {
        if (history->getDropped() > 0) {
          std::cerr << "nv-audit: note: the orchestrator's history ring dropped "
                    << history->getDropped() << " older events\n";
        }
        for (auto ev : history->getEvents()) {
          if (!wanted(ev.getTopic().cStr(), topics)) continue;
          printed.insert(ev.getId());
          if (!print_line(nv::event_to_json(ev))) {
            g_stop = true;
            break;
          }
        }
      }
    }

    // 3. Live events, until a signal (--follow) or --wait-ms.
    auto end = std::chrono::steady_clock::now() + wait;
    // Live copies of history events arrive within moments; after that the ids are let go.
    auto forget_printed = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (rc == kExitOk && !g_stop.load()) {
      if (!printed.empty() && std::chrono::steady_clock::now() >= forget_printed) printed.clear();
      auto step = std::chrono::milliseconds(200);
      if (!follow) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        step = std::min(step, left);
      }
      auto in = sub.receive(step);
      if (!in) continue;
      if (!printed.empty()) {
        auto it = printed.find(in->event.getId().cStr());
        if (it != printed.end()) {
          printed.erase(it);  // each id arrives live at most once
          continue;
        }
      }
      if (!print_line(nv::event_to_json(in->event))) break;
    }
    if (sub.malformed() > 0) {
      std::cerr << "nv-audit: skipped " << sub.malformed() << " malformed events\n";
    }
  }
  g_stop = true;
  sig.join();
  if (int sig_no = g_signal.load(); sig_no != 0 && rc == kExitOk) {
    // Like every client: one line, and 128 + the signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
    // Nothing upstream to cancel: the subscription closes with the socket.
    std::cerr << "nv-audit: " << nv::interrupt::signal_name(sig_no)
              << ": stopped reading the event stream\n";
    return 128 + sig_no;
  }
  return rc;
}
