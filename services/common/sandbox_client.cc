#include "sandbox_client.h"

#include <algorithm>
#include <nv/schema/exec.capnp.h>

#include "frames.h"
#include "sandbox_route.h"

namespace nv::sandbox {

namespace {

kj::ArrayPtr<const kj::byte> bytes(std::string_view s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
Error wrong_reply(const char* want) {
  return make_error(ErrorCode::MALFORMED_MESSAGE,
                    std::string("the sandbox service answered without the expected ") + want);
}

}  // namespace

// ---- conversions

void labels_to_capnp(const std::vector<Label>& labels, capnp::List<schema::Label>::Builder b) {
  for (unsigned i = 0; i < labels.size() && i < b.size(); ++i) {
    b[i].setKey(labels[i].key);
    b[i].setValue(labels[i].value);
  }
}
std::vector<Label> labels_from_capnp(capnp::List<schema::Label>::Reader r) {
  std::vector<Label> out;
  for (auto l : r) out.push_back({l.getKey(), l.getValue()});
  return out;
}
EnvList env_from_capnp(capnp::List<schema::EnvVar>::Reader r) {
  EnvList out;
  for (auto e : r) out.emplace_back(e.getName(), e.getValue());
  return out;
}
void env_to_capnp(const EnvList& env, capnp::List<schema::EnvVar>::Builder b) {
  for (unsigned i = 0; i < env.size() && i < b.size(); ++i) {
    b[i].setName(env[i].first);
    b[i].setValue(env[i].second);
  }
}

void mounts_to_capnp(const std::vector<Mount>& mounts, capnp::List<schema::Mount>::Builder b) {
  for (unsigned i = 0; i < mounts.size() && i < b.size(); ++i) {
    b[i].setHostPath(mounts[i].host_path);
    b[i].setGuestPath(mounts[i].guest_path);
    b[i].setReadOnly(mounts[i].read_only);
    b[i].setQuotaBytes(mounts[i].quota_bytes);
    b[i].setQuotaFiles(mounts[i].quota_files);
  }
}
std::vector<Mount> mounts_from_capnp(capnp::List<schema::Mount>::Reader r) {
  std::vector<Mount> out;
  for (auto m : r) {
    out.push_back(Mount{.host_path = m.getHostPath(),
                        .guest_path = m.getGuestPath(),
                        .read_only = m.getReadOnly(),
                        .quota_bytes = m.getQuotaBytes(),
                        .quota_files = m.getQuotaFiles()});
  }
  return out;
}

void to_capnp(const MountSync& s, schema::MountSync::Builder b) {
  b.setGuestPath(s.guest_path);
  b.setHostPath(s.host_path);
  b.setFilesWritten(s.files_written);
  b.setBytesWritten(s.bytes_written);
  b.setFilesRemoved(s.files_removed);
  auto l = b.initSkipped(static_cast<unsigned>(std::min<size_t>(s.skipped.size(), 100)));
  for (unsigned i = 0; i < l.size(); ++i) l.set(i, s.skipped[i]);
}
MountSync from_capnp(schema::MountSync::Reader r) {
  MountSync s;
  s.guest_path = r.getGuestPath();
  s.host_path = r.getHostPath();
  s.files_written = r.getFilesWritten();
  s.bytes_written = r.getBytesWritten();
  s.files_removed = r.getFilesRemoved();
  for (auto t : r.getSkipped()) s.skipped.emplace_back(t.cStr());
  return s;
}
namespace {
void inference_to_capnp(const Inference& in, schema::InferencePolicy::Builder b) {
  b.setEnabled(in.enabled);
  auto m = b.initModels(static_cast<unsigned>(in.models.size()));
  for (unsigned i = 0; i < in.models.size(); ++i) m.set(i, in.models[i]);
  b.setTokenBudget(in.token_budget);
}
Inference inference_from_capnp(schema::InferencePolicy::Reader r) {
  Inference in;
  in.enabled = r.getEnabled();
  for (auto m : r.getModels()) in.models.emplace_back(m.cStr());
  in.token_budget = r.getTokenBudget();
  return in;
}
}  // namespace

void to_capnp(const Spec& s, schema::SandboxSpec::Builder b) {
  b.setTier(s.tier);
  b.setImage(s.image);
  env_to_capnp(s.env, b.initEnv(static_cast<unsigned>(s.env.size())));
  b.setCwd(s.cwd);
  b.setLifetimeMs(s.lifetime_ms);
  b.setIdleTimeoutMs(s.idle_timeout_ms);
  labels_to_capnp(s.labels, b.initLabels(static_cast<unsigned>(s.labels.size())));
  b.setFromSnapshot(s.from_snapshot);
  mounts_to_capnp(s.mounts, b.initMounts(static_cast<unsigned>(s.mounts.size())));
  if (s.inference.enabled) inference_to_capnp(s.inference, b.initInference());
  if (s.network.allow) {
    auto n = b.initNetwork();
    n.setMode(schema::NetworkMode::ALLOW);
    auto a = n.initAllow(static_cast<unsigned>(s.network.entries.size()));
    for (unsigned k = 0; k < a.size(); ++k) a.set(k, s.network.entries[k]);
    n.setMaxConnections(s.network.max_connections);
    n.setBandwidthBytesPerS(s.network.bandwidth);
  }
}
Spec from_capnp(schema::SandboxSpec::Reader r) {
  Spec s;
  s.tier = r.getTier();
  s.image = r.getImage();
  s.env = env_from_capnp(r.getEnv());
  s.cwd = r.getCwd();
  s.lifetime_ms = r.getLifetimeMs();
  s.idle_timeout_ms = r.getIdleTimeoutMs();
  s.labels = labels_from_capnp(r.getLabels());
  s.from_snapshot = r.getFromSnapshot();
  s.mounts = mounts_from_capnp(r.getMounts());
  if (r.hasInference()) s.inference = inference_from_capnp(r.getInference());
  if (r.hasNetwork()) {
    auto n = r.getNetwork();
    s.network.allow = n.getMode() == schema::NetworkMode::ALLOW;
    for (auto e : n.getAllow()) s.network.entries.emplace_back(e.cStr(), e.size());
    s.network.max_connections = n.getMaxConnections();
    s.network.bandwidth = n.getBandwidthBytesPerS();
  }
  return s;
}

void to_capnp(const Info& s, schema::SandboxInfo::Builder b) {
  b.setSandboxId(s.sandbox_id);
  b.setOwner(s.owner);
  b.setState(s.state);
  b.setTier(s.tier);
  auto res = b.initResources();
  res.setTier(s.tier);
  res.setVcpus(s.vcpus);
  res.setMemoryMib(s.memory_mib);
  b.setVmId(s.vm_id);
  b.setCreatedUnixMs(s.created_unix_ms);
  b.setDeadlineUnixMs(s.deadline_unix_ms);
  b.setIdleDeadlineUnixMs(s.idle_deadline_unix_ms);
  b.setLastActiveUnixMs(s.last_active_unix_ms);
  labels_to_capnp(s.labels, b.initLabels(static_cast<unsigned>(s.labels.size())));
  b.setParentId(s.parent_id);
  b.setFromSnapshot(s.from_snapshot);
  b.setCwd(s.cwd);
  env_to_capnp(s.env, b.initEnv(static_cast<unsigned>(s.env.size())));
  b.setEndReason(s.end_reason);
  mounts_to_capnp(s.mounts, b.initMounts(static_cast<unsigned>(s.mounts.size())));
  if (s.inference.enabled) inference_to_capnp(s.inference, b.initInference());
  b.setInferenceTokensUsed(s.inference_tokens_used);
  auto n = b.initNetwork();
  n.setMode(s.network.allow ? schema::NetworkMode::ALLOW : schema::NetworkMode::NONE);
  auto a = n.initAllow(static_cast<unsigned>(s.network.entries.size()));
  for (unsigned i = 0; i < a.size(); ++i) a.set(i, s.network.entries[i]);
  n.setMac(s.network.mac);
  n.setIpv4(s.network.ipv4);
  n.setGateway(s.network.gateway);
}
Info from_capnp(schema::SandboxInfo::Reader r) {
  Info s;
  s.sandbox_id = r.getSandboxId();
  s.owner = r.getOwner();
  s.state = r.getState();
  s.tier = r.getTier();
  s.vcpus = r.getResources().getVcpus();
  s.memory_mib = r.getResources().getMemoryMib();
  s.vm_id = r.getVmId();
  s.created_unix_ms = r.getCreatedUnixMs();
  s.deadline_unix_ms = r.getDeadlineUnixMs();
  s.idle_deadline_unix_ms = r.getIdleDeadlineUnixMs();
  s.last_active_unix_ms = r.getLastActiveUnixMs();
  s.labels = labels_from_capnp(r.getLabels());
  s.parent_id = r.getParentId();
  s.from_snapshot = r.getFromSnapshot();
  s.cwd = r.getCwd();
  s.env = env_from_capnp(r.getEnv());
  s.end_reason = r.getEndReason();
  s.mounts = mounts_from_capnp(r.getMounts());
  if (r.hasInference()) s.inference = inference_from_capnp(r.getInference());
  s.inference_tokens_used = r.getInferenceTokensUsed();
  if (r.hasNetwork()) {
    auto n = r.getNetwork();
    s.network.allow = n.getMode() == schema::NetworkMode::ALLOW;
    for (auto e : n.getAllow()) s.network.entries.emplace_back(e.cStr(), e.size());
    s.network.mac = n.getMac();
    s.network.ipv4 = n.getIpv4();
    s.network.gateway = n.getGateway();
  }
  return s;
}

void to_capnp(const ExecSpec& s, schema::SandboxExec::Builder b) {
  b.setLanguage(s.language);
  b.setCode(s.code);
  b.setStdin(bytes(s.stdin_data));
  env_to_capnp(s.env, b.initEnv(static_cast<unsigned>(s.env.size())));
  b.setCwd(s.cwd);
  b.setTimeoutMs(s.timeout_ms);
  b.setOutputCapBytes(s.output_cap_bytes);
  b.setTailBytes(s.tail_bytes);
  b.setContext(s.context);
  b.setBackground(s.background);
}
ExecSpec from_capnp(schema::SandboxExec::Reader r) {
  ExecSpec s;
  s.language = r.getLanguage();
  s.code = r.getCode();
  s.stdin_data = str(r.getStdin());
  s.env = env_from_capnp(r.getEnv());
  s.cwd = r.getCwd();
  s.timeout_ms = r.getTimeoutMs();
  s.output_cap_bytes = r.getOutputCapBytes();
  s.tail_bytes = r.getTailBytes();
  s.context = r.getContext();
  s.background = r.getBackground();
  return s;
}
ExecResult from_capnp(schema::ExecResult::Reader r) {
  ExecResult s;
  s.exit_code = r.getExitCode();
  s.signal = r.getSignal();
  s.duration_ms = r.getDurationMs();
  s.wall_ms = r.getWallMs();
  s.timed_out = r.getTimedOut();
  s.truncated = r.getTruncated();
  s.host_killed = r.getHostKilled();
  s.stdout_data = str(r.getStdout());
  s.stderr_data = str(r.getStderr());
  s.stdout_tail = str(r.getStdoutTail());
  s.stderr_tail = str(r.getStderrTail());
  s.stdout_bytes = r.getStdoutBytes();
  s.stderr_bytes = r.getStderrBytes();
  s.vm_id = r.getVmId();
  s.note = r.getNote();
  return s;
}

void to_capnp(const FileEntry& s, schema::FileEntry::Builder b) {
  b.setPath(s.path);
  b.setType(s.type);
  b.setSize(s.size);
  b.setMode(s.mode);
  b.setMtimeUnixMs(s.mtime_unix_ms);
  b.setLinkTarget(s.link_target);
}
FileEntry from_capnp(schema::FileEntry::Reader r) {
  return FileEntry{r.getPath(), r.getType(),        r.getSize(),
                   r.getMode(), r.getMtimeUnixMs(), r.getLinkTarget()};
}
void to_capnp(const Process& s, schema::ProcessInfo::Builder b) {
  b.setPid(s.pid);
  b.setPpid(s.ppid);
  b.setCommand(s.command);
  b.setState(s.state);
  b.setRssBytes(s.rss_bytes);
  b.setStartedUnixMs(s.started_unix_ms);
  b.setContext(s.context);
}
Process from_capnp(schema::ProcessInfo::Reader r) {
  return Process{r.getPid(),      r.getPpid(),          r.getCommand(), r.getState(),
                 r.getRssBytes(), r.getStartedUnixMs(), r.getContext()};
}
void to_capnp(const Snapshot& s, schema::SnapshotInfo::Builder b) {
  b.setName(s.name);
  b.setOwner(s.owner);
  b.setTier(s.tier);
  b.setSourceSandboxId(s.source_sandbox_id);
  b.setCreatedUnixMs(s.created_unix_ms);
  b.setMemoryBytes(s.memory_bytes);
  b.setStateBytes(s.state_bytes);
}
Snapshot from_capnp(schema::SnapshotInfo::Reader r) {
  return Snapshot{
      r.getName(),          r.getOwner(),       r.getTier(),      r.getSourceSandboxId(),
      r.getCreatedUnixMs(), r.getMemoryBytes(), r.getStateBytes()};
}

// ---- the client

SandboxClient::SandboxClient(Client& client, std::string owner, ClientCallOptions options)
    : client_(client), owner_(std::move(owner)), options_(std::move(options)) {}

capnp::MallocMessageBuilder& SandboxClient::begin(const std::string& id) {
  mb_ = std::make_unique<capnp::MallocMessageBuilder>();
  auto r = bus::init_body<schema::SandboxRequest>(*mb_);
  r.setTraceId(options_.trace_id);
  r.setOwner(owner_);
  r.setSandboxId(id);
  return *mb_;
}
schema::SandboxRequest::Builder SandboxClient::request() {
  return mb_->getRoot<schema::SandboxRequest>();
}

Result<Client::Incoming> SandboxClient::send(const std::string& service, const ChunkFn& on_chunk) {
  Client::PartialFn partial;
  if (on_chunk) {
    partial = [&on_chunk](Client::Incoming& in) {
      auto c = in.body.root<schema::ExecChunk>();
      if (!c) return;
      auto d = c->getData();
      on_chunk(c->getStream(), {reinterpret_cast<const char*>(d.begin()), d.size()});
    };
  }
  auto r = client_.call(service, mb_.get(), options_.timeout, partial, options_.trace_id);
  mb_.reset();
  return r;
}
Result<Client::Incoming> SandboxClient::on_sandbox(const std::string& id, const ChunkFn& on_chunk) {
  return send(sandbox_service_for(id), on_chunk);
}

namespace {
// The reply's union, checked: the variant `want` or an error.
Result<schema::SandboxReply::Reader> reply_of(Result<Client::Incoming>& in,
                                              schema::SandboxReply::Which want, const char* what) {
  if (!in) return in.error();
  auto r = in->body.root<schema::SandboxReply>();
  if (!r) return r.error();
  if (r->which() != want) return wrong_reply(what);
  return r.value();
}
Result<Info> info_reply(Result<Client::Incoming> in) {
  auto r = reply_of(in, schema::SandboxReply::INFO, "info");
  if (!r) return r.error();
  return from_capnp(r->getInfo());
}
Result<std::vector<Info>> infos_reply(Result<Client::Incoming> in) {
  auto r = reply_of(in, schema::SandboxReply::INFOS, "infos");
  if (!r) return r.error();
  std::vector<Info> out;
  for (auto i : r->getInfos()) out.push_back(from_capnp(i));
  return out;
}
Result<std::vector<FileEntry>> entries_reply(Result<Client::Incoming> in) {
  auto r = reply_of(in, schema::SandboxReply::ENTRIES, "entries");
  if (!r) return r.error();
  std::vector<FileEntry> out;
  for (auto e : r->getEntries()) out.push_back(from_capnp(e));
  return out;
}
Result<FileEntry> entry_reply(Result<Client::Incoming> in) {
  auto r = entries_reply(std::move(in));
  if (!r) return r.error();
  if (r->size() != 1) return wrong_reply("single file entry");
  return r->front();
}
Status done_reply(Result<Client::Incoming> in) {
  auto r = reply_of(in, schema::SandboxReply::DONE, "done");
  if (!r) return r.error();
  return {};
}
Result<Snapshot> snapshot_reply(Result<Client::Incoming> in) {
  auto r = reply_of(in, schema::SandboxReply::SNAPSHOT, "snapshot");
  if (!r) return r.error();
  return from_capnp(r->getSnapshot());
}
}  // namespace

Result<Info> SandboxClient::create(const Spec& spec) {
  begin("");
  to_capnp(spec, request().initCreate());
  return info_reply(send(std::string(kSandboxService)));
}
Result<Info> SandboxClient::get(const std::string& id) {
  begin(id);
  request().setGet();
  return info_reply(on_sandbox(id));
}
Result<std::vector<Info>> SandboxClient::list(const std::vector<Label>& labels,
                                              bool include_destroyed) {
  begin("");
  auto l = request().initList();
  labels_to_capnp(labels, l.initLabels(static_cast<unsigned>(labels.size())));
  l.setIncludeDestroyed(include_destroyed);
  return infos_reply(send(std::string(kSandboxService)));
}
Result<ExecResult> SandboxClient::exec(const std::string& id, const ExecSpec& spec,
                                       const ChunkFn& on_chunk) {
  begin(id);
  to_capnp(spec, request().initExec());
  auto in = on_sandbox(id, on_chunk);
  auto r = reply_of(in, schema::SandboxReply::EXEC_RESULT, "execResult");
  if (!r) return r.error();
  return from_capnp(r->getExecResult());
}
Status SandboxClient::restart_context(const std::string& id, const std::string& context,
                                      schema::Language language) {
  begin(id);
  auto c = request().initRestartContext();
  c.setContext(context);
  c.setLanguage(language);
  return done_reply(on_sandbox(id));
}
Result<FileEntry> SandboxClient::write_file(const std::string& id, const std::string& path,
                                            std::string_view data, uint32_t mode, bool append) {
  begin(id);
  auto w = request().initWriteFile();
  w.setPath(path);
  w.setData(bytes(data));
  w.setMode(mode);
  w.setAppend(append);
  return entry_reply(on_sandbox(id));
}
Result<FileData> SandboxClient::read_file(const std::string& id, const std::string& path,
                                          uint64_t offset, uint64_t length) {
  begin(id);
  auto f = request().initReadFile();
  f.setPath(path);
  f.setOffset(offset);
  f.setLength(length);
  auto in = on_sandbox(id);
  auto r = reply_of(in, schema::SandboxReply::FILE, "file");
  if (!r) return r.error();
  auto d = r->getFile();
  return FileData{d.getPath(), d.getOffset(), str(d.getData()), d.getSize(), d.getEof()};
}
Result<std::vector<FileEntry>> SandboxClient::list_files(const std::string& id,
                                                         const std::string& path, bool recursive) {
  begin(id);
  auto p = request().initListFiles();
  p.setPath(path);
  p.setRecursive(recursive);
  return entries_reply(on_sandbox(id));
}
Result<FileEntry> SandboxClient::stat_file(const std::string& id, const std::string& path) {
  begin(id);
  request().initStatFile().setPath(path);
  return entry_reply(on_sandbox(id));
}
Status SandboxClient::remove_file(const std::string& id, const std::string& path, bool recursive) {
  begin(id);
  auto p = request().initRemoveFile();
  p.setPath(path);
  p.setRecursive(recursive);
  return done_reply(on_sandbox(id));
}
Result<FileEntry> SandboxClient::make_dir(const std::string& id, const std::string& path,
                                          bool parents) {
  begin(id);
  auto p = request().initMakeDir();
  p.setPath(path);
  p.setRecursive(parents);
  return entry_reply(on_sandbox(id));
}
Result<std::vector<Process>> SandboxClient::processes(const std::string& id) {
  begin(id);
  request().setProcesses();
  auto in = on_sandbox(id);
  auto r = reply_of(in, schema::SandboxReply::PROCESSES, "processes");
  if (!r) return r.error();
  std::vector<Process> out;
  for (auto p : r->getProcesses()) out.push_back(from_capnp(p));
  return out;
}
Status SandboxClient::signal(const std::string& id, int32_t pid, int32_t signo) {
  begin(id);
  auto s = request().initSignal();
  s.setPid(pid);
  s.setSignal(signo);
  return done_reply(on_sandbox(id));
}
Result<Info> SandboxClient::keepalive(const std::string& id, uint32_t extend_ms) {
  begin(id);
  request().initKeepalive().setExtendMs(extend_ms);
  return info_reply(on_sandbox(id));
}
Result<Snapshot> SandboxClient::snapshot(const std::string& id, const std::string& name) {
  begin(id);
  request().initSnapshot().setName(name);
  return snapshot_reply(on_sandbox(id));
}
Result<std::vector<Snapshot>> SandboxClient::snapshots() {
  begin("");
  request().setSnapshots();
  auto in = send(std::string(kSandboxService));
  auto r = reply_of(in, schema::SandboxReply::SNAPSHOTS, "snapshots");
  if (!r) return r.error();
  std::vector<Snapshot> out;
  for (auto s : r->getSnapshots()) out.push_back(from_capnp(s));
  return out;
}
Status SandboxClient::delete_snapshot(const std::string& name) {
  begin("");
  request().initDeleteSnapshot().setName(name);
  return done_reply(send(std::string(kSandboxService)));
}
Result<std::vector<Info>> SandboxClient::fork(const std::string& id, uint32_t count,
                                              const std::vector<Label>& labels) {
  begin(id);
  auto f = request().initFork();
  f.setCount(count);
  labels_to_capnp(labels, f.initLabels(static_cast<unsigned>(labels.size())));
  return infos_reply(on_sandbox(id));
}
Result<Info> SandboxClient::pause(const std::string& id) {
  begin(id);
  request().setPause();
  return info_reply(on_sandbox(id));
}
Result<Info> SandboxClient::resume(const std::string& id) {
  begin(id);
  request().setResume();
  return info_reply(on_sandbox(id));
}
Result<Info> SandboxClient::destroy(const std::string& id) {
  begin(id);
  request().setDestroy();
  return info_reply(on_sandbox(id));
}

Result<std::vector<MountSync>> SandboxClient::sync(const std::string& id) {
  begin(id);
  request().setSync();
  auto in = on_sandbox(id);
  auto r = reply_of(in, schema::SandboxReply::SYNCED, "synced");
  if (!r) return r.error();
  std::vector<MountSync> out;
  for (auto m : r->getSynced()) out.push_back(from_capnp(m));
  return out;
}

}  // namespace nv::sandbox
