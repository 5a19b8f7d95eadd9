// nv-metrics-exporter: turns the NeuroVisor event stream into Prometheus metrics. Unprivileged:
// it needs no capability at all and drops them all once its HTTP listener is bound.
#include "common/service.h"
#include "exporter.h"

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"metrics-exporter",
                      "serves the event stream as Prometheus metrics on /metrics and can push "
                      "them to a Pushgateway",
                      nv::metrics::add_exporter_options, nv::metrics::run_exporter, true,
                      nv::unprivileged});
}
