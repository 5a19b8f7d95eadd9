// trace_id.h — UUID version 7 identifiers (RFC 9562): 48-bit Unix milliseconds, then random bits,
// so ids sort by creation time. Used for trace ids, event ids and VM ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nv {

// A new UUID v7 in canonical text form ("0193b3c4-5e6f-7abc-8def-0123456789ab").
std::string new_uuid_v7();
// Same, with an explicit time (for tests).
std::string new_uuid_v7(uint64_t unix_ms);
// True when `s` is canonical UUID text with version 7 and the RFC variant.
bool is_uuid_v7(std::string_view s);
// The millisecond timestamp inside a UUID v7 (0 if it is not one).
uint64_t uuid_v7_millis(std::string_view s);

}  // namespace nv
