// json.h — Cap'n Proto messages as JSON for the --json output of the tools (nv-submit, nv-audit,
// nv status): the shape of capnp's JsonCodec (field names as in the schema, lowerCamelCase;
// enums by name; only the active member of a union; pointer fields only when set; Data as an
// array of byte values), with one difference: 64-bit integers are JSON numbers, exact (capnp's
// codec writes them as strings). Non-finite floats become null (JSON has no NaN).
#pragma once

#include <capnp/dynamic.h>

#include <string>

namespace nv {

std::string to_json(capnp::DynamicStruct::Reader message);

template <class Reader>
std::string to_json(Reader message) {
  return to_json(capnp::DynamicStruct::Reader(capnp::toDynamic(message)));
}

}  // namespace nv
