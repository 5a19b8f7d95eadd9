// inference_bridge.cc — see inference_bridge.h.
#include "inference_bridge.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include <nv/schema/guest.capnp.h>
#include <nv/schema/llm.capnp.h>

#include "common/frames.h"
#include "common/log.h"
#include "guest/protocol/frame.h"

namespace nv::exec {

namespace {

using Clock = std::chrono::steady_clock;
using inference::Api;
using inference::ChatAnswer;
using inference::HttpAnswer;

// A request frame: 1 MiB of body and the rest of the message.
constexpr uint32_t kMaxRequestFrame = inference::kMaxBodyBytes + (64u << 10);
constexpr size_t kMaxDataPerFrame = 64u << 10;
constexpr auto kWriteLimit = std::chrono::seconds(30);
constexpr uint64_t kBudgetCapBelow = 4096;

schema::Role role_of(const std::string& r) {
  if (r == "system") return schema::Role::SYSTEM;
  if (r == "assistant") return schema::Role::ASSISTANT;
  if (r == "tool") return schema::Role::TOOL;
  return schema::Role::USER;
}

int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The HTTP status of a failed llm call.
int status_of(const Error& e) {
  switch (e.code) {
    case ErrorCode::TIMED_OUT:
      return 504;
    case ErrorCode::BAD_REQUEST:
      return 400;
    default:
      return 502;
  }
}

bool write_all(int fd, std::string_view data) {
  const auto deadline = Clock::now() + kWriteLimit;
  while (!data.empty()) {
    ssize_t w = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      data.remove_prefix(static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EINTR) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left.count()));
  }
  return true;
}

}  // namespace

LlmCall bus_llm(zmq::context_t& ctx, ClientOptions options, std::chrono::milliseconds timeout) {
  return
      [&ctx, options, timeout](const LlmRequest& r, const LlmDelta& delta) -> Result<ChatAnswer> {
        Client client(ctx, options);
        // The bridge is ending (its sandbox paused or destroyed): the call is dropped upstream.
        if (r.cancel) client.set_cancel_check([c = r.cancel] { return c->load(); });
        capnp::MallocMessageBuilder mb;
        auto c = bus::init_body<schema::ChatRequest>(mb);
        c.setTraceId(r.trace_id);
        c.setModel(r.model);
        c.setStream(r.stream);
        c.setTemperature(static_cast<float>(r.temperature));
        c.setMaxTokens(r.max_tokens);
        auto msgs = c.initMessages(static_cast<unsigned>(r.messages.size()));
        for (unsigned i = 0; i < r.messages.size(); ++i) {
          msgs[i].setRole(role_of(r.messages[i].role));
          msgs[i].setContent(r.messages[i].content);
        }
        auto res = client.call(
            "llm", &mb, timeout,
            [&](Client::Incoming& in) {
              auto d = in.body.root<schema::ChatDelta>();
              if (!d) return;
              std::string content = d.value().getContent().cStr();
              std::string thinking = d.value().getThinking().cStr();
              if (delta && (!content.empty() || !thinking.empty())) delta(content, thinking);
            },
            r.trace_id);
        if (!res) return res.error();
        auto reply = res->body.root<schema::ChatReply>();
        if (!reply) return reply.error();
        auto p = reply.value();
        ChatAnswer a;
        a.model = p.getModel().cStr();
        a.content = p.getMessage().getContent().cStr();
        a.thinking = p.getMessage().getThinking().cStr();
        a.done_reason = p.getDoneReason().cStr();
        a.prompt_tokens = p.getPromptTokens();
        a.completion_tokens = p.getCompletionTokens();
        a.total_duration_ns = p.getTotalDurationNs();
        a.load_duration_ns = p.getLoadDurationNs();
        return a;
      };
}

void InferenceBridge::serve(const std::string& method, const std::string& path,
                            const std::string& body, const std::string& trace_id,
                            InferenceAccount& account, const LlmCall& llm, const SendFn& send,
                            const std::atomic<bool>* cancel) {
  auto answer = [&](const HttpAnswer& a) { (void)send(a.status, a.content_type, a.body, true); };
  Api api = Api::ollama;
  HttpAnswer err;
  switch (inference::route(method, path, api, err)) {
    case inference::Route::error:
      return answer(err);
    case inference::Route::root:
      return answer({200, "text/plain; charset=utf-8", "Ollama is running"});
    case inference::Route::models: {
      const auto& m = account.policy.models;
      return answer({200, "application/json",
                     api == Api::ollama ? inference::ollama_tags(m)
                                        : inference::openai_models(m, unix_ns() / 1000000000)});
    }
    case inference::Route::chat:
      break;
  }
  inference::ChatCall call;
  if (!inference::parse_chat(api, body, call, err)) return answer(err);
  const uint64_t used = account.used();
  LlmRequest req;
  if (!inference::admit(call, account.policy, used, req.model, err)) return answer(err);
  // The completion may not outrun what is left of the budget: the client's cap is lowered to
  // it, and with no cap of the client's the rest is the cap once fewer than kBudgetCapBelow
  // tokens are left (a larger max_tokens than the model's context is refused by some servers).
  const uint64_t left = account.policy.token_budget - used;
  const uint32_t cap = static_cast<uint32_t>(std::min<uint64_t>(left, kBudgetCapBelow));
  req.trace_id = trace_id;
  req.cancel = cancel;
  req.messages = call.messages;
  req.stream = call.stream;
  req.temperature = call.temperature;
  if (call.max_tokens > 0) {
    req.max_tokens = static_cast<uint32_t>(std::min<uint64_t>(call.max_tokens, left));
  } else if (left < kBudgetCapBelow) {
    req.max_tokens = cap;
  }

  const int64_t now_ns = unix_ns();
  const std::string id = "chatcmpl-" + std::to_string(now_ns);
  const int64_t created = now_ns / 1000000000;
  if (!call.stream) {
    auto r = llm(req, {});
    if (!r) return answer(inference::error_answer(api, status_of(r.error()), r.error().message));
    account.charge(uint64_t{r->prompt_tokens} + r->completion_tokens);
    if (r->model.empty()) r->model = call.model;
    return answer({200, "application/json",
                   api == Api::ollama
                       ? inference::ollama_reply(r.value(), inference::rfc3339(now_ns))
                       : inference::openai_reply(r.value(), id, created)});
  }
  // Streamed: the head goes with the first piece, so a call that fails before any piece still
  // answers with a proper error status.
  const std::string ctype = api == Api::ollama ? "application/x-ndjson" : "text/event-stream";
  const std::string shown_model = call.model;
  bool head_sent = false;
  bool gone = false;  // the guest end stopped taking frames
  auto piece = [&](const std::string& data, bool last) {
    if (gone) return;
    gone = !send(head_sent ? 0 : 200, ctype, data, last);
    head_sent = true;
  };
  bool streamed_any = false;
  auto on_delta = [&](const std::string& content, const std::string& thinking) {
    if (api == Api::ollama) {
      piece(inference::ollama_delta(shown_model, inference::rfc3339(unix_ns()), content, thinking),
            false);
    } else {
      if (content.empty()) return;  // reasoning is not part of OpenAI's chunks
      if (!streamed_any)
        piece(inference::openai_chunk(id, created, shown_model, "assistant", "", ""), false);
      piece(inference::openai_chunk(id, created, shown_model, "", content, ""), false);
    }
    streamed_any = true;
  };
  auto r = llm(req, on_delta);
  if (!r) {
    if (!head_sent) {
      return answer(inference::error_answer(api, status_of(r.error()), r.error().message));
    }
    return piece(inference::stream_error(api, r.error().message), true);
  }
  account.charge(uint64_t{r->prompt_tokens} + r->completion_tokens);
  auto a = r.value();
  a.model = shown_model;
  if (!streamed_any && (!a.content.empty() || !a.thinking.empty())) {
    on_delta(a.content, a.thinking);  // the model server answered in one piece
  }
  if (api == Api::ollama)
    return piece(inference::ollama_final(a, inference::rfc3339(unix_ns())), true);
  if (!streamed_any)
    piece(inference::openai_chunk(id, created, shown_model, "assistant", "", ""), false);
  piece(inference::openai_chunk(id, created, shown_model, "", "",
                                a.done_reason.empty() ? "stop" : a.done_reason),
        false);
  if (call.include_usage) piece(inference::openai_usage_chunk(a, id, created), false);
  piece(std::string(inference::kOpenAiDone), true);
}

Result<std::unique_ptr<InferenceBridge>> InferenceBridge::start(
    const std::string& socket_path, std::string trace_id, InferenceAccount account, LlmCall llm,
    std::chrono::milliseconds connect_for) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "inference socket path \"" + socket_path + "\" is empty or too long");
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const auto deadline = Clock::now() + connect_for;
  int err = 0;
  while (true) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(ErrorCode::INTERNAL, std::string("socket: ") + strerror(errno));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return std::unique_ptr<InferenceBridge>(
          new InferenceBridge(fd, std::move(trace_id), std::move(account), std::move(llm)));
    }
    err = errno;
    ::close(fd);
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return make_error(ErrorCode::VM_FAILED,
                    "cannot connect to the inference port " + socket_path + ": " + strerror(err));
}

InferenceBridge::InferenceBridge(int fd, std::string trace_id, InferenceAccount account,
                                 LlmCall llm)
    : fd_(fd), trace_id_(std::move(trace_id)), account_(std::move(account)), llm_(std::move(llm)) {
  thread_ = std::thread([this] { run(); });
}

InferenceBridge::~InferenceBridge() {
  stop_ = true;
  ::shutdown(fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

void InferenceBridge::run() {
  guest::FrameDecoder dec(kMaxRequestFrame);
  char buf[64 * 1024];
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    int pr = ::poll(&p, 1, 200);
    if (pr < 0 && errno != EINTR) break;
    if (pr <= 0) continue;
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;  // the VMM closed the port (the VM ended)
    dec.feed(buf, static_cast<size_t>(n));
    while (!stop_) {
      kj::Array<capnp::word> words;
      auto st = dec.next(words);
      if (st == guest::FrameDecoder::Status::need_more) break;
      if (st != guest::FrameDecoder::Status::frame) {
        log::warn("inference bridge: bad frame from the guest; the port is dropped",
                  {{"why", guest::to_string(st)}, {"announced", std::to_string(dec.announced())}});
        return;
      }
      std::string perr;
      auto msg = guest::ParsedMessage::parse(std::move(words), perr);
      if (!msg) {
        log::warn("inference bridge: malformed message from the guest", {{"why", perr}});
        continue;
      }
      uint32_t id = 0;
      std::string method, path, body;
      try {
        auto g = msg->root<schema::GuestMessage>();
        if (g.which() != schema::GuestMessage::INFERENCE_REQUEST) continue;
        auto r = g.getInferenceRequest();
        id = r.getId();
        method = r.getMethod().cStr();
        path = r.getPath().cStr();
        auto b = r.getBody();
        body.assign(reinterpret_cast<const char*>(b.begin()), b.size());
      } catch (...) {
        log::warn("inference bridge: unreadable request from the guest");
        continue;
      }
      if (method.size() > 16 || path.size() > 1024) {
        method = "GET";
        path = "/?";  // answered 404
      }
      auto send = [&](int status, const std::string& ctype, const std::string& data, bool last) {
        size_t off = 0;
        do {  // at most kMaxDataPerFrame bytes per frame
          const size_t len = std::min(kMaxDataPerFrame, data.size() - off);
          const bool final_piece = last && off + len == data.size();
          capnp::MallocMessageBuilder mb;
          auto h = mb.initRoot<schema::HostMessage>();
          h.setVersion(schema::SCHEMA_VERSION);
          auto resp = h.initInferenceResponse();
          resp.setId(id);
          resp.setStatus(static_cast<uint16_t>(off == 0 ? status : 0));
          if (off == 0 && status != 0) resp.setContentType(ctype);
          resp.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()) + off, len));
          resp.setLast(final_piece);
          if (!write_all(fd_, guest::encode_frame(mb))) return false;
          off += len;
        } while (off < data.size());
        return true;
      };
      serve(method, path, body, trace_id_, account_, llm_, send, &stop_);
    }
  }
}

}  // namespace nv::exec
