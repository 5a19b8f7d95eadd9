// utf8 — fuzzes the one UTF-8 validator (services/common/utf8.h) that turns program bytes into
// text for the model request, nv-exec/nv-submit --json, events and the audit log.
//
// Input: any bytes. Checked: sanitize() always yields well-formed UTF-8 and is the identity on
// well-formed input and idempotent; complete_prefix() and next_boundary() stay in range and cut
// only where sanitize() of the parts agrees with valid().
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string out = nv::utf8::sanitize(in);
  if (!nv::utf8::valid(out)) std::abort();
  if (nv::utf8::valid(in) && out != in) std::abort();
  if (nv::utf8::sanitize(out) != out) std::abort();
  const size_t prefix = nv::utf8::complete_prefix(in);
  if (prefix > in.size()) std::abort();
  if (nv::utf8::valid(in) && prefix != in.size()) std::abort();
  const size_t cut = nv::utf8::next_boundary(in, size / 2);
  if (cut < size / 2 || cut > in.size() || cut > size / 2 + 3) std::abort();
  return 0;
}
