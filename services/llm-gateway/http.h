// http.h — one libcurl easy handle, reused across requests so connections are kept alive.
// It runs inside a private multi handle (which owns the connection cache) so the wait for the
// server can be cut short: the loop wakes every cancel_poll_ms and asks should_cancel. (Inside
// curl_easy_perform the progress callback is only called about once a second while the server
// is silent, too slow to abandon a stalled model call when its caller gives up.)
//
// Deliberately small: a request is a method, URL, headers and body; the answer is a status, the
// body (or a streaming sink), Retry-After, and a classified transport failure. No logging here:
// headers may carry secrets.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nv::llm {

struct HttpRequest {
  std::string method = "POST";  // "GET" or "POST"
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  long connect_timeout_ms = 5'000;
  long timeout_ms = 60'000;  // the whole exchange
  size_t max_response_bytes = 8u << 20;
  // When set, a 2xx body is handed over piece by piece instead of collected; returning false
  // aborts the transfer (HttpFailure::aborted). Non-2xx bodies are always collected.
  std::function<bool(std::string_view)> on_body;
  // Polled while the transfer runs, every cancel_poll_ms at the latest; true aborts it
  // (HttpFailure::cancelled) and closes its connection, so the server sees the hang-up.
  std::function<bool()> should_cancel;
  long cancel_poll_ms = 100;
};

enum class HttpFailure {
  none,       // an HTTP answer arrived (any status)
  connect,    // refused / unreachable / connect timed out
  resolve,    // DNS failed
  timeout,    // connected, but the whole exchange took longer than timeout_ms
  dropped,    // the connection broke mid-exchange (reset, empty reply)
  too_large,  // the body passed max_response_bytes
  aborted,    // on_body returned false
  cancelled,  // should_cancel returned true
  other,      // any other libcurl error (bad URL, TLS, ...)
};

struct HttpResponse {
  HttpFailure failure = HttpFailure::none;
  std::string failure_text;  // libcurl's description when failure != none
  long status = 0;
  std::string body;                     // collected body (empty for a streamed 2xx)
  size_t body_bytes = 0;                // bytes received, streamed or not
  std::optional<double> retry_after_s;  // Retry-After in seconds (delta form only)
  bool any_body_delivered = false;      // on_body was called at least once
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResponse perform(const HttpRequest& request);

 private:
  void* easy_;   // CURL*, kept opaque so users need no curl headers
  void* multi_;  // CURLM* running easy_; holds the connection cache across requests
};

}  // namespace nv::llm
