// json_depth.h — a nesting bound for JSON that comes from outside (model servers, model text).
//
// RapidJSON's reader (by default) and its writer (Value::Accept) recurse once per nesting level:
// a body of a few hundred thousand '[' overflows the stack and kills the process. Callers check
// the text with json_nesting_exceeds() before parsing it. Header-only: nv_llm_client does not
// link nv_common.
#pragma once

#include <cstddef>
#include <string_view>

namespace nv {

// Deeper than any reply or tool-argument object a model sends; far below what the stack holds.
inline constexpr size_t kMaxJsonDepth = 128;

// True when `text` has more than `max_depth` arrays/objects open at once. Brackets inside JSON
// strings do not count. Linear, no allocation; says nothing else about validity.
inline bool json_nesting_exceeds(std::string_view text, size_t max_depth = kMaxJsonDepth) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

}  // namespace nv
