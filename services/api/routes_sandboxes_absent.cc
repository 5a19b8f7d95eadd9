// routes_sandboxes_absent.cc — built when services/common/sandbox_client.h (issue 13's client
// library) is not in the tree: /v1/sandboxes answers 503 saying the sandbox service is missing.
#include "api.h"
#include "http_json.h"

namespace nv::api {

void add_sandbox_routes(Api& api) {
  api.route("POST", "/v1/sandboxes", kScopeSandbox,
            [](const httplib::Request&, httplib::Response& res, Caller& c) {
              send_error(res, 503, "unknownService",
                         "this nv-api was built without the sandbox service's client", c.trace_id);
            });
}

}  // namespace nv::api
