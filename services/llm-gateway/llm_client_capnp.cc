// llm_client_capnp.cc — plain structs ↔ llm.capnp / common.capnp builders and readers.
#include "llm_client.h"

namespace nv::llm {
namespace {

namespace s = nv::schema;

Role role_from(s::Role r) {
  switch (r) {
    case s::Role::SYSTEM:
      return Role::system;
    case s::Role::ASSISTANT:
      return Role::assistant;
    case s::Role::TOOL:
      return Role::tool;
    case s::Role::USER:
    case s::Role::UNSET:
      break;
  }
  return Role::user;  // unset (or unknown) is read as user text
}

s::Role role_to(Role r) {
  switch (r) {
    case Role::system:
      return s::Role::SYSTEM;
    case Role::user:
      return s::Role::USER;
    case Role::assistant:
      return s::Role::ASSISTANT;
    case Role::tool:
      return s::Role::TOOL;
  }
  return s::Role::UNSET;
}

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

}  // namespace

Message from_capnp(s::Message::Reader r) {
  Message m;
  m.role = role_from(r.getRole());
  m.content = text(r.getContent());
  for (auto tc : r.getToolCalls()) {
    m.tool_calls.push_back({text(tc.getId()), text(tc.getName()), text(tc.getArgumentsJson())});
  }
  m.tool_call_id = text(r.getToolCallId());
  m.tool_name = text(r.getToolName());
  m.thinking = text(r.getThinking());
  return m;
}

void to_capnp(const Message& m, s::Message::Builder b) {
  b.setRole(role_to(m.role));
  b.setContent(m.content);
  auto calls = b.initToolCalls(static_cast<unsigned>(m.tool_calls.size()));
  for (unsigned i = 0; i < calls.size(); ++i) {
    calls[i].setId(m.tool_calls[i].id);
    calls[i].setName(m.tool_calls[i].name);
    calls[i].setArgumentsJson(m.tool_calls[i].arguments_json);
  }
  b.setToolCallId(m.tool_call_id);
  b.setToolName(m.tool_name);
  b.setThinking(m.thinking);
}

ChatRequest from_capnp(s::ChatRequest::Reader r) {
  ChatRequest req;
  req.trace_id = text(r.getTraceId());
  req.model = text(r.getModel());
  for (auto m : r.getMessages()) req.messages.push_back(from_capnp(m));
  for (auto t : r.getTools()) {
    req.tools.push_back({text(t.getName()), text(t.getDescription()), text(t.getParametersJson())});
  }
  req.stream = r.getStream();
  req.temperature = r.getTemperature();
  req.max_tokens = r.getMaxTokens();
  return req;
}

void to_capnp(const ChatRequest& req, s::ChatRequest::Builder b) {
  b.setVersion(s::SCHEMA_VERSION);
  b.setTraceId(req.trace_id);
  b.setModel(req.model);
  auto msgs = b.initMessages(static_cast<unsigned>(req.messages.size()));
  for (unsigned i = 0; i < msgs.size(); ++i) to_capnp(req.messages[i], msgs[i]);
  auto tools = b.initTools(static_cast<unsigned>(req.tools.size()));
  for (unsigned i = 0; i < tools.size(); ++i) {
    tools[i].setName(req.tools[i].name);
    tools[i].setDescription(req.tools[i].description);
    tools[i].setParametersJson(req.tools[i].parameters_json);
  }
  b.setStream(req.stream);
  b.setTemperature(req.temperature);
  b.setMaxTokens(req.max_tokens);
}

ChatReply from_capnp(s::ChatReply::Reader r) {
  ChatReply reply;
  reply.model = text(r.getModel());
  reply.message = from_capnp(r.getMessage());
  reply.done_reason = text(r.getDoneReason());
  reply.prompt_tokens = r.getPromptTokens();
  reply.completion_tokens = r.getCompletionTokens();
  reply.load_duration_ns = r.getLoadDurationNs();
  reply.total_duration_ns = r.getTotalDurationNs();
  reply.wall_ms = r.getWallMs();
  reply.attempts = r.getAttempts();
  reply.first_token_ms = r.getFirstTokenMs();
  return reply;
}

void to_capnp(const ChatReply& reply, std::string_view trace_id, s::ChatReply::Builder b) {
  b.setVersion(s::SCHEMA_VERSION);
  b.setTraceId(capnp::Text::Reader(trace_id.data(), trace_id.size()));
  b.setModel(reply.model);
  to_capnp(reply.message, b.initMessage());
  b.setDoneReason(reply.done_reason);
  b.setPromptTokens(reply.prompt_tokens);
  b.setCompletionTokens(reply.completion_tokens);
  b.setLoadDurationNs(reply.load_duration_ns);
  b.setTotalDurationNs(reply.total_duration_ns);
  b.setWallMs(reply.wall_ms);
  b.setAttempts(reply.attempts);
  b.setFirstTokenMs(reply.first_token_ms);
}

void to_capnp(const LlmError& error, s::Error::Builder b) {
  b.setCode(error.code);
  b.setMessage(error.message);
  b.setRetryable(error.retryable);
  b.setService("llm-gateway");
}

}  // namespace nv::llm
