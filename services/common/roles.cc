#include "roles.h"

#include <pwd.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "config.h"
#include "curve.h"

namespace nv {

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

// Resolves the identity column of a rule to its canonical form.
Result<std::string> canonical(const std::string& id) {
  if (id == "inproc" || id == "anonymous") return id;
  if (id.rfind("uid:", 0) == 0 && all_digits(id.substr(4))) {
    auto uid = std::stoul(id.substr(4));
    // The overflow uid: in a user namespace (systemd's PrivateUsers=) every unmapped user's
    // credentials read as it, so a role for it would be a role for everyone.
    if (uid == 65534) {
      return make_error(ErrorCode::BAD_REQUEST, "uid 65534 (nobody) cannot hold a role");
    }
    return "uid:" + std::to_string(uid);
  }
  if (id.rfind("user:", 0) == 0) {
    struct passwd pw {};
    struct passwd* found = nullptr;
    char buf[4096];
    if (getpwnam_r(id.substr(5).c_str(), &pw, buf, sizeof buf, &found) != 0 || !found) {
      return make_error(ErrorCode::BAD_REQUEST, "no such user '" + id.substr(5) + "'");
    }
    return canonical("uid:" + std::to_string(found->pw_uid));
  }
  if (id.rfind("key:", 0) == 0) {
    std::string k = id.substr(4);
    // A file (nv-keygen's NAME.pub) when one is there, else 40 Z85 characters ("/" and "."
    // are Z85 digits too).
    uint8_t raw[32];
    if (::access(k.c_str(), F_OK) != 0 && k.size() == 40 && zmq_z85_decode(raw, k.c_str())) {
      return "key:" + k;
    }
    auto pair = curve::load(k);
    if (!pair) return pair.error();
    return "key:" + pair->public_key;
  }
  return make_error(
      ErrorCode::BAD_REQUEST,
      "identity '" + id + "' is not uid:N, user:NAME, key:Z85|FILE, inproc or " + "anonymous");
}

}  // namespace

Roles Roles::defaults() {
  Roles r;
  r.grant_all("uid:" + std::to_string(::geteuid()));
  r.grant_all("uid:0");
  r.grant_all("inproc");
  return r;
}

void Roles::grant_all(const std::string& identity) {
  auto& role = rules_[identity];
  role.all_services = role.all_topics = true;
}

Result<Roles> Roles::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::BAD_REQUEST, "cannot read roles file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

Result<Roles> Roles::parse(const std::string& text, const std::string& origin) {
  Roles r;
  std::stringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto where = origin + ":" + std::to_string(n) + ": ";
    // A comment starts at a "#" that begins a line or follows a blank ("#" is a Z85 digit).
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line.resize(i);
        break;
      }
    }
    std::stringstream cols(line);
    std::string id, services, topics, extra;
    if (!(cols >> id)) continue;  // blank or comment
    if (!(cols >> services >> topics) || (cols >> extra)) {
      return make_error(ErrorCode::BAD_REQUEST,
                        where + "expected IDENTITY SERVICES TOPICS (use - for none)");
    }
    auto canon = canonical(id);
    if (!canon) return make_error(ErrorCode::BAD_REQUEST, where + canon.error().message);
    if (r.rules_.count(canon.value())) {
      return make_error(ErrorCode::BAD_REQUEST, where + "a second rule for " + canon.value());
    }
    Role role;
    if (services == "*") {
      role.all_services = true;
    } else if (services != "-") {
      for (auto& s : split_commas(services)) {
        if (s.size() > 64 || s.rfind("nv.", 0) == 0) {
          return make_error(ErrorCode::BAD_REQUEST, where + "bad service name '" + s + "'");
        }
        role.services.insert(s);
      }
    }
    if (topics == "*") {
      role.all_topics = true;
    } else if (topics != "-") {
      role.topic_prefixes = split_commas(topics);
    }
    r.rules_.emplace(canon.value(), std::move(role));
  }
  return r;
}

bool Roles::may_serve(const std::string& identity, const std::string& service) const {
  auto it = rules_.find(identity);
  if (it == rules_.end()) return false;
  return it->second.all_services || it->second.services.count(service) > 0;
}

bool Roles::may_publish(const std::string& identity, const std::string& topic) const {
  auto it = rules_.find(identity);
  if (it == rules_.end()) return false;
  if (it->second.all_topics) return true;
  for (const auto& p : it->second.topic_prefixes) {
    if (topic.rfind(p, 0) == 0) return true;
  }
  return false;
}

std::set<std::string> Roles::keys() const {
  std::set<std::string> out;
  for (const auto& [id, role] : rules_) {
    if (id.rfind("key:", 0) == 0) out.insert(id.substr(4));
  }
  return out;
}

std::string identity_from_zap(const std::string& mechanism, const std::string& address,
                              const std::string& curve_key_z85) {
  if (mechanism == "CURVE" && !curve_key_z85.empty()) return "key:" + curve_key_z85;
  // ipc://: "localhost:<uid>:<gid>:<pid>" (libzmq appends SO_PEERCRED to the unix socket's
  // peer name). A tcp:// address is numeric ("127.0.0.1", "::1") and never starts so.
  const std::string prefix = "localhost:";
  if (address.rfind(prefix, 0) == 0) {
    std::stringstream in(address.substr(prefix.size()));
    std::string uid, gid, pid, extra;
    if (std::getline(in, uid, ':') && std::getline(in, gid, ':') && std::getline(in, pid, ':') &&
        !std::getline(in, extra) && all_digits(uid) && all_digits(gid) && all_digits(pid)) {
      return "uid:" + std::to_string(std::stoul(uid));
    }
  }
  return "anonymous";
}

std::string peer_identity(const std::vector<zmq::message_t>& frames) {
  for (const auto& frame : frames) {
    auto* m = const_cast<zmq_msg_t*>(frame.handle());
    if (const char* user = zmq_msg_gets(m, "User-Id"); user && *user) return user;
    if (const char* address = zmq_msg_gets(m, "Peer-Address")) {
      return identity_from_zap("NULL", address, "");
    }
  }
  return "inproc";
}

}  // namespace nv
