#include "json.h"

#include <capnp/schema.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

namespace nv {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_value(Writer& w, const capnp::DynamicValue::Reader& v);

void write_struct(Writer& w, capnp::DynamicStruct::Reader s) {
  w.StartObject();
  for (auto field : s.getSchema().getNonUnionFields()) {
    if (field.getType().isStruct() || field.getType().isList() || field.getType().isText() ||
        field.getType().isData() || field.getType().isAnyPointer()) {
      if (!s.has(field)) continue;
    }
    w.Key(field.getProto().getName().cStr());
    write_value(w, s.get(field));
  }
  KJ_IF_MAYBE (active, s.which()) {
    w.Key(active->getProto().getName().cStr());
    write_value(w, s.get(*active));
  }
  w.EndObject();
}

void write_value(Writer& w, const capnp::DynamicValue::Reader& v) {
  switch (v.getType()) {
    case capnp::DynamicValue::VOID:
      w.Null();
      break;
    case capnp::DynamicValue::BOOL:
      w.Bool(v.as<bool>());
      break;
    case capnp::DynamicValue::INT:
      w.Int64(v.as<int64_t>());
      break;
    case capnp::DynamicValue::UINT:
      w.Uint64(v.as<uint64_t>());
      break;
    case capnp::DynamicValue::FLOAT: {
      double d = v.as<double>();
      if (std::isfinite(d))
        w.Double(d);
      else
        w.Null();
      break;
    }
    case capnp::DynamicValue::TEXT: {
      auto t = v.as<capnp::Text>();
      w.String(t.cStr(), static_cast<rapidjson::SizeType>(t.size()));
      break;
    }
    case capnp::DynamicValue::DATA: {
      w.StartArray();
      for (auto b : v.as<capnp::Data>()) w.Uint(b);
      w.EndArray();
      break;
    }
    case capnp::DynamicValue::LIST: {
      w.StartArray();
      for (auto e : v.as<capnp::DynamicList>()) write_value(w, e);
      w.EndArray();
      break;
    }
    case capnp::DynamicValue::ENUM: {
      auto e = v.as<capnp::DynamicEnum>();
      KJ_IF_MAYBE (en, e.getEnumerant()) {
        w.String(en->getProto().getName().cStr());
      } else {
        w.Uint(e.getRaw());
      }
      break;
    }
    case capnp::DynamicValue::STRUCT:
      write_struct(w, v.as<capnp::DynamicStruct>());
      break;
    default:
      w.Null();
      break;  // capabilities, AnyPointer: nothing the tools print
  }
}

}  // namespace

std::string to_json(capnp::DynamicStruct::Reader message) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write_struct(w, message);
  return buf.GetString();
}

}  // namespace nv
