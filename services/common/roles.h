// roles.h — who may serve which bus service and publish which event topics.
//
// Identities (strings, as the broker's ZAP handler verifies them and ZeroMQ hands them back as
// the "User-Id" property of every message from that connection):
//   uid:<n>     an ipc:// peer: the uid the kernel reports for the socket (SO_PEERCRED). libzmq
//               4.3 puts it in the ZAP request's address as "localhost:<uid>:<gid>:<pid>" and in
//               the "Peer-Address" message property (measured on Debian 12's libzmq 4.3.4).
//   key:<z85>   a tcp:// CURVE peer: its long-term public key (40 Z85 characters).
//   inproc      a peer inside the broker's own process (inproc:// carries no credentials).
//   anonymous   a tcp:// peer without CURVE (unauthenticated; no role unless granted).
//
// Roles file (--roles FILE): one rule a line, columns separated by blanks; a "#" at the start of
// a line or after a blank starts a comment (inside a Z85 key it is a digit):
//   IDENTITY  SERVICES  TOPICS
// IDENTITY is one of the forms above, or user:<name> (its uid from the passwd database), or
// key:<path of a .pub/.key file from nv-keygen>. SERVICES is a comma list of bus service names
// the peer may register (READY), TOPICS a comma list of event topic prefixes it may publish
// ("vm." covers vm.booted); "*" means all, "-" none. Example (deploy/roles.example):
//   uid:0            *          *
//   key:/etc/neurovisor/keys/executor-b.pub  exec  exec.,service.,vm.
// Without a roles file the broker's own uid, root and inproc peers have every role; any other
// identity has none (it may still be a client: clients need no role).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "error.h"

namespace nv {

struct Role {
  bool all_services = false, all_topics = false;
  std::set<std::string> services;
  std::vector<std::string> topic_prefixes;
};

class Roles {
 public:
  // Own uid, root and inproc: every role.
  static Roles defaults();
  // Parses a roles file; errors name the line.
  static Result<Roles> load(const std::string& path);
  static Result<Roles> parse(const std::string& text, const std::string& origin = "roles");

  // Gives `identity` every role (for allow-listed CURVE keys when no roles file is given).
  void grant_all(const std::string& identity);
  bool may_serve(const std::string& identity, const std::string& service) const;
  bool may_publish(const std::string& identity, const std::string& topic) const;
  // CURVE public keys (Z85) named in the rules: the ZAP handler lets them connect.
  std::set<std::string> keys() const;
  size_t size() const { return rules_.size(); }

 private:
  std::map<std::string, Role> rules_;
};

// The identity ZAP derives from a request's mechanism, address and CURVE key (32 bytes, or
// empty): "uid:<n>" for an ipc:// address "localhost:<uid>:<gid>:<pid>", "key:<z85>" for CURVE,
// "anonymous" otherwise.
std::string identity_from_zap(const std::string& mechanism, const std::string& address,
                              const std::string& curve_key_z85);

// The verified identity of the peer a received message came from: the "User-Id" (set by the
// ZAP handler), else derived from the "Peer-Address", of its first frame that carries the
// connection's properties; "inproc" when none does (inproc:// has no connection). Measured on
// libzmq 4.3.4: a ROUTER's routing-id frame and a zero-size frame received over CURVE carry no
// properties, every frame the peer sent with content does (a bus message always has a header).
std::string peer_identity(const std::vector<zmq::message_t>& frames);

}  // namespace nv
