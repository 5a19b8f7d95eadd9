// utf8.h — the one place where program bytes become text.
//
// Programs print bytes; the model request, `nv-exec --json`, `nv-submit --json`, events and the
// audit log carry text, which must be valid UTF-8 (RFC 3629: no surrogates U+D800..U+DFFF, no
// overlong forms, nothing past U+10FFFF). Every such place calls sanitize(); raw output (nv-exec
// without --json, TaskProgress.output on a terminal) stays byte-exact.
//
// Replacement rule: each *maximal subpart* of an ill-formed sequence becomes one U+FFFD — the
// practice the Unicode Standard recommends (ch. 3.9, "U+FFFD Substitution of Maximal
// Subparts") and the one the WHATWG Encoding Standard's UTF-8 decoder (every browser,
// TextDecoder, Python's `bytes.decode("utf-8", "replace")`) follows. A maximal subpart is the
// longest prefix of a well-formed sequence that the bytes start with, or a single byte when
// none starts there. Examples (tests/unit/utf8_test.cc):
//   "A\xff\xfeB\xc3\n"       → "A\uFFFD\uFFFDB\uFFFD\n"   stray bytes, a cut-off lead byte
//   "S\xed\xa0\x80E\n"       → "S\uFFFD\uFFFD\uFFFDE\n"    encoded surrogate: 3 replacements
//   "O\xe0\x80\xafK\n"       → "O\uFFFD\uFFFD\uFFFDK\n"    overlong '/': 3 replacements
//   "F\xf5\x80\x80\x80G\n"   → "F\uFFFD\uFFFD\uFFFD\uFFFDG\n"  past U+10FFFF: 4 replacements
//   "\xf0\x9f\x98X"          → "\uFFFDX"                   a truncated 4-byte form: 1
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace nv::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// True when `s` is well-formed UTF-8 (RFC 3629).
bool valid(std::string_view s);

// `s` with every maximal subpart of an ill-formed sequence replaced by U+FFFD; well-formed
// input comes back unchanged.
std::string sanitize(std::string_view s);

// The length of the longest prefix of `s` that does not end inside a sequence that more bytes
// could still complete (for text cut at an arbitrary byte: a stream chunk, a buffer's head).
// Bytes already ill-formed are not withheld.
size_t complete_prefix(std::string_view s);

// Offset of the first byte at or after `pos` that does not continue a sequence begun before
// it (at most 3 continuation bytes skipped): where text cut at an arbitrary byte (a buffer's
// tail) may start without a broken character in front.
size_t next_boundary(std::string_view s, size_t pos);

// Code points in sanitize(s) (a replacement counts as one), without building it.
size_t sanitized_length(std::string_view s);

// How many bytes of `s` make the first `n` code points of sanitize(s) (all of `s` when it has
// fewer): where to cut raw bytes so that the cut text shows exactly `n` code points.
size_t sanitized_prefix(std::string_view s, size_t n);

}  // namespace nv::utf8
