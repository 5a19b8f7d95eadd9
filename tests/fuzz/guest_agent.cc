// guest_agent — fuzzes the agent's side of the guest protocol (guest/agent/session.cc): the
// bytes a host sends, through frame decoding, Cap'n Proto validation and request dispatch.
//
// Input: the host → agent byte stream (length-prefixed frames, guest/protocol/frame.h), fed in
// one call. The Session runs with a fake SystemOps, no runnable language (argv[0] is relative,
// so run_exec refuses before fork after every check of the request ran), no writable root and
// a 0-byte GetFile cap: a request is validated and answered but touches nothing.
// Checked: no crash, leak or UB; everything the agent writes back is whole frames of valid
// GuestMessages.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fake_system_ops.h"
#include "guest/agent/session.h"

namespace {

using namespace nv::guest;

agent::AgentConfig fuzz_config() {
  agent::AgentConfig c;
  for (auto& l : c.languages) l.program = "nv-fuzz-not-run";  // relative: never executed
  c.writable_roots.clear();
  c.max_get_file_bytes = 0;
  c.max_host_frame = 1u << 20;
  return c;
}

// What the agent wrote must decode as whole, valid GuestMessages.
void check_replies(const std::string& out) {
  FrameDecoder d(kDefaultHostFrameCap);
  d.feed(out.data(), out.size());
  for (;;) {
    kj::Array<capnp::word> words;
    auto st = d.next(words);
    if (st == FrameDecoder::Status::need_more) break;
    if (st != FrameDecoder::Status::frame) std::abort();
    std::string err;
    auto m = ParsedMessage::parse(kj::mv(words), err);
    if (!m) std::abort();
    (void)m->root<nv::schema::GuestMessage>().which();
  }
  if (d.buffered() != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const agent::AgentConfig config = fuzz_config();
  nv::fuzz::FakeSystemOps ops;
  std::string out;
  agent::Session session(config, ops, [&](std::string_view b) {
    out.append(b);
    return true;
  });
  session.on_connect();
  (void)session.on_bytes(reinterpret_cast<const char*>(data), size);
  check_replies(out);
  return 0;
}
