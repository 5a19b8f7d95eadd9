#include "gateway.h"

#include <capnp/message.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "common/frames.h"
#include "common/log.h"

namespace nv::gateway {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------------------- validation

namespace {

Error bad(std::string message) { return make_error(ErrorCode::BAD_REQUEST, std::move(message)); }

bool printable_name(capnp::Text::Reader t) {
  for (char c : std::string_view(t.cStr(), t.size())) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

Status validate(s::ChatRequest::Reader r, const RequestLimits& lim) {
  auto messages = r.getMessages();
  if (messages.size() == 0) return bad("messages is empty: send at least one user message");
  if (messages.size() > lim.max_messages) {
    return bad("messages has " + std::to_string(messages.size()) + " entries; the cap is " +
               std::to_string(lim.max_messages));
  }
  if (r.getModel().size() > lim.max_model_chars || !printable_name(r.getModel())) {
    return bad("model must be at most " + std::to_string(lim.max_model_chars) +
               " printable characters");
  }
  if (r.getTraceId().size() > 128 || !printable_name(r.getTraceId())) {
    return bad("traceId must be at most 128 printable characters");
  }
  float t = r.getTemperature();
  if (!std::isfinite(t) || t > 10.0f) {
    return bad("temperature must be a finite number <= 10 (negative = server default)");
  }
  if (r.getMaxTokens() > lim.max_tokens) {
    return bad("maxTokens is above the cap of " + std::to_string(lim.max_tokens));
  }
  size_t total = 0;
  for (unsigned i = 0; i < messages.size(); ++i) {
    auto m = messages[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    auto role = static_cast<uint16_t>(m.getRole());
    if (role < static_cast<uint16_t>(s::Role::SYSTEM) ||
        role > static_cast<uint16_t>(s::Role::TOOL)) {
      return bad(where + ".role is " + std::to_string(role) +
                 "; it must be system, user, assistant or tool");
    }
    if (m.getContent().size() > lim.max_message_bytes) {
      return bad(where + ".content has " + std::to_string(m.getContent().size()) +
                 " bytes; the cap is " + std::to_string(lim.max_message_bytes));
    }
    if (m.getThinking().size() > lim.max_message_bytes) {
      return bad(where + ".thinking has " + std::to_string(m.getThinking().size()) +
                 " bytes; the cap is " + std::to_string(lim.max_message_bytes));
    }
    total += m.getContent().size() + m.getThinking().size();
    auto calls = m.getToolCalls();
    if (calls.size() > lim.max_tool_calls) {
      return bad(where + ".toolCalls has " + std::to_string(calls.size()) +
                 " entries; the cap is " + std::to_string(lim.max_tool_calls));
    }
    if (calls.size() > 0 && m.getRole() != s::Role::ASSISTANT) {
      return bad(where + " has toolCalls but only assistant messages may carry them");
    }
    for (auto c : calls) {
      if (c.getName().size() == 0) return bad(where + " has a tool call without a name");
      total += c.getArgumentsJson().size() + c.getName().size() + c.getId().size();
    }
    total += m.getToolCallId().size() + m.getToolName().size();
  }
  auto tools = r.getTools();
  if (tools.size() > lim.max_tools) {
    return bad("tools has " + std::to_string(tools.size()) + " entries; the cap is " +
               std::to_string(lim.max_tools));
  }
  for (unsigned i = 0; i < tools.size(); ++i) {
    if (tools[i].getName().size() == 0 || !printable_name(tools[i].getName())) {
      return bad("tools[" + std::to_string(i) + "].name must be a non-empty printable name");
    }
    total += tools[i].getDescription().size() + tools[i].getParametersJson().size();
  }
  if (total > lim.max_total_bytes) {
    return bad("the request carries " + std::to_string(total) + " bytes of text; the cap is " +
               std::to_string(lim.max_total_bytes));
  }
  return {};
}

// ---------------------------------------------------------------------------------- Gateway

Gateway::Gateway(GatewayOptions options, EventPublisher& events, ClientFactory factory)
    : options_(std::move(options)),
      events_(events),
      bucket_(std::max(1.0, options_.rate_burst), options_.rate_per_s) {
  if (!factory) {
    factory = [](const llm::LlmConfig& c) { return std::make_unique<llm::LlmClient>(c); };
  }
  // The shared bucket below limits the rate; a per-client bucket would multiply it.
  llm::LlmConfig per_client = options_.llm;
  per_client.rate_per_s = 0;
  uint32_t n = std::max<uint32_t>(1, options_.concurrency);
  for (uint32_t i = 0; i < n; ++i) {
    idle_.push_back(factory(per_client));
    all_.push_back(idle_.back().get());
  }
}

Gateway::~Gateway() = default;

void Gateway::shutdown() {
  stopping_ = true;
  std::lock_guard lock(mu_);
  for (auto* c : all_) c->shutdown();
  cv_.notify_all();
}

std::unique_ptr<llm::LlmClient> Gateway::acquire() {
  // The broker never hands us more than `concurrency` requests, so this rarely waits.
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return !idle_.empty(); });
  auto c = std::move(idle_.back());
  idle_.pop_back();
  return c;
}

void Gateway::release(std::unique_ptr<llm::LlmClient> client) {
  {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(client));
  }
  cv_.notify_one();
}

// A borrowed client, returned to the pool at scope exit.
class Gateway::Lease {
 public:
  explicit Lease(Gateway& g) : g_(g), c_(g.acquire()) {}
  ~Lease() { g_.release(std::move(c_)); }
  llm::LlmClient& operator*() { return *c_; }
  llm::LlmClient* operator->() { return c_.get(); }

 private:
  Gateway& g_;
  std::unique_ptr<llm::LlmClient> c_;
};

Status Gateway::take_token(const Request& request) {
  if (options_.rate_per_s <= 0) return {};
  while (true) {
    double wait_s;
    {
      std::lock_guard lock(bucket_mu_);
      if (bucket_.try_take()) return {};
      wait_s = bucket_.seconds_until();
    }
    auto wait = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(wait_s * 1000)));
    if (stopping_ || request.cancelled() || wait >= request.remaining()) {
      return make_error(ErrorCode::RATE_LIMITED,
                        "the gateway's request rate limit (--rate " +
                            std::to_string(options_.rate_per_s) +
                            "/s) left no slot before the request's deadline; retry later or "
                            "raise --rate",
                        true);
    }
    std::this_thread::sleep_for(std::min(wait, std::chrono::milliseconds(100)));
  }
}

void Gateway::publish_call(const std::string& trace_id, const std::string& model,
                           double duration_ms, const llm::ChatReply* reply,
                           const std::string& outcome) {
  std::string api(llm::api_name(options_.llm.api));
  events_.publish(
      "llm.call",
      [&](s::Event::Builder e) {
        auto c = e.initLlmCall();
        c.setModel(model);
        c.setApi(api);
        c.setDurationMs(duration_ms);
        c.setOutcome(outcome);
        if (reply) {
          c.setPromptTokens(reply->prompt_tokens);
          c.setCompletionTokens(reply->completion_tokens);
          c.setLoadMs(static_cast<double>(reply->load_duration_ns) / 1e6);
          c.setFirstTokenMs(reply->first_token_ms);
        }
      },
      trace_id, outcome == "ok" ? s::Severity::INFO : s::Severity::WARNING);
}

void Gateway::handle(const std::shared_ptr<Request>& req) {
  auto body = req->read<s::ChatRequest>();
  if (!body) {
    req->fail(body.error());
    return;
  }
  auto r = body.value();
  if (auto st = validate(r, options_.limits); !st) {
    log::warn("rejected a chat request", {{"error", st.error().message}});
    req->fail(st.error());
    return;
  }
  llm::ChatRequest chat = llm::from_capnp(r);
  // The bus header's trace id wins when the body carries none.
  if (chat.trace_id.empty()) chat.trace_id = req->header().trace_id;
  log::TraceScope trace(chat.trace_id);
  std::string model = chat.model.empty() ? options_.llm.default_model : chat.model;
  auto started = Clock::now();
  auto elapsed_ms = [&] {
    return std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  };

  if (stopping_) {
    req->fail(make_error(ErrorCode::SHUTTING_DOWN, "the LLM gateway is shutting down", true));
    return;
  }
  if (auto st = take_token(*req); !st) {
    publish_call(chat.trace_id, model, elapsed_ms(), nullptr, code_name(st.error().code));
    req->fail(st.error());
    return;
  }

  llm::DeltaFn on_delta;
  uint32_t deltas = 0;
  if (chat.stream) {
    // Frame: one ChatDelta per piece, in the order the model server sent them.
    on_delta = [&](std::string_view text, llm::DeltaKind kind) {
      capnp::MallocMessageBuilder mb;
      auto d = bus::init_body<s::ChatDelta>(mb);
      d.setTraceId(chat.trace_id);
      capnp::Text::Reader piece(text.data(), text.size());
      if (kind == llm::DeltaKind::thinking) {
        d.setThinking(piece);
      } else {
        d.setContent(piece);
      }
      req->partial(mb);
      ++deltas;
    };
  }
  llm::ChatResult result;
  {
    Lease client(*this);
    // The worker sets the flag when the broker forwards the caller's cancel (or its deadline
    // passed, or the broker is gone): the HTTP call is then abandoned within ~100 ms and its
    // connection closed, instead of holding a slot and the model until the answer is dropped.
    result = client->chat(chat, on_delta, [&req] { return req->cancelled(); });
  }
  double ms = elapsed_ms();
  if (!result.ok()) {
    const auto& e = *result.error;
    log::write(e.code == ErrorCode::CANCELLED ? log::Level::info : log::Level::warn,
               e.code == ErrorCode::CANCELLED ? "chat cancelled by the caller" : "chat failed",
               {{"model", model},
                {"code", code_name(e.code)},
                {"error", e.message},
                {"attempts", e.attempts},
                {"duration_ms", ms}});
    publish_call(chat.trace_id, model, ms, nullptr, code_name(e.code));
    Error out = make_error(e.code, e.message, e.retryable);
    out.service = "llm-gateway";
    req->fail(out);
    return;
  }
  const auto& reply = *result.reply;
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<s::ChatReply>();
  llm::to_capnp(reply, chat.trace_id, b);
  req->reply(mb);
  log::info("chat done", {{"model", reply.model.empty() ? model : reply.model},
                          {"duration_ms", ms},
                          {"attempts", reply.attempts},
                          {"prompt_tokens", reply.prompt_tokens},
                          {"completion_tokens", reply.completion_tokens},
                          {"tool_calls", reply.message.tool_calls.size()},
                          {"deltas", deltas},
                          {"first_token_ms", reply.first_token_ms},
                          {"done_reason", reply.done_reason}});
  publish_call(chat.trace_id, model, ms, &reply, "ok");
}

}  // namespace nv::gateway
