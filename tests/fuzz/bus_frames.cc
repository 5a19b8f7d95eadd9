// bus_frames — fuzzes the bus framing and validation every service applies (common/frames.cc).
//
// Input: byte 0 holds flags (bit 0: routed, as on a ROUTER socket; bit 1: parse the body), then
// the multipart message as frames, each a 2-byte little-endian length and that many bytes (the
// last frame takes whatever is left). tests/fuzz/make_seeds.cc writes real messages this way.
// Checked: parse() never crashes, leaks or hits UB, and either succeeds or fills ParseError; a
// parsed body is read the way workers read it (root<T>() traverses the whole message).
#include <nv/schema/exec.capnp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/frames.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool routed = data[0] & 1;
  const bool parse_body = data[0] & 2;
  std::vector<zmq::message_t> frames;
  for (size_t i = 1; i < size;) {
    size_t n = size - i < 2 ? 0 : (data[i] | data[i + 1] << 8);
    i += size - i < 2 ? size - i : 2;
    if (n > size - i) n = size - i;
    frames.emplace_back(data + i, n);
    i += n;
  }
  nv::bus::Limits limits;
  limits.max_frame_bytes = 4096;  // small, so the fuzzer reaches the size checks
  nv::bus::Message msg;
  nv::bus::ParseError failure;
  if (!nv::bus::parse(frames, routed, limits, &msg, &failure, parse_body)) {
    if (failure.error.message.empty()) std::abort();  // every refusal says why
    return 0;
  }
  if (!msg.body.empty()) (void)msg.body.root<nv::schema::ExecRequest>();
  return 0;
}
