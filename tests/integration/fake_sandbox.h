// fake_sandbox.h — a test double of the executor's sandbox service (schemas/sandbox.capnp) for
// the agent tests: it registers "sandbox" and "sandbox.fake" like nv-sandbox-executor and keeps
// each sandbox's files in memory. It runs nothing: execs are matched against a few shapes and
// answered as a real run would:
//   bash   echo TEXT > PATH      writes "TEXT\n" (relative paths under /home/agent)
//          cat PATH              prints the file, or exit 1 "cat: PATH: No such file or directory"
//          crash the vm          answers vmFailed and forgets the sandbox, as a dead VM does
//   python NAME = INT            (in a context) sets a variable of that context
//          print(NAME + 1)       prints it plus one, or a NameError (exit 1)
// Mounts: a create with a hostPath under /refused answers mountRefused (the executor's
// --mount-root rule); sync answers, per read-write mount, the files written under its guest path.
// Every request is recorded (seen()), so tests check ids, owners, contexts and the destroy.
#pragma once

#include <nv/schema/sandbox.capnp.h>

#include <atomic>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/frames.h"
#include "common/sandbox_client.h"
#include "common/worker.h"

namespace nv::agent_harness {

class FakeSandboxService {
 public:
  struct Seen {
    std::string op, sandbox_id, owner, path, code, context;
    schema::Language language = schema::Language::UNSET;
    schema::SizeTier tier = schema::SizeTier::UNSET;
    uint32_t lifetime_ms = 0;
    std::vector<std::pair<std::string, std::string>> labels;
    std::vector<sandbox::Mount> mounts{};  // create
  };

  explicit FakeSandboxService(const std::string& workers_endpoint) {
    for (std::string service : {"sandbox", "sandbox.fake"}) {
      WorkerOptions o;
      o.service = service;
      o.broker_endpoint = workers_endpoint;
      o.capacity = 8;
      o.heartbeat = std::chrono::milliseconds(200);
      threads_.emplace_back([this, o] {
        Worker w(ctx_, o, [this](std::shared_ptr<Request> r) { handle(r); });
        w.run(stop_);
      });
    }
  }
  ~FakeSandboxService() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  std::vector<Seen> seen(const std::string& op) {
    std::vector<Seen> out;
    for (auto& s : seen()) {
      if (s.op == op) out.push_back(s);
    }
    return out;
  }
  // Sandboxes not destroyed.
  size_t live() {
    std::lock_guard lock(mu_);
    return boxes_.size();
  }

 private:
  struct Box {
    std::string owner;
    std::map<std::string, std::string> files;
    std::map<std::string, std::map<std::string, long>> vars;  // context → name → value
    std::vector<sandbox::Mount> mounts;
  };

  static std::string absolute(const std::string& p) {
    return p.empty() || p[0] == '/' ? p : "/home/agent/" + p;
  }
  static kj::ArrayPtr<const kj::byte> bytes(const std::string& v) {
    return kj::arrayPtr(reinterpret_cast<const kj::byte*>(v.data()), v.size());
  }

  void info(schema::SandboxInfo::Builder b, const std::string& id, const std::string& owner,
            schema::SandboxState state) {
    b.setSandboxId(id);
    b.setOwner(owner);
    b.setState(state);
    b.setTier(schema::SizeTier::SMALL);
    b.setVmId(state == schema::SandboxState::RUNNING ? "vm-" + id : "");
  }

  void handle(const std::shared_ptr<Request>& r) {
    auto req = r->read<schema::SandboxRequest>();
    if (!req) return r->fail(req.error());
    std::string owner = req->getOwner().cStr(), id = req->getSandboxId().cStr();
    Seen seen{{}, id, owner, {}, {}, {}, schema::Language::UNSET, schema::SizeTier::UNSET, 0, {}};
    capnp::MallocMessageBuilder mb;
    auto reply = bus::init_body<schema::SandboxReply>(mb);
    std::unique_lock lock(mu_);
    auto record = [&](const char* op) {
      seen.op = op;
      seen_.push_back(seen);
    };
    Box* box = nullptr;
    if (auto it = boxes_.find(id); it != boxes_.end() && it->second.owner == owner) {
      box = &it->second;
    }
    auto unknown = [&] {
      return r->fail(make_error(ErrorCode::UNKNOWN_SANDBOX, "no sandbox " + id));
    };
    switch (req->which()) {
      case schema::SandboxRequest::CREATE: {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(++next_));
        seen.sandbox_id = id = std::string("sbx-fake-") + hex;
        seen.tier = req->getCreate().getTier();
        seen.lifetime_ms = req->getCreate().getLifetimeMs();
        for (auto l : req->getCreate().getLabels()) {
          seen.labels.emplace_back(l.getKey().cStr(), l.getValue().cStr());
        }
        seen.mounts = sandbox::mounts_from_capnp(req->getCreate().getMounts());
        for (const auto& m : seen.mounts) {
          if (m.host_path.rfind("/refused", 0) == 0) {  // the executor's --mount-root rule
            seen.sandbox_id.clear();
            record("create");
            return r->fail(make_error(ErrorCode::MOUNT_REFUSED,
                                      m.host_path + " is outside every --mount-root (/allowed)"));
          }
        }
        boxes_[id].owner = owner;
        boxes_[id].mounts = seen.mounts;
        record("create");
        info(reply.initInfo(), id, owner, schema::SandboxState::RUNNING);
        break;
      }
      case schema::SandboxRequest::LIST: {
        record("list");
        std::vector<std::string> mine;
        for (auto& [k, b] : boxes_) {
          if (b.owner == owner) mine.push_back(k);
        }
        auto l = reply.initInfos(static_cast<unsigned>(mine.size()));
        for (unsigned i = 0; i < mine.size(); ++i) {
          info(l[i], mine[i], owner, schema::SandboxState::RUNNING);
        }
        break;
      }
      case schema::SandboxRequest::SYNC: {
        // Each read-write mount: the files written under it, as if all were new.
        record("sync");
        if (!box) return unknown();
        std::vector<sandbox::MountSync> out;
        for (const auto& m : box->mounts) {
          if (m.read_only) continue;
          sandbox::MountSync s{m.guest_path, m.host_path, 0, 0, 0, {}};
          for (const auto& [path, data] : box->files) {
            if (path.rfind(m.guest_path + "/", 0) != 0) continue;
            ++s.files_written;
            s.bytes_written += data.size();
          }
          out.push_back(s);
        }
        auto l = reply.initSynced(static_cast<unsigned>(out.size()));
        for (unsigned i = 0; i < out.size(); ++i) sandbox::to_capnp(out[i], l[i]);
        break;
      }
      case schema::SandboxRequest::DESTROY:
        record("destroy");
        if (!box) return unknown();
        boxes_.erase(id);
        info(reply.initInfo(), id, owner, schema::SandboxState::DESTROYED);
        break;
      case schema::SandboxRequest::WRITE_FILE: {
        auto w = req->getWriteFile();
        seen.path = w.getPath().cStr();
        seen.code =
            std::string(reinterpret_cast<const char*>(w.getData().begin()), w.getData().size());
        record("writeFile");
        if (!box) return unknown();
        box->files[seen.path] = seen.code;
        auto e = reply.initEntries(1)[0];
        e.setPath(seen.path);
        e.setType(schema::FileType::FILE);
        e.setSize(seen.code.size());
        break;
      }
      case schema::SandboxRequest::READ_FILE: {
        auto f = req->getReadFile();
        seen.path = f.getPath().cStr();
        record("readFile");
        if (!box) return unknown();
        auto it = box->files.find(seen.path);
        if (it == box->files.end()) {
          return r->fail(make_error(ErrorCode::NOT_FOUND, seen.path + ": no such file"));
        }
        const std::string& all = it->second;
        uint64_t off = std::min<uint64_t>(f.getOffset(), all.size());
        uint64_t len = f.getLength() ? f.getLength() : all.size();
        std::string part = all.substr(off, len);
        auto b = reply.initFile();
        b.setPath(seen.path);
        b.setOffset(off);
        b.setData(bytes(part));
        b.setSize(all.size());
        b.setEof(off + part.size() == all.size());
        break;
      }
      case schema::SandboxRequest::EXEC: {
        auto e = req->getExec();
        seen.code = e.getCode().cStr();
        seen.context = e.getContext().cStr();
        seen.language = e.getLanguage();
        record("exec");
        if (!box) return unknown();
        std::string out, err;
        int code = 0;
        std::smatch m;
        if (seen.code == "crash the vm") {
          boxes_.erase(id);
          return r->fail(make_error(ErrorCode::VM_FAILED, "fake sandbox: the VM died"));
        }
        if (std::regex_match(seen.code, m, std::regex(R"(echo (.*) > (\S+)\n?)"))) {
          box->files[absolute(m[2])] = m[1].str() + "\n";
        } else if (std::regex_match(seen.code, m, std::regex(R"(cat (\S+)\n?)"))) {
          auto it = box->files.find(absolute(m[1]));
          if (it != box->files.end()) {
            out = it->second;
          } else {
            err = "cat: " + m[1].str() + ": No such file or directory\n";
            code = 1;
          }
        } else if (std::regex_match(seen.code, m, std::regex(R"((\w+) = (\d+)\n?)"))) {
          box->vars[seen.context][m[1]] = std::stol(m[2]);
        } else if (std::regex_match(seen.code, m, std::regex(R"(print\((\w+) \+ 1\)\n?)"))) {
          auto& vars = box->vars[seen.context];
          if (auto it = vars.find(m[1]); it != vars.end() && !seen.context.empty()) {
            out = std::to_string(it->second + 1) + "\n";
          } else {
            err = "NameError: name '" + m[1].str() + "' is not defined\n";
            code = 1;
          }
        } else {
          err = "fake sandbox: no table entry for this program\n";
          code = 127;
        }
        lock.unlock();
        auto chunk = [&](schema::Stream stream, const std::string& data, uint32_t seq) {
          capnp::MallocMessageBuilder cb;
          auto c = bus::init_body<schema::ExecChunk>(cb);
          c.setStream(stream);
          c.setData(bytes(data));
          c.setSeq(seq);
          r->partial(cb);
        };
        chunk(schema::Stream::STATUS, "started vm=vm-" + id, 0);
        if (!out.empty()) chunk(schema::Stream::STDOUT, out, 1);
        if (!err.empty()) chunk(schema::Stream::STDERR, err, 2);
        auto res = reply.initExecResult();
        res.setExitCode(code);
        res.setStdout(bytes(out));
        res.setStderr(bytes(err));
        res.setStdoutBytes(out.size());
        res.setStderrBytes(err.size());
        res.setVmId("vm-" + id);
        return r->reply(mb);
      }
      default:
        record("other");
        return r->fail(make_error(ErrorCode::BAD_REQUEST, "the fake sandbox serves this not"));
    }
    lock.unlock();
    r->reply(mb);
  }

  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::map<std::string, Box> boxes_;
  uint64_t next_ = 0x1000;
};

}  // namespace nv::agent_harness
