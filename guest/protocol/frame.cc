// frame.cc — see frame.h.
#include "guest/protocol/frame.h"

#include <kj/exception.h>

#include <cstring>
#include <exception>

namespace nv::guest {

std::string encode_frame(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  std::string out;
  out.resize(kFrameHeaderBytes + bytes.size());
  // Little-endian length, independent of the host byte order.
  out[0] = static_cast<char>(n & 0xff);
  out[1] = static_cast<char>((n >> 8) & 0xff);
  out[2] = static_cast<char>((n >> 16) & 0xff);
  out[3] = static_cast<char>((n >> 24) & 0xff);
  std::memcpy(out.data() + kFrameHeaderBytes, bytes.begin(), bytes.size());
  return out;
}

void FrameDecoder::feed(const void* data, size_t n) {
  if (sticky_ != Status::need_more) return;  // a broken stream takes no more input
  // Compact once the consumed prefix dominates, so the buffer does not grow without bound.
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(static_cast<const char*>(data), n);
}

FrameDecoder::Status FrameDecoder::next(kj::Array<capnp::word>& out) {
  if (sticky_ != Status::need_more) return sticky_;
  if (buffered() < kFrameHeaderBytes) return Status::need_more;
  const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
  const uint32_t n = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                     static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  announced_ = n;
  // The length is checked before any of the body is waited for or buffered beyond it.
  if (n == 0) return sticky_ = Status::zero_length;
  if (n > max_) return sticky_ = Status::oversized;
  if (n % sizeof(capnp::word) != 0) return sticky_ = Status::misaligned;
  if (buffered() < kFrameHeaderBytes + n) return Status::need_more;
  // Copy into word-aligned storage: the stream buffer gives no alignment guarantee.
  out = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  std::memcpy(out.begin(), buf_.data() + pos_ + kFrameHeaderBytes, n);
  pos_ += kFrameHeaderBytes + n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return Status::frame;
}

void FrameDecoder::reset() {
  buf_.clear();
  pos_ = 0;
  announced_ = 0;
  sticky_ = Status::need_more;
}

const char* to_string(FrameDecoder::Status s) {
  switch (s) {
    case FrameDecoder::Status::need_more:
      return "need more bytes";
    case FrameDecoder::Status::frame:
      return "frame";
    case FrameDecoder::Status::zero_length:
      return "zero-length frame";
    case FrameDecoder::Status::oversized:
      return "frame longer than the cap";
    case FrameDecoder::Status::misaligned:
      return "frame length not a multiple of 8";
  }
  return "?";
}

std::unique_ptr<ParsedMessage> ParsedMessage::parse(kj::Array<capnp::word> words,
                                                    std::string& error) {
  std::unique_ptr<ParsedMessage> m(new ParsedMessage());
  m->words_ = kj::mv(words);
  try {
    capnp::ReaderOptions options;
    // Bounds the work a hostile message can cause (pointer amplification): a few times its size.
    options.traversalLimitInWords = m->words_.size() * 4 + 1024;
    options.nestingLimit = 32;
    m->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(m->words_.asPtr(), options);
    if (m->reader_->getEnd() != m->words_.end()) {
      error = "trailing bytes after the Cap'n Proto message";
      return nullptr;
    }
    // Validates the root pointer (a struct pointer inside the message) before anyone reads it.
    m->reader_->getRoot<capnp::AnyPointer>().getAs<capnp::AnyStruct>();
  } catch (...) {
    error = "malformed Cap'n Proto message: " + describe_current_exception();
    return nullptr;
  }
  return m;
}

std::string describe_current_exception() {
  std::string text;
  try {
    throw;
  } catch (const kj::Exception& e) {
    text = e.getDescription().cStr();
  } catch (const std::exception& e) {
    text = e.what();
  } catch (...) {
    text = "unknown exception";
  }
  if (text.size() > 300) text.resize(300);
  return text;
}

}  // namespace nv::guest
