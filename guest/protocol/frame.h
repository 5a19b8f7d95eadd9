// frame.h — the guest protocol's framing, shared by the agent and the host channel.
//
// Wire format (schemas/guest.capnp): a 4-byte little-endian length N, then N bytes holding one
// Cap'n Proto message as a flat, unpacked array (segment table + segments, so N is a multiple
// of 8). Receivers bound N before buffering anything: N == 0 or N > cap ends the stream.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace nv::guest {

inline constexpr uint32_t kFrameHeaderBytes = 4;
// The host accepts guest frames up to this size by default (a chunk is at most 64 KiB of data).
inline constexpr uint32_t kDefaultGuestFrameCap = 1u << 20;
// The agent accepts host frames up to this size (PutFile carries whole files).
inline constexpr uint32_t kDefaultHostFrameCap = 64u << 20;
// Chunk data per frame, both directions agree on it (guest.capnp: Chunk.data at most 64 KiB).
inline constexpr size_t kMaxChunkBytes = 64u << 10;
// The end of each output stream kept beyond the output cap (GuestExec.tailBytes): the default
// and the most a host may ask for (two tails and a result fit in one 1 MiB guest frame).
inline constexpr uint32_t kDefaultTailBytes = 64u << 10;
inline constexpr uint32_t kMaxTailBytes = 256u << 10;

// Serializes `message` as one frame (header + flat array).
std::string encode_frame(capnp::MessageBuilder& message);

// Incremental decoder: feed it bytes as they arrive, take whole frames out.
class FrameDecoder {
 public:
  enum class Status {
    need_more,    // no complete frame buffered yet
    frame,        // `out` holds one frame's words
    zero_length,  // a header announced N == 0: the stream is unusable
    oversized,    // a header announced N > cap: the stream is unusable
    misaligned,   // N is not a multiple of 8: cannot be a flat Cap'n Proto message
  };

  explicit FrameDecoder(uint32_t max_frame_bytes) : max_(max_frame_bytes) {}

  void feed(const void* data, size_t n);
  // Takes the next frame out of the buffer. After an error status the decoder stays in error
  // (call reset() when a new stream starts).
  Status next(kj::Array<capnp::word>& out);
  void reset();

  size_t buffered() const { return buf_.size() - pos_; }
  // The length announced by the last header seen (for error messages).
  uint32_t announced() const { return announced_; }
  uint32_t max_frame_bytes() const { return max_; }

 private:
  uint32_t max_;
  std::string buf_;
  size_t pos_ = 0;
  uint32_t announced_ = 0;
  Status sticky_ = Status::need_more;
};

const char* to_string(FrameDecoder::Status s);

// One received message, owning its words. `parse` validates the segment table, the root
// pointer and that the message spans the whole frame; readers of fields must still be prepared
// for kj::Exception on deeper malformation (catch at the dispatch boundary).
class ParsedMessage {
 public:
  // Returns nullptr and sets `error` when the frame is not a valid message.
  static std::unique_ptr<ParsedMessage> parse(kj::Array<capnp::word> words, std::string& error);

  template <typename T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }

 private:
  ParsedMessage() = default;
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

// kj::Exception/std::exception text for error replies, bounded in length.
std::string describe_current_exception();

}  // namespace nv::guest
