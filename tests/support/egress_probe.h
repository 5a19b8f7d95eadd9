// egress_probe.h — connect() from inside a cgroup, to see what its egress programs decide.
// Loopback only (facts.md, "Network rule"): tests listen on 127.0.0.1 (allowed) and 127.0.0.2
// (put on the sentinel's deny list by the test).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace nv::test {

// A TCP listener on `addr` (an IPv4 loopback address) at a free port; returns the fd (the port in
// *port), or -1.
int listen_on(const char* addr, int* port);

// Forks a child that joins the cgroup2 dir `cgroup`, creates a socket there (sockets are judged
// by the cgroup they are created in) and connects to addr:port. Returns the child's errno
// (0 = connected, EPERM = refused by a cgroup program).
int connect_from_cgroup(const std::string& cgroup, const char* addr, int port);

// Forks a stand-in VMM: a child that joins every cgroup dir in `cgroups` and sleeps until killed.
// Returns its pid (the caller kills and reaps it).
pid_t park_in_cgroups(const std::vector<std::string>& cgroups);

}  // namespace nv::test
