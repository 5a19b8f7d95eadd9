#include "sandbox_validate.h"

#include <string>

#include "common/frames.h"

namespace nv::exec {

namespace {

using R = schema::SandboxRequest;

void check_name(std::string_view what, capnp::Text::Reader name, Problems& p) {
  std::string_view n(name.cStr(), name.size());
  if (!valid_name(n)) {
    p.add(std::string(what) + " " + quote(n) + " is not 1..63 bytes of [a-zA-Z0-9._-]");
  }
}

void check_labels(std::string_view what, capnp::List<schema::Label>::Reader labels,
                  const SandboxLimits& l, Problems& p) {
  p.over(std::string(what) + " count", labels.size(), l.max_labels);
  for (unsigned i = 0; i < labels.size() && i <= l.max_labels; ++i) {
    std::string at = std::string(what) + "[" + std::to_string(i) + "]";
    check_name(at + " key", labels[i].getKey(), p);
    p.over(at + " value size in bytes", labels[i].getValue().size(), 255);
  }
}

void check_path(std::string_view what, capnp::Text::Reader path, const SandboxLimits& l,
                Problems& p) {
  if (auto why = path_problem({path.cStr(), path.size()}, l.max_path_bytes); !why.empty()) {
    p.add(std::string(what) + " " + quote(path.cStr()) + " " + why);
  }
}

void check_context_language(schema::Language lang, Problems& p) {
  if (lang != schema::Language::PYTHON && lang != schema::Language::JAVASCRIPT) {
    p.add("a code context runs python(1) or javascript(4), not language " +
          std::to_string(static_cast<unsigned>(lang)));
  }
}

void check_spec(schema::SandboxSpec::Reader s, const SandboxLimits& l, Problems& p) {
  check_tier(s.getTier(), p);
  std::string_view image(s.getImage().cStr(), s.getImage().size());
  if (!image.empty() && image != "default") {
    p.add("image " + quote(image) + " is not known (only \"default\")");
  }
  check_env(s.getEnv(), l.exec, p);
  if (s.getCwd().size() > 0) check_path("cwd", s.getCwd(), l, p);
  p.over("lifetimeMs", s.getLifetimeMs(), l.max_lifetime_ms);
  p.over("idleTimeoutMs", s.getIdleTimeoutMs(), l.max_lifetime_ms);
  check_labels("labels", s.getLabels(), l, p);
  if (s.getFromSnapshot().size() > 0) check_name("fromSnapshot", s.getFromSnapshot(), p);
  // Mount paths are checked with the executor's roots (sandbox_mounts.h); the count here.
  p.over("mounts count", s.getMounts().size(), 8);
  if (s.hasInference()) {
    auto models = s.getInference().getModels();
    p.over("inference.models count", models.size(), 16);
    for (unsigned i = 0; i < models.size() && i < 16; ++i) {
      std::string_view m(models[i].cStr(), models[i].size());
      bool printable = !m.empty() && m.size() <= 128;
      for (char ch : m) printable = printable && ch > 0x20 && ch < 0x7f;
      if (!printable) {
        p.add("inference.models[" + std::to_string(i) + "] " + quote(m) +
              " is not 1..128 printable bytes without spaces");
      }
    }
  }
}

void check_exec(schema::SandboxExec::Reader e, const SandboxLimits& l, Problems& p) {
  if (e.getLanguage() != schema::Language::UNSET) check_language(e.getLanguage(), p);
  if (e.getCode().size() == 0) p.add("code is empty");
  p.over("code size in bytes", e.getCode().size(), l.exec.max_code_bytes);
  p.over("stdin size in bytes", e.getStdin().size(), l.exec.max_stdin_bytes);
  check_env(e.getEnv(), l.exec, p);
  if (e.getCwd().size() > 0) check_path("cwd", e.getCwd(), l, p);
  Effective eff;
  check_run(e.getTimeoutMs(), e.getOutputCapBytes(), e.getTailBytes(), l.exec, eff, p);
  if (e.getContext().size() > 0) {
    check_name("context", e.getContext(), p);
    check_context_language(e.getLanguage(), p);
    if (e.getBackground()) p.add("a code context cannot run in the background");
  }
}

}  // namespace

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 63) return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status validate(R::Reader r, const SandboxLimits& l) {
  Problems p;
  auto owner = r.getOwner();
  if (owner.size() == 0) p.add("owner is empty");
  p.over("owner size in bytes", owner.size(), l.max_owner_bytes);
  if (std::string_view(owner.cStr(), owner.size()).find('\0') != std::string_view::npos) {
    p.add("owner contains a NUL byte");
  }
  p.over("sandboxId size in bytes", r.getSandboxId().size(), 128);
  p.over("traceId size in bytes", r.getTraceId().size(), 128);
  switch (r.which()) {
    case R::CREATE:
      check_spec(r.getCreate(), l, p);
      break;
    case R::GET:
    case R::PROCESSES:
    case R::SNAPSHOTS:
    case R::PAUSE:
    case R::RESUME:
    case R::DESTROY:
    case R::SYNC:
      break;
    case R::LIST:
      check_labels("labels", r.getList().getLabels(), l, p);
      break;
    case R::EXEC:
      check_exec(r.getExec(), l, p);
      break;
    case R::RESTART_CONTEXT:
      check_name("context", r.getRestartContext().getContext(), p);
      check_context_language(r.getRestartContext().getLanguage(), p);
      break;
    case R::WRITE_FILE: {
      auto w = r.getWriteFile();
      check_path("path", w.getPath(), l, p);
      p.over("data size in bytes", w.getData().size(), l.max_file_bytes);
      if (w.getMode() > 07777) {
        p.add("mode " + std::to_string(w.getMode()) + " is not a permission mode (0..07777)");
      }
      break;
    }
    case R::READ_FILE: {
      auto f = r.getReadFile();
      check_path("path", f.getPath(), l, p);
      p.over("length", f.getLength(), l.max_file_bytes);
      if (f.getOffset() > (uint64_t{1} << 62)) p.add("offset is out of range");
      break;
    }
    case R::LIST_FILES:
      check_path("path", r.getListFiles().getPath(), l, p);
      break;
    case R::STAT_FILE:
      check_path("path", r.getStatFile().getPath(), l, p);
      break;
    case R::REMOVE_FILE:
      check_path("path", r.getRemoveFile().getPath(), l, p);
      break;
    case R::MAKE_DIR:
      check_path("path", r.getMakeDir().getPath(), l, p);
      break;
    case R::SIGNAL: {
      auto s = r.getSignal();
      if (s.getPid() <= 1)
        p.add("pid " + std::to_string(s.getPid()) + " is not a process to signal");
      if (s.getSignal() < 1 || s.getSignal() > 64) {
        p.add("signal " + std::to_string(s.getSignal()) + " is not in 1..64");
      }
      break;
    }
    case R::KEEPALIVE:
      p.over("extendMs", r.getKeepalive().getExtendMs(), l.max_lifetime_ms);
      break;
    case R::SNAPSHOT:
      check_name("name", r.getSnapshot().getName(), p);
      break;
    case R::DELETE_SNAPSHOT:
      check_name("name", r.getDeleteSnapshot().getName(), p);
      break;
    case R::FORK: {
      auto f = r.getFork();
      if (f.getCount() < 1 || f.getCount() > l.max_fork) {
        p.add("count " + std::to_string(f.getCount()) + " is not in 1.." +
              std::to_string(l.max_fork));
      }
      check_labels("labels", f.getLabels(), l, p);
      break;
    }
    default:
      p.add("operation " + std::to_string(static_cast<unsigned>(r.which())) +
            " is not one this executor knows");
  }
  if (!p.empty()) return p.error("SandboxRequest");
  return {};
}

}  // namespace nv::exec
