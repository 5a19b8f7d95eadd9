// enum_name.h — the schema's own name of a Cap'n Proto enum value ("maxIterations"), read by
// reflection from the compiled schema, so no hand-written switch can drift from the .capnp file.
#pragma once

#include <capnp/schema.h>

#include <string>

namespace nv {

// The enumerant's name as written in the .capnp file; "unknown(N)" for a value the schema does
// not define (a newer peer, a corrupt message).
template <class E>
std::string enum_name(E value) {
  auto enumerants = capnp::Schema::from<E>().getEnumerants();
  auto raw = static_cast<uint16_t>(value);
  if (raw >= enumerants.size()) return "unknown(" + std::to_string(raw) + ")";
  return enumerants[raw].getProto().getName().cStr();
}

}  // namespace nv
