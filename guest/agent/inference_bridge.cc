// inference_bridge.cc — see inference_bridge.h.
#include "guest/agent/inference_bridge.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include <nv/schema/guest.capnp.h>

#include "guest/protocol/frame.h"

namespace nv::guest::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kHostSilence = std::chrono::minutes(15);  // no answer frame this long → 504
constexpr auto kWriteLimit = std::chrono::seconds(30);   // host not reading this long → 502
constexpr uint32_t kMaxHostFrame = 2u << 20;             // an answer frame (64 KiB data + room)
constexpr int kMaxConnections = 16;                      // requests served at once

// One request waiting for the host's answer frames.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  bool head = false;  // the first frame arrived: status and content type are set
  int status = 0;
  std::string content_type;
  std::deque<std::string> data;
  bool done = false;    // the last frame arrived
  bool failed = false;  // the host went away before the last frame
};

std::string error_json(const std::string& message) {
  std::string out = "{\"error\":\"";
  for (char c : message) {
    if (c == '"' || c == '\\') out += '\\';
    out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return out + "\"}";
}

// RFC 9112 status line and headers; every answer closes its connection.
std::string head(int status, const std::string& content_type, const std::string& length_header) {
  const char* reason = http_status_str(static_cast<http_status>(status));
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + content_type +
         "\r\n" + length_header + "\r\nConnection: close\r\n\r\n";
}

bool write_conn(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t w = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;  // the client went away (or SO_SNDTIMEO passed)
    data.remove_prefix(static_cast<size_t>(w));
  }
  return true;
}

void write_whole(int fd, int status, const std::string& message) {
  const std::string body = error_json(message);
  (void)write_conn(
      fd,
      head(status, "application/json", "Content-Length: " + std::to_string(body.size())) + body);
}

class Bridge {
 public:
  explicit Bridge(int fd) : fd_(fd) {}

  // Reads answer frames forever and hands each to its request.
  void read_loop() {
    FrameDecoder dec(kMaxHostFrame);
    char buf[64 * 1024];
    while (true) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 1000) < 0 && errno != EINTR) return;
      ssize_t r = ::read(fd_, buf, sizeof buf);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {  // no host connected (virtio_console reads 0): every open request fails
        fail_all();
        dec.reset();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      dec.feed(buf, static_cast<size_t>(r));
      while (true) {
        kj::Array<capnp::word> words;
        auto st = dec.next(words);
        if (st == FrameDecoder::Status::need_more) break;
        if (st != FrameDecoder::Status::frame) {  // a broken stream: drop what was buffered
          fail_all();
          dec.reset();
          break;
        }
        deliver(std::move(words));
      }
    }
  }

  // Forwards one request and writes the host's answer to `conn`: whole (Content-Length) when
  // it came in one frame, else chunked as the frames arrive.
  void serve(int conn, const std::string& method, const std::string& path,
             const std::string& body) {
    const uint32_t id = next_id_.fetch_add(1);
    auto p = std::make_shared<Pending>();
    {
      std::lock_guard lock(mu_);
      pending_[id] = p;
    }
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<schema::GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto r = msg.initInferenceRequest();
    r.setId(id);
    r.setMethod(method);
    r.setPath(path.substr(0, 1024));
    r.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(body.data()), body.size()));
    if (!send(encode_frame(mb))) {
      forget(id);
      return write_whole(conn, 502, "the host end of the inference bridge is not reading");
    }
    std::unique_lock lock(p->mu);
    if (!p->cv.wait_for(lock, kHostSilence, [&] { return p->head || p->failed; }) || !p->head) {
      const bool failed = p->failed;
      lock.unlock();
      forget(id);
      return write_whole(conn, failed ? 502 : 504,
                         failed ? "the host end of the inference bridge went away"
                                : "no answer from the host within 15 min");
    }
    const int status = p->status;
    const std::string ctype = p->content_type;
    if (p->done) {
      std::string whole;
      for (auto& d : p->data) whole += d;
      lock.unlock();
      forget(id);
      (void)write_conn(
          conn, head(status, ctype, "Content-Length: " + std::to_string(whole.size())) + whole);
      return;
    }
    lock.unlock();
    bool ok = write_conn(conn, head(status, ctype, "Transfer-Encoding: chunked"));
    while (ok) {
      lock.lock();
      if (!p->cv.wait_for(lock, kHostSilence,
                          [&] { return !p->data.empty() || p->done || p->failed; })) {
        lock.unlock();
        break;  // the host went silent: end the connection without the last chunk
      }
      std::deque<std::string> pieces;
      pieces.swap(p->data);
      const bool done = p->done, failed = p->failed;
      lock.unlock();
      std::string out;
      for (auto& d : pieces) {
        if (d.empty()) continue;
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", d.size());
        out += size + d + "\r\n";
      }
      if (done) out += "0\r\n\r\n";  // RFC 9112 §7.1: the last chunk
      ok = write_conn(conn, out);
      if (done || failed) break;
    }
    forget(id);
  }

 private:
  void forget(uint32_t id) {
    std::lock_guard lock(mu_);
    pending_.erase(id);
  }

  void fail_all() {
    std::lock_guard lock(mu_);
    for (auto& [id, p] : pending_) {
      std::lock_guard l(p->mu);
      p->failed = true;
      p->cv.notify_all();
    }
  }

  void deliver(kj::Array<capnp::word> words) {
    std::string error;
    auto parsed = ParsedMessage::parse(std::move(words), error);
    if (!parsed) return;
    try {
      auto msg = parsed->root<schema::HostMessage>();
      if (msg.which() != schema::HostMessage::INFERENCE_RESPONSE) return;
      auto r = msg.getInferenceResponse();
      std::shared_ptr<Pending> p;
      {
        std::lock_guard lock(mu_);
        auto it = pending_.find(r.getId());
        if (it == pending_.end()) return;  // the client went away: drop the rest
        p = it->second;
      }
      std::lock_guard l(p->mu);
      if (!p->head) {
        p->head = true;
        p->status = r.getStatus() >= 100 && r.getStatus() <= 599 ? r.getStatus() : 502;
        p->content_type = r.getContentType().cStr();
        if (p->content_type.empty()) p->content_type = "application/json";
      }
      auto d = r.getData();
      if (d.size() > 0) p->data.emplace_back(reinterpret_cast<const char*>(d.begin()), d.size());
      if (r.getLast()) p->done = true;
      p->cv.notify_all();
    } catch (...) {
      // A malformed frame from the host: ignored (the request times out).
    }
  }

  bool send(const std::string& frame) {
    std::lock_guard lock(write_mu_);
    std::string_view data = frame;
    const auto deadline = Clock::now() + kWriteLimit;
    while (!data.empty()) {
      ssize_t w = ::write(fd_, data.data(), data.size());
      if (w > 0) {
        data.remove_prefix(static_cast<size_t>(w));
        continue;
      }
      if (w < 0 && errno != EAGAIN && errno != EINTR) return false;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLOUT, 0};
      (void)::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
    }
    return true;
  }

  int fd_;
  std::atomic<uint32_t> next_id_{1};
  std::mutex mu_;
  std::map<uint32_t, std::shared_ptr<Pending>> pending_;
  std::mutex write_mu_;
};

// One request per connection, parsed by http-parser (Debian libhttp-parser-dev, static).
struct Incoming {
  std::string url, body;
  bool complete = false;
  bool too_big = false;
};

int on_url(http_parser* p, const char* at, size_t n) {
  auto* in = static_cast<Incoming*>(p->data);
  if (in->url.size() + n > 8192) return 1;
  in->url.append(at, n);
  return 0;
}
int on_headers_complete(http_parser* p) {
  auto* in = static_cast<Incoming*>(p->data);
  if (p->content_length != ULLONG_MAX && p->content_length > kInferenceMaxBodyBytes) {
    in->too_big = true;
    return 1;
  }
  return 0;
}
int on_body(http_parser* p, const char* at, size_t n) {
  auto* in = static_cast<Incoming*>(p->data);
  if (in->body.size() + n > kInferenceMaxBodyBytes) {
    in->too_big = true;
    return 1;
  }
  in->body.append(at, n);
  return 0;
}
int on_message_complete(http_parser* p) {
  static_cast<Incoming*>(p->data)->complete = true;
  return 0;
}

// Reads (and drops) what the client still sends, so it gets to read the answer.
void drain(int fd) {
  char buf[64 * 1024];
  size_t total = 0;
  while (total < (64u << 20)) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return;
    total += static_cast<size_t>(r);
  }
}

void serve_connection(Bridge& bridge, int fd) {
  timeval tv{60, 0};  // a client silent this long while sending its request is dropped
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  Incoming in;
  parser.data = &in;
  char buf[64 * 1024];
  while (!in.complete) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;  // closed or silent before a whole request
    size_t used = http_parser_execute(&parser, &settings, buf, static_cast<size_t>(r));
    if (in.too_big) {
      write_whole(fd, 413,
                  "request body above " + std::to_string(kInferenceMaxBodyBytes) + " bytes");
      ::shutdown(fd, SHUT_WR);
      return drain(fd);
    }
    if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || (used != static_cast<size_t>(r) && !in.complete)) {
      return write_whole(fd, 400,
                         std::string("malformed HTTP request: ") +
                             http_errno_description(HTTP_PARSER_ERRNO(&parser)));
    }
  }
  http_parser_url u;
  http_parser_url_init(&u);
  std::string path = "/";
  if (http_parser_parse_url(in.url.data(), in.url.size(), 0, &u) == 0 &&
      (u.field_set & (1 << UF_PATH))) {
    path = in.url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  }
  bridge.serve(fd, http_method_str(static_cast<http_method>(parser.method)), path, in.body);
}

}  // namespace

int run_inference_bridge(const std::string& port_device, int ready_fd) {
  auto say = [ready_fd](const std::string& what) {
    if (ready_fd >= 0) {
      (void)!::write(ready_fd, what.data(), what.size());
      ::close(ready_fd);
    }
  };
  int fd = ::open(port_device.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    say("open(" + port_device + ") failed: " + std::strerror(errno));
    return 1;
  }
  Bridge bridge(fd);
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(kInferencePort);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, 64) != 0) {
    say("listen(127.0.0.1:" + std::to_string(kInferencePort) + ") failed: " + std::strerror(errno));
    return 1;
  }
  std::thread reader([&bridge] { bridge.read_loop(); });
  reader.detach();
  say("ok");
  std::atomic<int> active{0};
  while (true) {
    int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno != EINTR && errno != ECONNABORTED) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // EMFILE and the like
      }
      continue;
    }
    if (active.load() >= kMaxConnections) {
      write_whole(c, 503, "more than " + std::to_string(kMaxConnections) + " requests at once");
      ::close(c);
      continue;
    }
    ++active;
    std::thread([&bridge, &active, c] {
      serve_connection(bridge, c);
      ::close(c);
      --active;
    }).detach();
  }
}

namespace {
pid_t running = -1;  // the bridge child started by this agent
}  // namespace

void stop_inference_bridge() {
  if (running > 0) ::kill(running, SIGKILL);  // the agent reaps it with its other orphans
  running = -1;
}

std::string start_inference_bridge(const std::string& agent_binary, const std::string& device) {
  if (running > 0 && ::kill(running, 0) == 0) return "";
  if (device.empty()) return "no virtio-serial port nv.inference (the VMM has none)";
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) < 0) return std::string("pipe2: ") + std::strerror(errno);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return std::string("fork: ") + std::strerror(errno);
  }
  if (pid == 0) {
    // The agent blocks SIGCHLD etc. into a signalfd; the mask survives exec.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setsid();
    ::fcntl(pipefd[1], F_SETFD, 0);
    const std::string fd = std::to_string(pipefd[1]);
    const char* argv[] = {agent_binary.c_str(), "--inference-bridge", device.c_str(), fd.c_str(),
                          nullptr};
    ::execv(agent_binary.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string said;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    pollfd p{pipefd[0], POLLIN, 0};
    int r = ::poll(&p, 1, 200);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char buf[256];
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    said.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  if (said == "ok") {
    running = pid;
    return "";
  }
  ::kill(pid, SIGKILL);
  return said.empty() ? "the inference bridge did not start" : said;
}

}  // namespace nv::guest::agent
