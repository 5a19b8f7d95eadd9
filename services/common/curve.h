// curve.h — CURVE encryption for tcp:// endpoints and a ZAP handler with a public-key allow-list.
//
// Key files (made by `nv-keygen NAME`): NAME.key holds "public=<z85>\nsecret=<z85>\n" (mode 0600)
// and NAME.pub holds "public=<z85>\n". The broker allows a client only if its public key is in
// the allow-list (a .pub file, or a directory of them). ipc:// endpoints rely on file modes.
#pragma once

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "error.h"

namespace nv::curve {

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters ("" for a public-only file)
};

Result<KeyPair> generate();
// Writes DIR/NAME.key (0600) and DIR/NAME.pub; refuses to overwrite.
Status write_files(const std::string& dir, const std::string& name, const KeyPair& keys);
// Reads a .key (public+secret) or .pub (public only) file.
Result<KeyPair> load(const std::string& path);
// Reads every *.pub in a directory, or one .pub/.key file.
Result<std::set<std::string>> load_allow_list(const std::string& path);

// Makes `socket` a CURVE server with `keys`; ZAP domain "nv".
void make_server(zmq::socket_t& socket, const KeyPair& keys);
// Makes `socket` a CURVE client of a server whose public key is `server_public`.
void make_client(zmq::socket_t& socket, const KeyPair& keys, const std::string& server_public);

// Answers ZAP requests (RFC 27) for one context from its own thread: CURVE clients whose public
// key is allowed get 200, everyone else 400. NULL-mechanism peers (ipc://, tcp:// without
// CURVE) are let through. The reply's user id is the peer's identity (roles.h: "uid:<n>" from
// the ipc:// peer credentials, "key:<z85>", "anonymous"), which ZeroMQ attaches to each of its
// messages as "User-Id". The handler must exist before the sockets it guards bind.
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, std::set<std::string> allowed);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;
  uint64_t denied() const { return denied_.load(); }

 private:
  void run();
  zmq::context_t& ctx_;
  std::set<std::string> allowed_;
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> denied_{0};
  std::thread thread_;
};

}  // namespace nv::curve
