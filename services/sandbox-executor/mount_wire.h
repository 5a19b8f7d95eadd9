// mount_wire.h — the records the executor and nv-mount-copier exchange over pipes (issue 15).
//
// A record: u32 little-endian length of what follows, u8 kind, then the kind's fields in order:
// u64 (8 bytes LE) and text (u32 length + bytes). At most kMaxRecord bytes; anything else is a
// protocol error. The same encoding stores a mount's manifest in the executor's registry.
//
// copy-in (copier → executor): first 'T' pages_bytes entries (a counting pass: the regular-file
//   bytes rounded up to 4 KiB pages, files + directories), then 'D' dir rel mode mtime_ns ino, 'F' file rel mode, then 'C' data
//   chunks (≤ 1 MiB each), then 'e' size mtime_ns ino (the file's fstat after reading);
//   'S' skipped text; 'Z' end (success); 'E' code text (failure; nothing more follows).
// sync (executor → copier): 'M' manifest rel dir host_size host_mtime_ns host_ino (all first),
//   then 'K' mkdir rel mode, 'W' write rel mode + 'C' chunks + 'e' (no fields) or 'a' why (abandoned: the
//   guest file went away while read; the copier drops its temp file), 'X' remove rel,
//   'Z' end. Copier → executor: 'w' written rel size mtime_ns ino (bytes), 'k' made dir rel mtime_ns ino,
//   'x' removed rel,
//   'S' skipped text, 'Z' done, 'E' code text.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace nv::mounts {

constexpr uint32_t kMaxRecord = 2u << 20;  // a record's bytes after the length
constexpr size_t kDataChunk = 1u << 20;    // 'C' data per record

// Error codes of 'E' (common.capnp values: the executor passes them on as is).
constexpr uint64_t kErrInternal = 1;
constexpr uint64_t kErrQuota = 34;

class RecordWriter {
 public:
  explicit RecordWriter(char kind) { buf_.assign(4, '\0'), buf_.push_back(kind); }
  RecordWriter& u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  RecordWriter& text(std::string_view s) {
    uint32_t n = static_cast<uint32_t>(s.size());
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>(n >> (8 * i)));
    buf_.append(s);
    return *this;
  }
  // The whole record, length prefix filled in.
  const std::string& done() {
    uint32_t n = static_cast<uint32_t>(buf_.size() - 4);
    for (int i = 0; i < 4; ++i) buf_[i] = static_cast<char>(n >> (8 * i));
    return buf_;
  }

 private:
  std::string buf_;
};

// Reads the fields of one record body (after the length): kind, then fields. Any read past the
// end sets bad() and returns zero / empty.
class RecordReader {
 public:
  explicit RecordReader(std::string_view body) : b_(body) {}
  char kind() { return take(1) ? b_[pos_ - 1] : '\0'; }
  uint64_t u64() {
    if (!take(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= uint64_t(static_cast<unsigned char>(b_[pos_ - 8 + i])) << (8 * i);
    return v;
  }
  std::string text() {
    if (!take(4)) return {};
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i)
      n |= uint32_t(static_cast<unsigned char>(b_[pos_ - 4 + i])) << (8 * i);
    if (!take(n)) return {};
    return std::string(b_.substr(pos_ - n, n));
  }
  bool bad() const { return bad_; }

 private:
  bool take(size_t n) {
    if (bad_ || b_.size() - pos_ < n) return !(bad_ = true);
    pos_ += n;
    return true;
  }
  std::string_view b_;
  size_t pos_ = 0;
  bool bad_ = false;
};

}  // namespace nv::mounts
