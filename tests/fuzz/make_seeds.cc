// make_seeds.cc — writes the binary seed corpus of the bus and guest fuzz targets.
//
// The seeds are real messages, made by the real encoders: nv::bus::encode_header/encode_body
// (what every service sends), the guest agent's Session (Hello, pong, errors, file answers) and
// encode_frame with the messages GuestChannel and the agent build. Run from the main build:
//   build/tests/nv-fuzz-seeds tests/fuzz/corpus
// and commit what changed (the text corpora of the JSON/text targets are written by hand).
#include <nv/schema/exec.capnp.h>
#include <nv/schema/guest.capnp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/frames.h"
#include "guest/agent/session.h"
#include "guest/protocol/frame.h"
#include "tests/fuzz/fake_system_ops.h"

namespace {

namespace fs = std::filesystem;
namespace s = nv::schema;
using nv::bus::Header;
using nv::bus::Kind;

fs::path g_out;

void write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_out / target);
  std::ofstream(g_out / target / name, std::ios::binary) << bytes;
}

std::string str(const zmq::message_t& m) { return std::string(m.data<char>(), m.size()); }

// bus_frames input: flags byte, then each frame as a 2-byte little-endian length + bytes.
std::string bus_input(bool routed, bool parse_body, const std::vector<std::string>& frames) {
  std::string out(1, static_cast<char>((routed ? 1 : 0) | (parse_body ? 2 : 0)));
  for (const auto& f : frames) {
    out.push_back(static_cast<char>(f.size() & 0xff));
    out.push_back(static_cast<char>(f.size() >> 8));
    out += f;
  }
  return out;
}

void bus_seeds() {
  Header h;
  h.kind = Kind::REQUEST;
  h.service = "exec";
  h.request_id = 7;
  h.trace_id = "0193b3c4-5e6f-7abc-8def-0123456789ab";
  h.deadline_ms = 30000;
  capnp::MallocMessageBuilder mb;
  auto req = nv::bus::init_body<s::ExecRequest>(mb);
  req.setTraceId(h.trace_id);
  req.setLanguage(s::Language::PYTHON);
  req.setCode("print(sum(range(10)))");
  req.setTimeoutMs(10000);
  auto env = req.initEnv(1);
  env[0].setName("LANG");
  env[0].setValue("C.UTF-8");
  req.initGetFiles(1).set(0, "/tmp/out.txt");
  const std::string body = str(nv::bus::encode_body(mb));
  const std::string header = str(nv::bus::encode_header(h));
  // A client's request as the broker's ROUTER sees it, and as the worker's DEALER sees it.
  write("bus_frames", "request_routed", bus_input(true, true, {"client-1", "", header, body}));
  write("bus_frames", "request_dealer", bus_input(false, true, {"", header, body}));
  write("bus_frames", "request_forwarded",
        bus_input(true, false, {"worker-1", "client-1", "", header, body}));
  // A worker's ready and heartbeat (header only).
  Header ready;
  ready.kind = Kind::READY;
  ready.service = "exec";
  ready.capacity = 4;
  ready.pid = 4242;
  ready.instance = "host/exec/4242";
  write("bus_frames", "ready", bus_input(true, true, {"worker-1", "", str(encode_header(ready))}));
  Header hb = ready;
  hb.kind = Kind::HEARTBEAT;
  write("bus_frames", "heartbeat", bus_input(false, true, {"", str(encode_header(hb))}));
  // A typed error reply.
  Header eh;
  eh.kind = Kind::ERROR;
  eh.service = "exec";
  eh.request_id = 7;
  auto err = nv::make_error(nv::ErrorCode::TIMED_OUT, "no worker answered in 5000 ms", true);
  write("bus_frames", "error_reply",
        bus_input(false, true, {"", str(encode_header(eh)), str(nv::bus::encode_error(err))}));
}

// ---- guest protocol -----------------------------------------------------------------------

std::string host_frame(const std::function<void(s::HostMessage::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<s::HostMessage>();
  m.setVersion(s::SCHEMA_VERSION);
  fill(m);
  return nv::guest::encode_frame(mb);
}

std::string guest_frame(const std::function<void(s::GuestMessage::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<s::GuestMessage>();
  m.setVersion(s::SCHEMA_VERSION);
  fill(m);
  return nv::guest::encode_frame(mb);
}

void guest_seeds() {
  const std::string greeting = host_frame([](auto m) { m.setPing(0); });
  const std::string exec = host_frame([](auto m) {
    auto x = m.initExec();
    x.setId(1);
    x.setLanguage(s::Language::PYTHON);
    x.setCode("import sys\nprint('hi')\nprint('err', file=sys.stderr)\n");
    x.setStdin(kj::StringPtr("input\n").asBytes());
    auto env = x.initEnv(1);
    env[0].setName("NV_X");
    env[0].setValue("1");
    x.setTimeoutMs(5000);
    x.setOutputCapBytes(1u << 20);
    x.setTraceId("0193b3c4-5e6f-7abc-8def-0123456789ab");
    x.setCwd("/tmp");
  });
  const std::string put = host_frame([](auto m) {
    auto p = m.initPutFile();
    p.setPath("/tmp/in/data.txt");
    p.setData(kj::StringPtr("1,2,3\n").asBytes());
    p.setMode(0644);
  });
  const std::string get = host_frame([](auto m) { m.setGetFile("/tmp/out.txt"); });
  const std::string ping = host_frame([](auto m) { m.setPing(17); });
  const std::string reseed = host_frame([](auto m) {
    auto r = m.initReseed();
    std::string entropy(32, '\x5a');
    r.setEntropy(kj::StringPtr(entropy.c_str()).asBytes());
    r.setVmId("vm-small-0001");
    r.setUnixTimeNs(1764460800000000000);
  });
  const std::string shutdown = host_frame([](auto m) { m.setShutdown(); });
  // Sandbox operations (agent 0.2): a two-chunk write, a range read, every file op, processes,
  // signal, a context cell and its reset.
  auto write_chunk = [](bool first, bool last) {
    return host_frame([&](auto m) {
      auto w = m.initWriteChunk();
      w.setPath("/home/agent/a/b.bin");
      w.setData(kj::StringPtr(first ? "\x00\x01\x02" : "\xff\xfe").asBytes());
      w.setFirst(first);
      w.setLast(last);
    });
  };
  const std::string read_range = host_frame([](auto m) {
    auto r = m.initReadRange();
    r.setPath("/home/agent/a/b.bin");
    r.setOffset(1);
    r.setLength(3);
  });
  std::string file_ops;
  for (auto kind :
       {s::FileOpKind::STAT, s::FileOpKind::LIST, s::FileOpKind::MKDIR, s::FileOpKind::REMOVE}) {
    file_ops += host_frame([&](auto m) {
      auto op = m.initFileOp();
      op.setKind(kind);
      op.setPath("/home/agent/a");
      op.setRecursive(true);
    });
  }
  const std::string procs =
      host_frame([](auto m) { m.setListProcesses(); }) + host_frame([](auto m) {
        auto sg = m.initSignal();
        sg.setPid(42);
        sg.setSignal(15);
      });
  const std::string context = host_frame([](auto m) {
                                auto x = m.initExec();
                                x.setId(2);
                                x.setLanguage(s::Language::PYTHON);
                                x.setCode("x = 1");
                                x.setContext("nb");
                                x.setKeepBackground(true);
                              }) +
                              host_frame([](auto m) {
                                auto r = m.initResetContext();
                                r.setContext("nb");
                                r.setLanguage(s::Language::PYTHON);
                              });
  write("guest_agent", "greeting", greeting);
  write("guest_agent", "exec", greeting + exec);
  write("guest_agent", "files", greeting + put + get);
  write("guest_agent", "reseed_ping", greeting + reseed + ping);
  write("guest_agent", "shutdown", greeting + shutdown);
  write("guest_agent", "sandbox_files",
        greeting + write_chunk(true, false) + write_chunk(false, true) + read_range + file_ops);
  write("guest_agent", "sandbox_processes", greeting + procs + context);

  // The agent's own answers: Hello and the greeting's pong, as a real Session writes them.
  nv::guest::agent::AgentConfig config;
  nv::fuzz::FakeSystemOps ops;
  std::string hello;
  nv::guest::agent::Session session(config, ops, [&](std::string_view b) {
    hello.append(b);
    return true;
  });
  session.on_connect();
  (void)session.on_bytes(greeting.data(), greeting.size());
  auto chunk = [](s::Stream st, const char* text) {
    return guest_frame([&](auto m) {
      auto c = m.initChunk();
      c.setExecId(1);
      c.setStream(st);
      c.setData(kj::StringPtr(text).asBytes());
    });
  };
  const std::string result = guest_frame([](auto m) {
    auto r = m.initResult();
    r.setExecId(1);
    r.setExitCode(0);
    r.setDurationMs(41.5);
    r.setStdoutBytes(3);
    r.setStderrBytes(4);
  });
  const std::string file = guest_frame([](auto m) {
    auto f = m.initFileData();
    f.setPath("/tmp/out.txt");
    f.setData(kj::StringPtr("42\n").asBytes());
    f.setFound(true);
  });
  const std::string pong = guest_frame([](auto m) { m.setPong(1); });
  const std::string error = guest_frame([](auto m) {
    auto e = m.initError();
    e.setCode(s::Error::Code::BAD_REQUEST);
    e.setMessage("path '/etc/shadow' refused");
    e.setService("nv-guest-agent");
  });
  // guest_channel runs exec, get_file, ping after the greeting, in that order.
  write("guest_channel", "hello", hello);
  write("guest_channel", "exec_file_ping",
        hello + chunk(s::Stream::STDOUT, "hi\n") + chunk(s::Stream::STDERR, "err\n") + result +
            file + pong);
  write("guest_channel", "exec_error", hello + chunk(s::Stream::STDOUT, "partial") + error);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: nv-fuzz-seeds CORPUS_DIR (tests/fuzz/corpus)\n");
    return 2;
  }
  g_out = argv[1];
  bus_seeds();
  guest_seeds();
  return 0;
}
