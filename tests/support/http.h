// http.h — a minimal HTTP/1.1 GET over a plain TCP socket, for tests that scrape /metrics or
// probe a service's HTTP endpoint. Loopback and test use only: no TLS, no redirects, no chunked
// bodies beyond what a `Connection: close` response sends until EOF.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace nv::test {

struct HttpResponse {
  int status = 0;       // 200, 404, ...
  std::string headers;  // the raw header block (status line excluded)
  std::string body;
};

// GET http://host:port/path. nullopt when the connection fails, times out, or the answer is
// not HTTP. `host` is an IPv4 address such as "127.0.0.1".
std::optional<HttpResponse> http_get(
    const std::string& host, int port, const std::string& path,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

// In a Prometheus text scrape: the value of the sample written exactly as `series`
// (name{labels} as the exporter prints it), or nullopt when there is none.
std::optional<double> series_value(const std::string& scrape, const std::string& series);

}  // namespace nv::test
