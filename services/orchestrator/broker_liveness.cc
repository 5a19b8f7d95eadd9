// broker_liveness.cc — who is still there: worker and client heartbeats, broker stalls, the
// startup grace, and answers that wait for a client that reads slower than it pipelines.
#include <algorithm>

#include "broker.h"
#include "common/log.h"

namespace nv {

namespace {
// Answers kept for one client that does not read (each at least a small error).
constexpr size_t kBacklogAnswersPerClient = 1u << 20;
}  // namespace

std::string Broker::client_key(size_t sock, const std::vector<std::string>& routing) {
  std::string key = std::to_string(sock);
  for (auto& r : routing) {
    key += '\0';
    key += r;
  }
  return key;
}

// ------------------------------------------------------------------------------------ workers

void Broker::heartbeat_and_expire() {
  auto now = Clock::now();
  std::vector<std::string> dead;
  for (auto& [key, w] : workers_) {
    if (now > w.expiry) {
      dead.push_back(key);
      continue;
    }
    bus::Header h;
    h.kind = bus::Kind::HEARTBEAT;
    h.interval_ms = static_cast<uint32_t>(opt_.heartbeat.count());
    bus::send(*workers_sock_.sockets[w.sock], {w.identity}, h, zmq::message_t(),
              static_cast<int>(zmq::send_flags::dontwait));
  }
  for (auto& key : dead) {
    ++stats_.expired;
    remove_worker(key, "stopped answering heartbeats");
  }
  heartbeat_clients();
}

void Broker::after_stall(Clock::duration stalled) {
  // We did not run: the peers' silence during the stall proves nothing, and their messages may
  // still wait unread. Everyone gets a full liveness window from now.
  ++stats_.stalls;
  auto now = Clock::now();
  log::warn("broker loop stalled; peers get a fresh liveness window",
            {{"stalled_ms", std::chrono::duration_cast<std::chrono::milliseconds>(stalled).count()},
             {"workers", workers_.size()},
             {"clients", clients_.size()}});
  for (auto& [key, w] : workers_) {
    w.expiry = std::max(w.expiry, now + opt_.heartbeat * opt_.liveness);
  }
  for (auto& [key, c] : clients_) c.expiry = std::max(c.expiry, now + opt_.client_silence);
  next_heartbeat_ = now;  // speak first: peers that waited for us learn we are back
}

void Broker::end_startup_grace() {
  in_grace_ = false;
  // Names held during the grace that no worker registered: unknown after all.
  std::vector<uint64_t> unknown;
  for (auto& [name, svc] : services_) {
    if (svc.ever_registered) continue;
    unknown.insert(unknown.end(), svc.queue.begin(), svc.queue.end());
  }
  for (uint64_t id : unknown) {
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;
    ++stats_.unknown_service;
    fail(id, make_error(ErrorCode::UNKNOWN_SERVICE, "no worker has registered service '" +
                                                        it->second.service +
                                                        "'; check the name and `nv status`"));
  }
  std::erase_if(services_, [](const auto& kv) { return !kv.second.ever_registered; });
}

// ------------------------------------------------------------------------------------ clients

void Broker::client_heard(const std::string& key, bus::Kind kind) {
  if (clients_.empty()) return;
  auto it = clients_.find(key);
  if (it == clients_.end()) return;  // no pending requests: nothing to keep alive
  auto& c = it->second;
  if (kind == bus::Kind::HEARTBEAT) c.speaks_heartbeat = true;
  c.expiry = Clock::now() + opt_.client_silence;
}

void Broker::heartbeat_clients() {
  auto now = Clock::now();
  std::vector<std::pair<std::string, std::string>> lost;
  for (auto& [key, c] : clients_) {
    if (c.lost || !c.speaks_heartbeat) continue;
    if (now > c.expiry) {
      lost.emplace_back(key, "silent for " + std::to_string(opt_.client_silence.count()) + " ms");
      continue;
    }
    bus::Header h;
    h.kind = bus::Kind::HEARTBEAT;
    h.interval_ms = static_cast<uint32_t>(opt_.heartbeat.count());
    auto header = bus::encode_header(h);
    zmq::message_t body;
    // A full pipe is fine (the client is busy reading answers); a gone one means it is gone.
    if (send_routed(*clients_sock_.sockets[c.sock], c.routing, header, body) == SendResult::gone) {
      lost.emplace_back(key, "its connection closed");
    }
  }
  for (auto& [key, why] : lost) client_lost(key, why);
}

void Broker::client_lost(const std::string& key, const std::string& why) {
  if (auto b = backlogs_.find(key); b != backlogs_.end()) {
    for (auto& [h, body] : b->second.answers) backlog_bytes_ -= h.size() + body.size();
    backlogs_.erase(b);
  }
  auto it = clients_.find(key);
  if (it == clients_.end() || it->second.lost) return;
  it->second.lost = true;
  ++stats_.clients_lost;
  std::vector<uint64_t> queued, running;
  for (auto& [id, p] : pending_) {
    if (p.client != key || p.abandoned) continue;
    (p.worker.empty() ? queued : running).push_back(id);
  }
  log::info("client gone; its requests are cancelled",
            {{"why", why}, {"queued", queued.size()}, {"running", running.size()}});
  for (uint64_t id : running) {
    auto& p = pending_.at(id);
    p.abandoned = true;  // the slot stays taken until the worker answers the cancel
    cancel_on_worker(id, p.worker);
  }
  for (uint64_t id : queued) {
    pending_.at(id).abandoned = true;  // nobody to answer
    fail(id, make_error(ErrorCode::CANCELLED, "the client went away"));
  }
}

// ------------------------------------------------------------------------- answers to clients

Broker::SendResult Broker::send_routed(zmq::socket_t& s, const std::vector<std::string>& routing,
                                       zmq::message_t& header, zmq::message_t& body) {
  // Frames: [routing...][empty][header][body?]. With ROUTER_MANDATORY the first frame fails as a
  // whole (EAGAIN: pipe full; EHOSTUNREACH: no such peer); after it the message is committed.
  try {
    for (size_t i = 0; i < routing.size(); ++i) {
      auto sent =
          s.send(zmq::buffer(routing[i]), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      if (!sent) return i == 0 ? SendResult::full : SendResult::gone;
    }
    s.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (body.size() == 0) {
      s.send(header, zmq::send_flags::dontwait);
    } else {
      s.send(header, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      s.send(body, zmq::send_flags::dontwait);
    }
    return SendResult::ok;
  } catch (const zmq::error_t&) {
    return SendResult::gone;
  }
}

void Broker::send_client(size_t sock, const std::vector<std::string>& routing, const bus::Header& h,
                         zmq::message_t body) {
  auto header = bus::encode_header(h);
  // The common case: no backlog at all, and the pipe takes the answer.
  std::string key;
  auto bit = backlogs_.end();
  if (!backlogs_.empty()) {
    key = client_key(sock, routing);
    bit = backlogs_.find(key);
  }
  if (bit == backlogs_.end()) {
    auto r = send_routed(*clients_sock_.sockets[sock], routing, header, body);
    if (r == SendResult::ok) return;
    if (key.empty()) key = client_key(sock, routing);
    if (r == SendResult::gone) {
      client_lost(key, "its connection closed");
      return;
    }
    bit = backlogs_.emplace(key, Backlog{sock, routing, {}}).first;
  }
  // Behind earlier answers (order is kept). Past the byte bound an answer shrinks to a small
  // `overloaded` error: the request is still answered, its result is not kept.
  auto& b = bit->second;
  ++stats_.backlogged;
  if (backlog_bytes_ + body.size() > opt_.client_backlog_bytes && h.kind != bus::Kind::ERROR) {
    ++stats_.backlog_shrunk;
    bus::Header eh = h;
    eh.kind = bus::Kind::ERROR;
    header = bus::encode_header(eh);
    body = bus::encode_error(make_error(
        ErrorCode::OVERLOADED,
        "the answer did not fit the orchestrator's backlog for this client (it sends faster "
        "than it reads); read answers before sending more",
        true));
  }
  if (b.answers.size() >= kBacklogAnswersPerClient) {
    ++stats_.answers_dropped;  // a client that never reads: nothing more can be done
    return;
  }
  backlog_bytes_ += header.size() + body.size();
  b.answers.emplace_back(std::move(header), std::move(body));
}

void Broker::flush_backlogs() {
  for (auto it = backlogs_.begin(); it != backlogs_.end();) {
    auto& b = it->second;
    bool gone = false;
    while (!b.answers.empty()) {
      auto& [header, body] = b.answers.front();
      size_t size = header.size() + body.size();
      auto r = send_routed(*clients_sock_.sockets[b.sock], b.routing, header, body);
      if (r == SendResult::full) break;
      backlog_bytes_ -= size;
      b.answers.pop_front();
      if (r == SendResult::gone) {
        gone = true;
        break;
      }
    }
    if (gone) {
      for (auto& [h, body] : b.answers) backlog_bytes_ -= h.size() + body.size();
      auto key = it->first;
      it = backlogs_.erase(it);
      client_lost(key, "its connection closed");
      continue;
    }
    it = b.answers.empty() ? backlogs_.erase(it) : std::next(it);
  }
}

}  // namespace nv
