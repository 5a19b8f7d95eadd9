#include "qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace nv::vm {
namespace {

constexpr size_t kMaxLine = 4 << 20;  // QMP replies we use are small; refuse runaway input

int ms_left(Deadline d) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return sb.GetString();
}

std::string quote(std::string_view s) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return sb.GetString();
}

}  // namespace

Result<QmpClient> QmpClient::connect(const std::string& path, Deadline deadline, int exit_fd) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::INTERNAL, "QMP socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  QmpClient c;
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return sys_error("socket(AF_UNIX)", errno);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      c.fd_ = std::move(fd);
      break;
    }
    int err = errno;
    if (err != ENOENT && err != ECONNREFUSED) return sys_error("connect(" + path + ")", err);
    if (exit_fd >= 0 && wait_readable(exit_fd, Clock::now())) {
      return make_error(ErrorCode::VM_FAILED, "VMM exited before its QMP socket answered");
    }
    if (Clock::now() >= deadline) {
      return make_error(ErrorCode::TIMED_OUT,
                        "QMP socket " + path + " not up before deadline: " + errno_text(err));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto greeting = c.read_line(deadline);
  if (!greeting.ok()) return greeting.error();
  rapidjson::Document g;
  g.Parse(greeting.value().c_str());
  if (g.HasParseError() || !g.IsObject() || !g.HasMember("QMP")) {
    return make_error(ErrorCode::VM_FAILED, "not a QMP greeting: " + greeting.value());
  }
  auto caps = c.execute("qmp_capabilities", "", deadline);
  if (!caps.ok()) return caps.error();
  return c;
}

Result<std::string> QmpClient::read_line(Deadline deadline) {
  for (;;) {
    auto nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      return line;
    }
    if (buf_.size() > kMaxLine) return make_error(ErrorCode::VM_FAILED, "QMP line too long");
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      return sys_error("poll(QMP)", errno);
    }
    if (r == 0) return make_error(ErrorCode::TIMED_OUT, "QMP: no answer before deadline");
    char tmp[16384];
    ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return sys_error("read(QMP)", errno);
    }
    if (n == 0) return make_error(ErrorCode::VM_FAILED, "QMP: QEMU closed the connection");
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

Status QmpClient::send_raw(const std::string& text, int fd_to_pass, Deadline deadline) {
  if (!fd_.valid()) return make_error(ErrorCode::VM_FAILED, "QMP not connected");
  size_t off = 0;
  bool fd_sent = fd_to_pass < 0;
  while (off < text.size()) {
    pollfd p{fd_.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r == 0) return make_error(ErrorCode::TIMED_OUT, "QMP: send blocked past deadline");
    if (r < 0) {
      if (errno == EINTR) continue;
      return sys_error("poll(QMP)", errno);
    }
    iovec iov{const_cast<char*>(text.data() + off), text.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
    if (!fd_sent) {
      msg.msg_control = ctrl;
      msg.msg_controllen = sizeof ctrl;
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &fd_to_pass, sizeof(int));
    }
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return sys_error("sendmsg(QMP)", errno);
    }
    fd_sent = true;
    off += static_cast<size_t>(n);
  }
  return {};
}

Result<std::string> QmpClient::command(const std::string& body, std::string_view cmd,
                                       int fd_to_pass, Deadline deadline) {
  uint64_t id = next_id_++;
  // body is `"execute": "...", "arguments": {...}` without braces.
  std::string text = "{" + body + ", \"id\": " + std::to_string(id) + "}\n";
  if (Status s = send_raw(text, fd_to_pass, deadline); !s.ok()) return s.error();
  for (;;) {
    auto line = read_line(deadline);
    if (!line.ok()) return line.error();
    rapidjson::Document d;
    d.Parse(line.value().c_str());
    if (d.HasParseError() || !d.IsObject()) {
      return make_error(ErrorCode::VM_FAILED, "QMP: malformed line: " + line.value());
    }
    if (d.HasMember("event")) {
      events_.push_back(line.value());
      if (events_.size() > 256) events_.pop_front();
      continue;
    }
    if (!d.HasMember("id") || !d["id"].IsUint64() || d["id"].GetUint64() != id) continue;
    if (d.HasMember("error")) {
      const auto& e = d["error"];
      std::string cls = e.HasMember("class") && e["class"].IsString() ? e["class"].GetString() : "";
      std::string desc = e.HasMember("desc") && e["desc"].IsString() ? e["desc"].GetString() : "";
      return make_error(ErrorCode::VM_FAILED,
                        "QMP " + std::string(cmd) + " failed: " + cls + ": " + desc);
    }
    if (d.HasMember("return")) return to_json(d["return"]);
    return make_error(ErrorCode::VM_FAILED, "QMP: reply without return: " + line.value());
  }
}

Result<std::string> QmpClient::execute(std::string_view cmd, std::string_view args_json,
                                       Deadline deadline) {
  std::string body = "\"execute\": " + quote(cmd);
  if (!args_json.empty()) body += ", \"arguments\": " + std::string(args_json);
  return command(body, cmd, -1, deadline);
}

Status QmpClient::send_fd(std::string_view name, int fd, Deadline deadline) {
  std::string body = "\"execute\": \"getfd\", \"arguments\": {\"fdname\": " + quote(name) + "}";
  auto r = command(body, "getfd", fd, deadline);
  if (!r.ok()) return r.error();
  return {};
}

Result<int64_t> QmpClient::add_fd(int fd, Deadline deadline) {
  auto r = command("\"execute\": \"add-fd\"", "add-fd", fd, deadline);
  if (!r.ok()) return r.error();
  rapidjson::Document d;
  d.Parse(r.value().c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("fdset-id") || !d["fdset-id"].IsInt64()) {
    return make_error(ErrorCode::VM_FAILED, "QMP add-fd: no fdset-id in " + r.value());
  }
  return d["fdset-id"].GetInt64();
}

Result<std::string> QmpClient::wait_event(std::string_view name, Deadline deadline) {
  for (;;) {
    for (auto it = events_.begin(); it != events_.end(); ++it) {
      rapidjson::Document d;
      d.Parse(it->c_str());
      if (!d.HasParseError() && d.IsObject() && d.HasMember("event") && d["event"].IsString() &&
          name == d["event"].GetString()) {
        std::string out = *it;
        events_.erase(it);
        return out;
      }
    }
    auto line = read_line(deadline);
    if (!line.ok()) return line.error();
    events_.push_back(line.value());
  }
}

Result<std::string> QmpClient::run_state(Deadline deadline) {
  auto r = execute("query-status", "", deadline);
  if (!r.ok()) return r.error();
  rapidjson::Document d;
  d.Parse(r.value().c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("status") || !d["status"].IsString()) {
    return make_error(ErrorCode::VM_FAILED, "query-status: unexpected reply " + r.value());
  }
  return std::string(d["status"].GetString());
}

Status QmpClient::wait_migration(Deadline deadline) {
  for (;;) {
    auto r = execute("query-migrate", "", deadline);
    if (!r.ok()) return r.error();
    rapidjson::Document d;
    d.Parse(r.value().c_str());
    std::string status =
        (!d.HasParseError() && d.IsObject() && d.HasMember("status") && d["status"].IsString())
            ? d["status"].GetString()
            : "";
    if (status == "completed") return {};
    if (status == "failed" || status == "cancelled") {
      std::string why = d.HasMember("error-desc") && d["error-desc"].IsString()
                            ? d["error-desc"].GetString()
                            : "";
      return make_error(ErrorCode::VM_FAILED, "migration " + status + ": " + why);
    }
    if (Clock::now() >= deadline) {
      return make_error(ErrorCode::TIMED_OUT, "migration still '" + status + "' at deadline");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace nv::vm
