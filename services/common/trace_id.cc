#include "trace_id.h"

#include <sys/random.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <mutex>

namespace nv {
namespace {

void random_bytes(uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out + got, n - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string new_uuid_v7(uint64_t ms) {
  std::array<uint8_t, 16> b{};
  random_bytes(b.data(), b.size());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (40 - 8 * i));
  b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x70);  // version 7
  b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80);  // RFC 9562 variant
  char s[37];
  std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
  return s;
}

std::string new_uuid_v7() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return new_uuid_v7(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count()));
}

bool is_uuid_v7(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = (i == 8 || i == 13 || i == 18 || i == 23);
    if (dash != (s[i] == '-')) return false;
    if (!dash && hex_value(s[i]) < 0) return false;
  }
  if (s[14] != '7') return false;
  int variant = hex_value(s[19]);
  return variant >= 8 && variant <= 11;
}

uint64_t uuid_v7_millis(std::string_view s) {
  if (!is_uuid_v7(s)) return 0;
  uint64_t ms = 0;
  for (size_t i = 0; i < 13; ++i) {
    if (s[i] == '-') continue;
    ms = (ms << 4) | static_cast<uint64_t>(hex_value(s[i]));
  }
  return ms;
}

}  // namespace nv
