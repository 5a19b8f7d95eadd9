// tool_output.cc — see tool_output.h.
#include "tool_output.h"

#include <algorithm>

#include "common/utf8.h"

namespace nv::agent {

namespace {

namespace s = nv::schema;

// How far back (as a share of a piece) a cut may move to fall on a line end.
constexpr size_t kLineSnapDivisor = 4;

std::string_view view(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

// Text as the model sees it: at most `n` code points from the start of `bytes`; `used` gets
// the raw bytes shown.
std::string head_text(std::string_view bytes, size_t n, size_t* used) {
  size_t cut = utf8::sanitized_prefix(bytes, n);
  if (cut > 0 && cut < bytes.size()) {
    size_t nl = bytes.rfind('\n', cut - 1);
    if (nl != std::string_view::npos && nl + 1 >= cut - cut / kLineSnapDivisor) cut = nl + 1;
  }
  *used = cut;
  return utf8::sanitize(bytes.substr(0, cut));
}

// At most `n` code points from the end of `bytes`.
std::string tail_text(std::string_view bytes, size_t n, size_t* used) {
  const size_t len = utf8::sanitized_length(bytes);
  size_t start = len > n ? utf8::sanitized_prefix(bytes, len - n) : 0;
  if (start > 0) {
    size_t nl = bytes.find('\n', start - 1);  // a line that begins at or after the cut
    if (nl != std::string_view::npos && nl + 1 < bytes.size() &&
        nl + 1 <= start + (bytes.size() - start) / kLineSnapDivisor) {
      start = nl + 1;
    }
  }
  *used = bytes.size() - start;
  return utf8::sanitize(bytes.substr(start));
}

void end_line(std::string& s) {
  if (!s.empty() && s.back() != '\n') s += '\n';
}

// The line that stands for what is not shown; after a line end of its own.
std::string marker(uint64_t bytes, std::string_view name, const std::string& before) {
  return std::string(before.empty() || before.back() == '\n' ? "" : "\n") + "[… " +
         std::to_string(bytes) + " bytes of " + std::string(name) + " left out …]\n";
}

// Code points a stream would need to be shown whole (head and tail, without trims).
size_t wanted(const StreamBytes& s) {
  return utf8::sanitized_length(s.head) + utf8::sanitized_length(s.tail);
}

}  // namespace

std::string render_stream(const StreamBytes& st, size_t budget, std::string_view name) {
  // A head cut by the sandbox's cap may end inside a character, and the tail begin inside one:
  // those bytes belong to the left-out part, not to U+FFFD in the text.
  const bool gap = st.total > st.head.size() + st.tail.size() || !st.tail.empty();
  if (!gap) {
    // The whole stream is at hand: its start and its end, each half of the budget.
    if (utf8::sanitized_length(st.head) <= budget) return utf8::sanitize(st.head);
    size_t head_used = 0, tail_used = 0;
    std::string out = head_text(st.head, budget / 2, &head_used);
    std::string end = tail_text(st.head.substr(head_used), budget - budget / 2, &tail_used);
    return out + marker(st.head.size() - head_used - tail_used, name, out) + end;
  }
  std::string_view head = st.head, tail = st.tail;
  if (gap) head = head.substr(0, utf8::complete_prefix(head));
  if (!tail.empty()) tail = tail.substr(utf8::next_boundary(tail, 0));

  const size_t head_len = utf8::sanitized_length(head), tail_len = utf8::sanitized_length(tail);
  size_t head_n = head_len, tail_n = tail_len;
  if (head_len + tail_len > budget) {
    // Equal shares; what one side does not need goes to the other.
    head_n = std::min(head_len, budget - std::min(tail_len, budget / 2));
    tail_n = std::min(tail_len, budget - head_n);
  }
  size_t head_used = 0, tail_used = 0;
  std::string out = head_text(head, head_n, &head_used);
  std::string end = tail_text(tail, tail_n, &tail_used);
  // Whatever the program wrote that is not shown: the gap the sandbox left and the cuts here.
  const uint64_t shown = head_used + tail_used;
  const uint64_t total = std::max<uint64_t>(st.total, st.head.size() + st.tail.size());
  if (total > shown) out += marker(total - shown, name, out);
  return out + end;
}

std::string render_tool_output(s::ExecResult::Reader r, const ToolOutputOptions& o) {
  StreamBytes out{view(r.getStdout()), view(r.getStdoutTail()), r.getStdoutBytes()};
  StreamBytes err{view(r.getStderr()), view(r.getStderrTail()), r.getStderrBytes()};
  const bool complete = out.total <= out.head.size() && err.total <= err.head.size() &&
                        out.tail.empty() && err.tail.empty() && !r.getTruncated();
  const size_t out_len = wanted(out), err_len = wanted(err);
  const size_t budget = std::max<size_t>(o.max_chars, 64);

  // A quiet success that fits: its stdout is the answer, as it is.
  if (r.getExitCode() == 0 && r.getSignal() == 0 && !r.getTimedOut() && !r.getHostKilled() &&
      err.total == 0 && complete && out_len <= budget) {
    if (out.head.empty()) return "(the program printed nothing and exited with code 0)";
    return utf8::sanitize(out.head);
  }

  // 1. How it ended.
  std::string text;
  if (r.getTimedOut()) {
    text = "the program was stopped: it ran past its time limit";
    double ms = r.getDurationMs() > 0 && (r.getWallMs() <= 0 || r.getDurationMs() <= r.getWallMs())
                    ? r.getDurationMs()
                    : r.getWallMs();
    if (ms > 0) text += " (after " + std::to_string(static_cast<long>(ms)) + " ms)";
    text += "\n";
  } else if (r.getSignal() != 0) {
    text = "the program was killed by signal " + std::to_string(r.getSignal()) + "\n";
  } else {
    text = "exit status: " + std::to_string(r.getExitCode()) + "\n";
  }
  if (r.getHostKilled() && r.getNote().size() > 0) {
    text += "the sandbox stopped it: " + utf8::sanitize(r.getNote().cStr()) + "\n";
  }

  // 2. The budget: stderr keeps at least half (or all it needs), stdout takes the rest.
  size_t err_n = std::min(err_len, std::max(budget / 2, budget - std::min(budget, out_len)));
  size_t out_n = std::min(out_len, budget - err_n);
  err_n = std::min(err_len, budget - out_n);

  // 3. The streams.
  auto section = [&](const StreamBytes& st, size_t n, const char* name) {
    if (st.total == 0 && st.head.empty() && st.tail.empty()) return;
    text += std::string(name) + " (" + std::to_string(st.total) + " bytes):\n";
    text += render_stream(st, n, name);
    end_line(text);
  };
  section(out, out_n, "stdout");
  section(err, err_n, "stderr");
  if (out.total == 0 && err.total == 0) text += "(the program printed nothing)\n";
  return text;
}

}  // namespace nv::agent
