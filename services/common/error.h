// error.h — the typed error every NeuroVisor API returns, and a small Result<T>.
//
// An nv::Error mirrors common.capnp's Error: a code a program can act on and a message a person
// can act on. Exceptions never cross a service's dispatch boundary; they become Errors there.
#pragma once

#include <nv/schema/common.capnp.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace nv {

using ErrorCode = schema::Error::Code;

struct Error {
  ErrorCode code = ErrorCode::INTERNAL;
  std::string message;
  bool retryable = false;
  std::string service;  // who produced it ("" = this process)
  // overloaded only: requests queued ahead and the estimated wait for a worker (ms).
  uint32_t queue_length = 0;
  uint32_t estimated_wait_ms = 0;

  // "timedOut: no worker answered in 5000 ms"
  std::string to_string() const;
  void to_capnp(schema::Error::Builder b) const;
  static Error from_capnp(schema::Error::Reader r);
};

// The camelCase schema name of a code ("timedOut"), or "code<N>" for values out of range.
std::string code_name(ErrorCode code);
// Whether a raw enum value read off the wire is a defined code.
bool valid_code(uint16_t raw);

inline Error make_error(ErrorCode code, std::string message, bool retryable = false) {
  return Error{code, std::move(message), retryable, {}, 0, 0};
}

// Result<T>: a value or an Error. Kept tiny; C++23's std::expected is not available to us.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Status: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : e_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *e_; }

 private:
  std::optional<Error> e_;
};

}  // namespace nv
