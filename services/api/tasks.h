// tasks.h — agent tasks over HTTP: each task is one request to the orchestrator's "task"
// service, held open by a thread of nv-api (a task never outlives its bus client), its progress
// kept as JSON events (bounded) for GET /v1/tasks/{id} and its event stream.
//
// Event objects (NDJSON lines or SSE `data:`), each with "event" and "iteration":
//   thinking · modelDelta{text} · thinkingDelta{text} · modelText{text} · notice{text}
//   toolCall{language, code, callId} · output{stream, data} · execResult{exitCode, ...}
//   toolError{code, message} · result{status, answer, ...} (last) · error{error} (last)
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/sandbox_client.h"

namespace nv::api {

class Api;
struct Caller;

struct TaskSpec {
  std::string prompt, model;
  uint32_t max_iterations = 0, timeout_ms = 0;
  int tier = 0;                          // schema::SizeTier value
  std::vector<sandbox::Mount> mounts{};  // SubmitTask.mounts (nv-api --allow-mounts only)
};

struct Task {
  std::string id, tenant, trace_id, prompt;
  std::chrono::system_clock::time_point created;
  std::atomic<bool> cancel{false};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> events;  // JSON objects, in order
  size_t event_bytes = 0;
  uint64_t dropped = 0;  // deltas left out past the bound
  bool done = false;
  std::string status = "running";  // then task.capnp TaskStatus names, or "error"
  std::string result_json;         // the final result or error object
  std::thread thread;
  // {"id","status","prompt","traceId","createdUnixMs","result"?}
  std::string summary_json();
};

class TaskRegistry {
 public:
  explicit TaskRegistry(Api& api) : api_(api) {}
  ~TaskRegistry();
  // tooMany: the tenant has --max-tasks running (429).
  Result<std::shared_ptr<Task>> submit(const Caller& caller, const TaskSpec& spec);
  // The tenant's task `id`, or null (another tenant's id is not found, like an unknown one).
  std::shared_ptr<Task> find(const std::string& tenant, const std::string& id);
  std::vector<std::shared_ptr<Task>> list(const std::string& tenant);
  void cancel_all();
  void join_all();

 private:
  void run(std::shared_ptr<Task> t, TaskSpec spec);
  void prune();  // finished tasks older than 10 minutes (or past 1000 kept) go
  Api& api_;
  std::mutex mu_;
  std::vector<std::shared_ptr<Task>> tasks_;
};

}  // namespace nv::api
