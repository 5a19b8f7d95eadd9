// llm_client.cc — LlmClient: rate limit, retries with jittered backoff, typed errors.
//
// One call, in order:
//   1. refuse early: unreadable API key, no model, no messages, bad JSON in the request;
//   2. take a token from the request bucket (none → rateLimited, no HTTP call);
//   3. attempt the HTTP exchange; stream bodies go through the protocol's StreamParser;
//   4. classify the outcome; retry connection errors, 429 and 5xx with backoff (Retry-After
//      wins when the server sends one), unless a streamed answer already reached the caller;
//   5. return the reply with attempts and wall time, or an LlmError saying what to do.
#include "llm_client.h"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <random>

#include "http.h"
#include "llm_client_wire.h"
#include "reasoning.h"
#include "services/common/token_bucket.h"

namespace nv::llm {

std::string_view role_name(Role role) {
  switch (role) {
    case Role::system:
      return "system";
    case Role::user:
      return "user";
    case Role::assistant:
      return "assistant";
    case Role::tool:
      return "tool";
  }
  return "user";
}

std::string_view api_name(Api api) { return api == Api::openai ? "openai" : "ollama"; }

bool parse_api(std::string_view text, Api* out) {
  if (text == "ollama") {
    *out = Api::ollama;
  } else if (text == "openai") {
    *out = Api::openai;
  } else {
    return false;
  }
  return true;
}

namespace {

using Clock = std::chrono::steady_clock;

// "localhost:11434" → "http://localhost:11434"; trailing slashes dropped.
std::string normalise_base_url(std::string url) {
  if (url.find("://") == std::string::npos) url = "http://" + url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// The URL as it may appear in messages: any "user:password@" part removed.
std::string redact_url(const std::string& url) {
  size_t scheme = url.find("://");
  size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  size_t at = url.find('@', start);
  size_t slash = url.find('/', start);
  if (at == std::string::npos || (slash != std::string::npos && at > slash)) return url;
  return url.substr(0, start) + "***@" + url.substr(at + 1);
}

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

bool header_safe(std::string_view v) {
  for (unsigned char c : v) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// Servers name a missing model in their error text whatever status they pick.
bool mentions_missing_model(std::string_view text) {
  return text.find("model") != std::string_view::npos &&
         (text.find("not found") != std::string_view::npos ||
          text.find("does not exist") != std::string_view::npos);
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

LlmError make(ErrorCode code, std::string message, bool retryable = false, long status = 0) {
  LlmError e;
  e.code = code;
  e.message = std::move(message);
  e.retryable = retryable;
  e.http_status = status;
  return e;
}

// What one attempt produced when it did not produce a reply.
struct AttemptFailure {
  LlmError error;
  bool retry = false;                   // worth another attempt under the retry policy
  std::optional<double> retry_after_s;  // the server's Retry-After
};

}  // namespace

struct LlmClient::Impl {
  LlmConfig cfg;
  ClientDeps deps;
  std::string base;  // normalised base URL (may hold credentials: only redacted in messages)
  std::string shown_base;
  std::unique_ptr<wire::WireApi> api;
  HttpClient http;
  std::optional<TokenBucket> bucket;
  std::string auth_header;  // "Authorization: Bearer …" or ""; never logged
  std::optional<std::string> key_problem;
  std::mutex mu;  // one call at a time on the shared curl handle
  std::mt19937_64 rng{std::random_device{}()};
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;  // guards nothing but the wait below
  std::condition_variable stop_cv;

  void log(LogLevel level, const std::string& msg, const std::string& trace) const {
    if (cfg.log) cfg.log(level, msg, trace);
  }

  std::string server_name() const {
    return cfg.api == Api::ollama ? "Ollama at " + shown_base
                                  : "the OpenAI-compatible server at " + shown_base;
  }

  void load_key() {
    std::string key;
    if (!cfg.api_key_file.empty()) {
      std::ifstream in(cfg.api_key_file);
      if (!in) {
        key_problem = "cannot read the API key file " + cfg.api_key_file + " (" +
                      std::strerror(errno) + "): fix api_key_file (--api-key-file)";
        return;
      }
      std::getline(in, key);
      key = trim(key);
      if (key.empty()) {
        key_problem = "the API key file " + cfg.api_key_file + " is empty";
        return;
      }
    } else if (!cfg.api_key_env.empty()) {
      const char* v = std::getenv(cfg.api_key_env.c_str());
      key = v ? trim(v) : "";
      if (key.empty()) {
        key_problem = "the environment variable " + cfg.api_key_env +
                      " (api_key_env) that should hold the API key is not set or empty";
        return;
      }
    } else {
      return;  // no key configured: no Authorization header (Ollama, local llama.cpp)
    }
    if (!header_safe(key)) {
      key_problem = "the API key contains spaces or control characters; check its source";
      return;
    }
    auth_header = "Authorization: Bearer " + key;
  }

  std::string key_source() const {
    if (!cfg.api_key_file.empty()) return "the key file " + cfg.api_key_file;
    if (!cfg.api_key_env.empty()) return "the key in $" + cfg.api_key_env;
    return "";
  }

  double jitter() {
    if (deps.jitter) return deps.jitter();
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }

  // Backoff wait, cut short by shutdown() at once and by the caller's cancel within 100 ms.
  void sleep_for(std::chrono::milliseconds d, const CancelFn& cancelled) {
    if (deps.sleep) {
      deps.sleep(d);
      return;
    }
    auto end = Clock::now() + d;
    std::unique_lock<std::mutex> lock(stop_mu);
    while (!stopping.load() && !(cancelled && cancelled()) && Clock::now() < end) {
      auto slice = std::min<Clock::duration>(end - Clock::now(), std::chrono::milliseconds(100));
      stop_cv.wait_for(lock, slice, [this] { return stopping.load(); });
    }
  }

  LlmError shutting_down() const {
    return make(ErrorCode::SHUTTING_DOWN,
                "the LLM gateway is shutting down; the call to " + server_name() +
                    " was abandoned: send it again to another gateway",
                true);
  }

  LlmError cancelled_by_caller() const {
    return make(ErrorCode::CANCELLED,
                "the caller cancelled the request (or its deadline passed); the call to " +
                    server_name() + " was abandoned and its connection closed");
  }

  // Transport failures → typed errors. Returns nullopt when an HTTP answer arrived.
  std::optional<AttemptFailure> transport_failure(const HttpResponse& r, const std::string& url,
                                                  const std::string& model) const {
    std::string where = redact_url(url);
    switch (r.failure) {
      case HttpFailure::none:
        return std::nullopt;
      case HttpFailure::connect: {
        std::string hint = cfg.api == Api::ollama
                               ? "start it with `ollama serve` (or point OLLAMA_HOST / --llm-url "
                                 "at where it listens)"
                               : "start the server or point --llm-url at where it listens";
        return AttemptFailure{
            make(ErrorCode::LLM_UNREACHABLE,
                 "cannot reach " + server_name() + " (" + r.failure_text + "): " + hint, true),
            true,
            {}};
      }
      case HttpFailure::resolve:
        return AttemptFailure{make(ErrorCode::LLM_UNREACHABLE,
                                   "cannot resolve the host of " + shown_base + " (" +
                                       r.failure_text + "): check --llm-url / OLLAMA_HOST",
                                   true),
                              true,
                              {}};
      case HttpFailure::dropped:
        return AttemptFailure{make(ErrorCode::LLM_UNREACHABLE,
                                   "the connection to " + where +
                                       " broke before the answer was "
                                       "complete (" +
                                       r.failure_text + ")",
                                   true),
                              true,
                              {}};
      case HttpFailure::timeout:
        return AttemptFailure{
            make(ErrorCode::LLM_TIMED_OUT,
                 server_name() + " did not finish answering within " +
                     std::to_string(cfg.timeout_ms) + " ms (model '" + model +
                     "' may still be loading, or is too slow here): raise the timeout "
                     "(--llm-timeout) or use a smaller model",
                 true),
            false,
            {}};
      case HttpFailure::too_large:
        return AttemptFailure{make(ErrorCode::LLM_BAD_RESPONSE,
                                   "the answer from " + where + " passed the " +
                                       std::to_string(cfg.max_response_bytes) +
                                       "-byte cap (max_response_bytes); lower max tokens or "
                                       "raise the cap",
                                   false, r.status),
                              false,
                              {}};
      case HttpFailure::aborted:  // the stream parser's own error is reported by the caller
        return AttemptFailure{make(ErrorCode::LLM_BAD_RESPONSE, "stream aborted"), false, {}};
      case HttpFailure::cancelled:
        return AttemptFailure{shutting_down(), false, {}};
      case HttpFailure::other:
        break;
    }
    return AttemptFailure{
        make(ErrorCode::LLM_UNREACHABLE,
             "the request to " + where + " failed (" + r.failure_text + "): check --llm-url",
             false),
        false,
        {}};
  }

  // A non-2xx status → a typed error.
  AttemptFailure status_failure(const HttpResponse& r, const std::string& url,
                                const std::string& model) const {
    std::string where = redact_url(url);
    std::string said = api->error_text(r.body);
    std::string status = "HTTP " + std::to_string(r.status);
    if (r.status == 401 || r.status == 403) {
      std::string hint = auth_header.empty()
                             ? "no API key is configured: set api_key_env (--api-key-env) "
                               "or api_key_file (--api-key-file)"
                             : "check " + key_source();
      return {
          make(ErrorCode::UNAUTHORIZED,
               server_name() + " refused the credentials (" + status + ": " + said + "): " + hint,
               false, r.status),
          false,
          {}};
    }
    if (r.status == 404 || mentions_missing_model(said)) {
      std::string hint = cfg.api == Api::ollama
                             ? "run `ollama pull " + model + "`"
                             : "check --model against the server's /v1/models and that "
                               "--llm-url is the server root (without /v1)";
      return {make(ErrorCode::MODEL_NOT_FOUND,
                   "model '" + model + "' not found at " + server_name() + " (" + status + ": " +
                       said + "): " + hint,
                   false, r.status),
              false,
              {}};
    }
    if (r.status == 429) {
      return {make(ErrorCode::RATE_LIMITED,
                   server_name() + " is rate-limiting requests (" + status + ": " + said + ")",
                   true, r.status),
              true, r.retry_after_s};
    }
    if (r.status >= 500) {
      return {make(ErrorCode::LLM_BAD_RESPONSE,
                   server_name() + " failed (" + status + " from " + where + ": " + said + ")",
                   true, r.status),
              true, r.retry_after_s};
    }
    if (r.status >= 400) {
      return {make(ErrorCode::BAD_REQUEST,
                   server_name() + " rejected the request (" + status + ": " + said + ")", false,
                   r.status),
              false,
              {}};
    }
    return {make(ErrorCode::LLM_BAD_RESPONSE,
                 "unexpected " + status + " from " + where + ": " + wire::excerpt(r.body), false,
                 r.status),
            false,
            {}};
  }

  // A protocol-level error from a parser (2xx body): add where it came from and what to do.
  LlmError decorate(LlmError e, const std::string& model, long status) const {
    e.http_status = status;
    if (e.code == ErrorCode::MODEL_NOT_FOUND) {
      e.message = "model '" + model + "' not found at " + server_name() + " (" + e.message + "): " +
                  (cfg.api == Api::ollama ? "run `ollama pull " + model + "`"
                                          : "check --model against the server's /v1/models");
    } else if (e.code == ErrorCode::LLM_BAD_RESPONSE) {
      e.message = "unusable answer from " + server_name() + ": " + e.message;
    }
    return e;
  }

  std::vector<std::string> headers(const std::string& trace_id, const char* accept) const {
    std::vector<std::string> h = {"Content-Type: application/json",
                                  std::string("Accept: ") + accept};
    if (!trace_id.empty()) h.push_back("X-Trace-Id: " + trace_id);
    if (!auth_header.empty()) h.push_back(auth_header);
    return h;
  }
};

LlmClient::LlmClient(LlmConfig config, ClientDeps deps) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.cfg = std::move(config);
  s.deps = std::move(deps);
  s.base = normalise_base_url(s.cfg.base_url);
  s.shown_base = redact_url(s.base);
  s.api = s.cfg.api == Api::openai ? wire::make_openai_api() : wire::make_ollama_api();
  if (s.cfg.max_attempts == 0) s.cfg.max_attempts = 1;
  if (s.cfg.rate_per_s > 0) {
    auto clock = s.deps.clock ? s.deps.clock : [] { return Clock::now(); };
    s.bucket.emplace(std::max(1.0, s.cfg.rate_burst), s.cfg.rate_per_s, clock);
  }
  s.load_key();
}

LlmClient::~LlmClient() = default;

const LlmConfig& LlmClient::config() const { return impl_->cfg; }

ChatResult LlmClient::chat(const ChatRequest& request, const DeltaFn& on_delta,
                           const CancelFn& cancelled) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  const auto t0 = Clock::now();
  const std::string& trace = request.trace_id;
  auto fail = [&](LlmError e, uint32_t attempts) {
    e.attempts = attempts;
    e.wall_ms = ms_since(t0);
    // A cancel is the caller's choice, not a fault of the model server.
    s.log(e.code == ErrorCode::CANCELLED ? LogLevel::info : LogLevel::warn,
          "llm call failed: " + e.message, trace);
    return ChatResult{std::nullopt, std::move(e)};
  };

  auto caller_gone = [&cancelled] { return cancelled && cancelled(); };

  // 1. Refuse early what cannot work.
  if (s.stopping) return fail(s.shutting_down(), 0);
  if (caller_gone()) return fail(s.cancelled_by_caller(), 0);
  if (s.key_problem) return fail(make(ErrorCode::UNAUTHORIZED, *s.key_problem), 0);
  const std::string model = request.model.empty() ? s.cfg.default_model : request.model;
  if (model.empty()) {
    return fail(make(ErrorCode::BAD_REQUEST,
                     "no model given: set --model (or the request's "
                     "model field)"),
                0);
  }
  if (request.messages.empty()) {
    return fail(make(ErrorCode::BAD_REQUEST, "the chat request has no messages"), 0);
  }
  if (!header_safe(trace)) {
    return fail(make(ErrorCode::BAD_REQUEST,
                     "the trace id has characters not allowed in an "
                     "HTTP header"),
                0);
  }
  std::string body;
  if (auto err = s.api->build_chat_body(request, model, s.cfg.openai_stream_usage, &body)) {
    return fail(*err, 0);
  }

  // 2. Rate limit: refused requests never reach the server.
  if (s.bucket && !s.bucket->try_take()) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "the gateway's LLM request limit (%g/s, burst %g) refused the call; a token "
                  "is free in %.2f s",
                  s.cfg.rate_per_s, s.cfg.rate_burst, s.bucket->seconds_until());
    return fail(make(ErrorCode::RATE_LIMITED, text, true), 0);
  }

  const std::string url = s.base + std::string(s.api->chat_path());
  const char* accept = !request.stream            ? "application/json"
                       : s.cfg.api == Api::ollama ? "application/x-ndjson"
                                                  : "text/event-stream";
  for (uint32_t attempt = 1;; ++attempt) {
    // 3. One HTTP exchange.
    HttpRequest hr;
    hr.url = url;
    hr.headers = s.headers(trace, accept);
    hr.body = body;
    hr.connect_timeout_ms = s.cfg.connect_timeout_ms;
    hr.timeout_ms = s.cfg.timeout_ms;
    hr.max_response_bytes = s.cfg.max_response_bytes;
    hr.should_cancel = [&] { return s.stopping.load() || caller_gone(); };
    std::unique_ptr<wire::StreamParser> parser;
    std::optional<LlmError> stream_error;
    // Content pieces pass through the <think> splitter; the first piece of either kind is the
    // time to first token.
    ThinkTagStream think_tags;
    double first_token_ms = 0;
    DeltaFn sink = [&](std::string_view text, DeltaKind kind) {
      if (first_token_ms == 0 && !text.empty()) first_token_ms = std::max(ms_since(t0), 0.001);
      if (!on_delta) return;
      if (kind == DeltaKind::thinking) {
        on_delta(text, kind);
      } else {
        think_tags.feed(text, on_delta);
      }
    };
    if (request.stream) {
      parser = s.api->stream_parser(sink);
      // Runs inside libcurl's C callback: nothing may escape it as an exception.
      hr.on_body = [&](std::string_view bytes) {
        try {
          stream_error = parser->feed(bytes);
        } catch (const std::exception& ex) {
          stream_error =
              make(ErrorCode::INTERNAL, std::string("reading the stream failed: ") + ex.what());
        }
        return !stream_error;
      };
    }
    HttpResponse r = s.http.perform(hr);

    // 4. Classify.
    std::optional<AttemptFailure> failure;
    ChatReply reply;
    if (r.failure == HttpFailure::cancelled && !s.stopping) {
      failure = AttemptFailure{s.cancelled_by_caller(), false, {}};
    } else if (stream_error) {
      failure = AttemptFailure{s.decorate(*stream_error, model, r.status), false, {}};
    } else if ((failure = s.transport_failure(r, url, model))) {
    } else if (r.status < 200 || r.status >= 300) {
      failure = s.status_failure(r, url, model);
    } else if (parser) {
      if (auto err = parser->finish(reply)) {
        failure = AttemptFailure{s.decorate(*err, model, r.status), false, {}};
      }
    } else if (auto err = s.api->parse_chat_reply(r.body, reply)) {
      failure = AttemptFailure{s.decorate(*err, model, r.status), false, {}};
    }

    if (!failure) {
      if (parser) think_tags.finish(on_delta);
      // <think>…</think> inside the text is reasoning, like the APIs' own thinking fields.
      if (SplitText split = split_think_tags(reply.message.content);
          split.content.size() != reply.message.content.size() || !split.thinking.empty()) {
        if (!split.thinking.empty()) {
          reply.message.thinking += (reply.message.thinking.empty() ? "" : "\n") + split.thinking;
        }
        reply.message.content = std::move(split.content);
      }
      reply.first_token_ms = first_token_ms;
      if (reply.model.empty()) reply.model = model;
      reply.attempts = attempt;
      reply.wall_ms = ms_since(t0);
      s.log(LogLevel::debug,
            "llm call ok: model " + reply.model + ", " + std::to_string(attempt) + " attempt(s), " +
                std::to_string(reply.completion_tokens) + " tokens",
            trace);
      return ChatResult{std::move(reply), std::nullopt};
    }

    // 5. Retry or give up. A stream that already reached the caller is never replayed.
    LlmError& e = failure->error;
    if (!failure->retry || attempt >= s.cfg.max_attempts || r.any_body_delivered) {
      if (failure->retry && attempt >= s.cfg.max_attempts && s.cfg.max_attempts > 1) {
        e.message += " (gave up after " + std::to_string(attempt) + " attempts)";
      }
      return fail(std::move(e), attempt);
    }
    long delay_ms;
    if (failure->retry_after_s) {
      delay_ms = static_cast<long>(std::ceil(*failure->retry_after_s * 1000.0));
      if (delay_ms > s.cfg.retry_after_max_ms) {
        e.message += " (the server asks to wait " + std::to_string(delay_ms / 1000) +
                     " s, more than the " + std::to_string(s.cfg.retry_after_max_ms) +
                     " ms the gateway waits)";
        return fail(std::move(e), attempt);
      }
    } else {
      double backoff = static_cast<double>(s.cfg.backoff_initial_ms) *
                       std::pow(2.0, static_cast<double>(attempt - 1));
      backoff = std::min(backoff, static_cast<double>(s.cfg.backoff_max_ms));
      delay_ms = static_cast<long>(backoff * (0.5 + 0.5 * s.jitter()));
    }
    s.log(LogLevel::warn,
          "llm attempt " + std::to_string(attempt) + "/" + std::to_string(s.cfg.max_attempts) +
              " failed, retrying in " + std::to_string(delay_ms) + " ms: " + e.message,
          trace);
    s.sleep_for(std::chrono::milliseconds(delay_ms), cancelled);
    if (s.stopping) return fail(s.shutting_down(), attempt);
    if (caller_gone()) return fail(s.cancelled_by_caller(), attempt);
  }
}

void LlmClient::shutdown() {
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mu);
    impl_->stopping = true;
  }
  impl_->stop_cv.notify_all();
}

std::string base_url_from_ollama_host(std::string_view ollama_host) {
  std::string v = trim(std::string(ollama_host));
  while (!v.empty() && v.back() == '/') v.pop_back();
  if (v.empty()) return "http://localhost:11434";
  if (v.find("://") == std::string::npos) v = "http://" + v;
  size_t host = v.find("://") + 3;
  size_t path = v.find('/', host);
  std::string authority =
      v.substr(host, path == std::string::npos ? std::string::npos : path - host);
  size_t bracket = authority.rfind(']');  // [::1]:11434
  bool has_port =
      authority.find(':', bracket == std::string::npos ? 0 : bracket) != std::string::npos;
  if (!has_port && v.starts_with("http://")) {
    v.insert(path == std::string::npos ? v.size() : path, ":11434");
  }
  return v;
}

ModelsResult LlmClient::list_models(const std::string& trace_id) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  ModelsResult out;
  if (s.stopping) {
    out.error = s.shutting_down();
    return out;
  }
  if (s.key_problem) {
    out.error = make(ErrorCode::UNAUTHORIZED, *s.key_problem);
    return out;
  }
  if (!header_safe(trace_id)) {
    out.error = make(ErrorCode::BAD_REQUEST,
                     "the trace id has characters not allowed in an "
                     "HTTP header");
    return out;
  }
  HttpRequest hr;
  hr.method = "GET";
  hr.url = s.base + std::string(s.api->models_path());
  hr.headers = s.headers(trace_id, "application/json");
  hr.connect_timeout_ms = s.cfg.connect_timeout_ms;
  hr.timeout_ms = s.cfg.timeout_ms;
  hr.max_response_bytes = s.cfg.max_response_bytes;
  hr.should_cancel = [&s] { return s.stopping.load(); };
  HttpResponse r = s.http.perform(hr);
  if (auto f = s.transport_failure(r, hr.url, s.cfg.default_model)) {
    out.error = f->error;
  } else if (r.status < 200 || r.status >= 300) {
    out.error = s.status_failure(r, hr.url, s.cfg.default_model).error;
  } else if (auto err = s.api->parse_models(r.body, &out.models)) {
    out.error = s.decorate(*err, s.cfg.default_model, r.status);
  }
  if (out.error) out.error->attempts = 1;
  return out;
}

}  // namespace nv::llm
