// utf8.cc — see utf8.h. The table of well-formed sequences is the Unicode Standard's
// Table 3-7 (ch. 3.9); the decoder walks it byte by byte, which yields the maximal subparts.
#include "utf8.h"

namespace nv::utf8 {

namespace {

// Length of the well-formed sequence starting at s[i] (1..4), or 0 when the bytes there are
// ill-formed; `subpart` then gets the length of the maximal subpart to replace (>= 1).
size_t sequence_at(std::string_view s, size_t i, size_t* subpart) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t need;                         // bytes in the whole sequence
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte (Table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
    if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    *subpart = 1;  // 80..C1, F5..FF never start a sequence
    return 0;
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const unsigned char x = b(k);
    const bool in_range = k == 1 ? (x >= lo && x <= hi) : (x >= 0x80 && x <= 0xBF);
    if (!in_range) break;
  }
  if (k == need) return need;
  *subpart = k;  // the lead byte and the continuation bytes that were still possible
  return 0;
}

}  // namespace

bool valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t sub = 0, n = sequence_at(s, i, &sub);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t run = 0;  // start of the current well-formed run, appended in one go
  for (size_t i = 0; i < s.size();) {
    size_t sub = 0, n = sequence_at(s, i, &sub);
    if (n > 0) {
      i += n;
      continue;
    }
    out.append(s.substr(run, i - run));
    out.append(kReplacement);
    i += sub;
    run = i;
  }
  out.append(s.substr(run));
  return out;
}

size_t complete_prefix(std::string_view s) {
  // Only the last 3 bytes can hold an unfinished sequence.
  size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t i = start; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0xC2 || c > 0xF4) continue;
    size_t sub = 0;
    if (sequence_at(s, i, &sub) == 0 && i + sub == s.size()) return i;  // cut short, not wrong
  }
  return s.size();
}

size_t next_boundary(std::string_view s, size_t pos) {
  size_t i = pos;
  while (i < s.size() && i < pos + 3 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
  return i;
}

size_t sanitized_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) {
    size_t sub = 0, len = sequence_at(s, i, &sub);
    i += len > 0 ? len : sub;
  }
  return n;
}

size_t sanitized_prefix(std::string_view s, size_t n) {
  size_t i = 0;
  for (size_t k = 0; k < n && i < s.size(); ++k) {
    size_t sub = 0, len = sequence_at(s, i, &sub);
    i += len > 0 ? len : sub;
  }
  return i;
}

}  // namespace nv::utf8
