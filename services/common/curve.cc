#include "curve.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "log.h"
#include "roles.h"

namespace nv::curve {

Result<KeyPair> generate() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return make_error(ErrorCode::INTERNAL, std::string("zmq_curve_keypair failed: ") +
                                               zmq_strerror(zmq_errno()) +
                                               " (is libzmq built with CURVE?)");
  }
  return KeyPair{pub, sec};
}

namespace {
Status write_file(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return make_error(ErrorCode::BAD_REQUEST, "open(" + path + ") failed: " + std::strerror(errno));
  }
  ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return make_error(ErrorCode::INTERNAL, "write(" + path + ") was short");
  }
  return {};
}
}  // namespace

Status write_files(const std::string& dir, const std::string& name, const KeyPair& keys) {
  if (auto st =
          write_file(dir + "/" + name + ".key",
                     "public=" + keys.public_key + "\nsecret=" + keys.secret_key + "\n", 0600);
      !st) {
    return st;
  }
  return write_file(dir + "/" + name + ".pub", "public=" + keys.public_key + "\n", 0644);
}

Result<KeyPair> load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::BAD_REQUEST, "cannot read key file " + path);
  KeyPair k;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("public=", 0) == 0) k.public_key = line.substr(7);
    if (line.rfind("secret=", 0) == 0) k.secret_key = line.substr(7);
  }
  if (k.public_key.size() != 40 || (!k.secret_key.empty() && k.secret_key.size() != 40)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "key file " + path + " must hold public=<40 Z85 chars> (and secret=)");
  }
  return k;
}

Result<std::set<std::string>> load_allow_list(const std::string& path) {
  std::set<std::string> keys;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return make_error(ErrorCode::BAD_REQUEST, "allow-list " + path + ": " + std::strerror(errno));
  }
  std::vector<std::string> files;
  if (S_ISDIR(st.st_mode)) {
    DIR* d = ::opendir(path.c_str());
    if (!d) return make_error(ErrorCode::BAD_REQUEST, "opendir(" + path + ") failed");
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 4 && n.substr(n.size() - 4) == ".pub") files.push_back(path + "/" + n);
    }
    ::closedir(d);
  } else {
    files.push_back(path);
  }
  for (const auto& f : files) {
    auto k = load(f);
    if (!k) return k.error();
    keys.insert(k->public_key);
  }
  return keys;
}

void make_server(zmq::socket_t& socket, const KeyPair& keys) {
  socket.set(zmq::sockopt::zap_domain, "nv");
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

void make_client(zmq::socket_t& socket, const KeyPair& keys, const std::string& server_public) {
  socket.set(zmq::sockopt::curve_serverkey, server_public);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

ZapHandler::ZapHandler(zmq::context_t& ctx, std::set<std::string> allowed)
    : ctx_(ctx), allowed_(std::move(allowed)), socket_(ctx_, zmq::socket_type::rep) {
  // The ZAP endpoint must be bound before any CURVE server socket binds.
  socket_.bind("inproc://zeromq.zap.01");
  socket_.set(zmq::sockopt::rcvtimeo, 100);
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::run() {
  // Request frames (RFC 27): version, request id, domain, address, identity, mechanism,
  // credentials... Reply: version, request id, status code, status text, user id, metadata.
  while (!stop_) {
    std::vector<zmq::message_t> req;
    zmq::message_t m;
    if (!socket_.recv(m)) continue;
    req.push_back(std::move(m));
    while (req.back().more()) {
      zmq::message_t part;
      if (!socket_.recv(part)) break;
      req.push_back(std::move(part));
    }
    std::string version = req.size() > 0 ? req[0].to_string() : "";
    std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    std::string address = req.size() > 3 ? req[3].to_string() : "";
    std::string mechanism = req.size() > 5 ? req[5].to_string() : "";
    bool ok = false;
    std::string key;
    if (mechanism == "NULL") {
      ok = true;  // ipc:// peers (file permissions guard the socket; roles bind the uid)
    } else if (mechanism == "CURVE" && req.size() > 6 && req[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
      key = z85;
      ok = allowed_.count(key) > 0;
    }
    // The user id becomes the "User-Id" property of every message of this connection: the
    // broker reads it to bind roles (roles.h).
    std::string user = identity_from_zap(mechanism, address, key);
    if (!ok) {
      ++denied_;
      log::warn("zap: connection refused",
                {{"mechanism", mechanism}, {"address", address}, {"client_key", key}});
    }
    socket_.send(zmq::buffer(version), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(std::string(ok ? "OK" : "key not allowed")), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(user), zmq::send_flags::sndmore);
    socket_.send(zmq::message_t(), zmq::send_flags::none);
  }
}

}  // namespace nv::curve
