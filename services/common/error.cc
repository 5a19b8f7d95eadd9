#include "error.h"

#include <capnp/schema.h>

namespace nv {

std::string code_name(ErrorCode code) {
  auto schema = capnp::Schema::from<ErrorCode>();
  auto enumerants = schema.getEnumerants();
  auto raw = static_cast<uint16_t>(code);
  if (raw < enumerants.size()) return enumerants[raw].getProto().getName();
  return "code" + std::to_string(raw);
}

bool valid_code(uint16_t raw) {
  return raw < capnp::Schema::from<ErrorCode>().getEnumerants().size();
}

std::string Error::to_string() const {
  std::string s = code_name(code) + ": " + message;
  if (!service.empty()) s = service + ": " + s;
  return s;
}

void Error::to_capnp(schema::Error::Builder b) const {
  b.setCode(code);
  b.setMessage(message);
  b.setRetryable(retryable);
  b.setService(service);
  b.setQueueLength(queue_length);
  b.setEstimatedWaitMs(estimated_wait_ms);
}

Error Error::from_capnp(schema::Error::Reader r) {
  auto raw = static_cast<uint16_t>(r.getCode());
  Error e;
  e.code = valid_code(raw) ? r.getCode() : ErrorCode::INTERNAL;
  e.message = r.getMessage();
  e.retryable = r.getRetryable();
  e.service = r.getService();
  e.queue_length = r.getQueueLength();
  e.estimated_wait_ms = r.getEstimatedWaitMs();
  return e;
}

}  // namespace nv
