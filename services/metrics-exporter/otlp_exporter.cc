#include "otlp_exporter.h"

#include <curl/curl.h>

#include <algorithm>

#include "common/log.h"

namespace nv::tracing {
namespace {

size_t discard_body(char*, size_t size, size_t n, void*) { return size * n; }

// Retry-After: delay-seconds (RFC 9110 §10.2.3); an HTTP date is treated as absent.
size_t read_header(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  auto* out = static_cast<long*>(user);
  static const std::string kName = "retry-after:";
  if (line.size() > kName.size()) {
    std::string head = line.substr(0, kName.size());
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    if (head == kName) {
      try {
        *out = std::stol(line.substr(kName.size()));
      } catch (...) {
        *out = -1;
      }
    }
  }
  return size * n;
}

bool retryable(long status) {
  return status == 0 || status == 429 || status == 502 || status == 503 || status == 504;
}

}  // namespace

Result<std::string> otlp_traces_url(const std::string& endpoint) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "OTLP endpoint '" + endpoint + "': " + why + " (expected http://host:4318)");
  };
  auto scheme_end = endpoint.find("://");
  if (scheme_end == std::string::npos) return bad("no scheme");
  std::string scheme = endpoint.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return bad("scheme must be http or https");
  std::string rest = endpoint.substr(scheme_end + 3);
  auto slash = rest.find('/');
  std::string host = rest.substr(0, slash);
  if (host.empty()) return bad("no host");
  if (slash == std::string::npos || rest.substr(slash) == "/") {
    return scheme + "://" + host + "/v1/traces";
  }
  return endpoint;
}

OtlpExporter::OtlpExporter(OtlpOptions options, prometheus::Registry& registry)
    : opt_(std::move(options)),
      exported_(prometheus::BuildCounter()
                    .Name("neurovisor_trace_spans_exported_total")
                    .Help("Spans an OTLP collector accepted")
                    .Register(registry)
                    .Add({})),
      dropped_full_(prometheus::BuildCounter()
                        .Name("neurovisor_trace_spans_dropped_total")
                        .Help("Spans not delivered, by reason")
                        .Register(registry)
                        .Add({{"reason", "queue_full"}})),
      dropped_rejected_(prometheus::BuildCounter()
                            .Name("neurovisor_trace_spans_dropped_total")
                            .Help("Spans not delivered, by reason")
                            .Register(registry)
                            .Add({{"reason", "rejected"}})),
      dropped_unreachable_(prometheus::BuildCounter()
                               .Name("neurovisor_trace_spans_dropped_total")
                               .Help("Spans not delivered, by reason")
                               .Register(registry)
                               .Add({{"reason", "unreachable"}})) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  curl_ = curl_easy_init();
  thread_ = std::thread([this] { loop(); });
}

OtlpExporter::~OtlpExporter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

void OtlpExporter::enqueue(std::vector<Span> spans) {
  if (spans.empty()) return;
  size_t dropped = 0;
  {
    std::lock_guard lock(mu_);
    for (auto& s : spans) {
      if (queue_.size() >= opt_.max_queue_spans) {
        ++dropped;
        continue;
      }
      queue_.push_back(std::move(s));
    }
  }
  if (dropped) dropped_full_.Increment(static_cast<double>(dropped));
  cv_.notify_all();
}

long OtlpExporter::post(const std::string& body, long* retry_after_s) {
  auto* c = static_cast<CURL*>(curl_);
  if (!c) return 0;
  curl_easy_reset(c);
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, opt_.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(opt_.timeout.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, retry_after_s);
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  long status = 0;
  if (rc == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else if (failures_logged_++ % 20 == 0) {
    log::warn("OTLP export failed", {{"url", opt_.url}, {"error", curl_easy_strerror(rc)}});
  }
  return status;
}

void OtlpExporter::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    size_t n = std::min(queue_.size(), opt_.max_batch_spans);
    std::vector<Span> batch(std::make_move_iterator(queue_.begin()),
                            std::make_move_iterator(queue_.begin() + static_cast<long>(n)));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(n));
    lock.unlock();
    std::string body = otlp_json(batch, opt_.scope_version);
    long status = 0;
    for (int attempt = 1; attempt <= opt_.max_attempts; ++attempt) {
      long retry_after = -1;
      status = post(body, &retry_after);
      if (!retryable(status)) break;
      bool last = attempt == opt_.max_attempts;
      {
        std::lock_guard peek(mu_);
        last |= stopping_;  // at shutdown each batch gets one try
      }
      if (last) break;
      auto wait = std::chrono::seconds(retry_after >= 0 ? std::min(retry_after, 30L)
                                                        : (1L << (attempt - 1)));
      std::unique_lock sleep(mu_);
      cv_.wait_for(sleep, wait, [this] { return stopping_; });
    }
    double count = static_cast<double>(batch.size());
    if (status >= 200 && status < 300) {
      exported_.Increment(count);
    } else if (retryable(status)) {
      dropped_unreachable_.Increment(count);
    } else {
      dropped_rejected_.Increment(count);
      log::warn("OTLP collector refused spans",
                {{"url", opt_.url}, {"status", status}, {"spans", batch.size()}});
    }
    lock.lock();
  }
}

}  // namespace nv::tracing
