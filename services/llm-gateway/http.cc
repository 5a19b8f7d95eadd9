// http.cc — HttpClient on a reused libcurl easy handle.
#include "http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace nv::llm {
namespace {

void global_init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("curl_global_init failed");
    }
  });
}

// State of one transfer, shared with the libcurl callbacks.
struct Transfer {
  CURL* easy = nullptr;
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  bool too_large = false;
  bool aborted = false;
  bool cancelled = false;            // should_cancel said so; the transfer was removed unfinished
  CURLMcode multi_error = CURLM_OK;  // the multi interface itself failed
};

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) !=
        std::tolower(static_cast<unsigned char>(name[i]))) {
      return false;
    }
  }
  return true;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  // A new status line starts a new header block (redirects, 100-continue): forget old values.
  if (line.starts_with("HTTP/")) t->response->retry_after_s.reset();
  constexpr std::string_view kRetryAfter = "retry-after:";
  if (iequals_prefix(line, kRetryAfter)) {
    std::string value(line.substr(kRetryAfter.size()));
    char* end = nullptr;
    double s = std::strtod(value.c_str(), &end);
    // Only the delta-seconds form; an HTTP-date leaves the default backoff in charge.
    if (end != value.c_str() && s >= 0) t->response->retry_after_s = s;
  }
  return size * n;
}

size_t on_write(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  HttpResponse& r = *t->response;
  if (r.body_bytes + len > t->request->max_response_bytes) {
    t->too_large = true;
    return 0;  // makes libcurl fail with CURLE_WRITE_ERROR
  }
  r.body_bytes += len;
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  if (t->request->on_body && status >= 200 && status < 300) {
    r.any_body_delivered = true;
    if (!t->request->on_body(std::string_view(data, len))) {
      t->aborted = true;
      return 0;
    }
  } else {
    r.body.append(data, len);
  }
  return len;
}

HttpFailure classify(CURLcode rc, const Transfer& t, CURL* easy) {
  if (t.cancelled) return HttpFailure::cancelled;
  switch (rc) {
    case CURLE_OK:
      return HttpFailure::none;
    case CURLE_ABORTED_BY_CALLBACK:
      return HttpFailure::cancelled;
    case CURLE_COULDNT_CONNECT:
      return HttpFailure::connect;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return HttpFailure::resolve;
    case CURLE_OPERATION_TIMEDOUT: {
      // Timed out before the request went out: the server is not reachable. (CONNECT_TIME
      // alone cannot tell: it is 0 on a reused connection too.)
      long request_bytes = 0;
      double pretransfer_s = 0;
      curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_bytes);
      curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME, &pretransfer_s);
      bool sent = request_bytes > 0 || pretransfer_s > 0;
      return sent ? HttpFailure::timeout : HttpFailure::connect;
    }
    case CURLE_WRITE_ERROR:
      if (t.too_large) return HttpFailure::too_large;
      if (t.aborted) return HttpFailure::aborted;
      return HttpFailure::other;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
      return HttpFailure::dropped;
    default:
      return HttpFailure::other;
  }
}

// Runs `easy` to completion inside `multi`, waking at least every poll_ms to ask should_cancel.
// A cancelled transfer is removed unfinished: libcurl closes its connection (it cannot be reused
// mid-answer), which is what tells the model server to stop generating.
CURLcode run_transfer(CURLM* multi, CURL* easy, Transfer& t) {
  if (CURLMcode mc = curl_multi_add_handle(multi, easy); mc != CURLM_OK) {
    t.multi_error = mc;
    return CURLE_FAILED_INIT;
  }
  const HttpRequest& req = *t.request;
  int poll_ms = static_cast<int>(std::clamp<long>(req.cancel_poll_ms, 10, 1000));
  CURLcode rc = CURLE_OK;
  while (true) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi, &running);
    bool done = false;
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg == CURLMSG_DONE && m->easy_handle == easy) {
        rc = m->data.result;
        done = true;
      }
    }
    if (done) break;
    if (mc != CURLM_OK) {
      t.multi_error = mc;
      rc = CURLE_FAILED_INIT;  // classified as "other"; the text names the multi error
      break;
    }
    if (req.should_cancel && req.should_cancel()) {
      t.cancelled = true;
      rc = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    // Returns early on socket activity or when libcurl's own timers (connect and total
    // timeouts) need it; otherwise after poll_ms, to look at should_cancel again.
    mc = curl_multi_poll(multi, nullptr, 0, poll_ms, nullptr);
    if (mc != CURLM_OK) {
      t.multi_error = mc;
      rc = CURLE_FAILED_INIT;
      break;
    }
  }
  curl_multi_remove_handle(multi, easy);
  return rc;
}

}  // namespace

HttpClient::HttpClient() {
  global_init_once();
  easy_ = curl_easy_init();
  if (!easy_) throw std::runtime_error("curl_easy_init failed");
  multi_ = curl_multi_init();
  if (!multi_) {
    curl_easy_cleanup(static_cast<CURL*>(easy_));
    throw std::runtime_error("curl_multi_init failed");
  }
}

HttpClient::~HttpClient() {
  curl_multi_cleanup(static_cast<CURLM*>(multi_));  // closes the cached connections
  curl_easy_cleanup(static_cast<CURL*>(easy_));
}

HttpResponse HttpClient::perform(const HttpRequest& request) {
  CURL* easy = static_cast<CURL*>(easy_);
  // Options are reset per request; the connection cache lives in multi_ and survives.
  curl_easy_reset(easy);

  HttpResponse response;
  Transfer t{easy, &request, &response};
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_slist* headers = nullptr;
  for (const auto& h : request.headers) headers = curl_slist_append(headers, h.c_str());
  // No "Expect: 100-continue" round trip for large bodies.
  headers = curl_slist_append(headers, "Expect:");

  curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: thread-safe
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connect_timeout_ms);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, request.timeout_ms);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  if (request.method == "POST") {
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  } else {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  }

  CURLcode rc = run_transfer(static_cast<CURLM*>(multi_), easy, t);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  response.failure = classify(rc, t, easy);
  if (response.failure == HttpFailure::cancelled) {
    response.failure_text = "abandoned on request (the connection was closed)";
  } else if (t.multi_error != CURLM_OK) {
    response.failure_text =
        std::string("libcurl multi interface: ") + curl_multi_strerror(t.multi_error);
  } else if (response.failure != HttpFailure::none) {
    response.failure_text = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  }
  // Never leave a pointer to our stack buffer or header list inside the reused handle.
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  return response;
}

}  // namespace nv::llm
