// netconfig.cc — eth0 of a networked VM (issue 16): MAC, address, default route and resolver,
// as the host's Reseed.network says. With ioctls (netdevice(7), route(4)): the image has no
// iproute2, and the agent is the guest's only root process. Programs run as the unprivileged
// `nv` user and cannot change any of it; the policy is enforced on the host anyway.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "guest/agent/system.h"

namespace nv::guest::agent {
namespace {

std::string err_text(const std::string& call) { return call + " failed: " + std::strerror(errno); }

bool parse_mac(const std::string& s, unsigned char out[6]) {
  unsigned v[6];
  char tail;
  if (std::sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                  &tail) != 6) {
    return false;
  }
  for (int i = 0; i < 6; ++i) out[i] = static_cast<unsigned char>(v[i]);
  return (out[0] & 1) == 0;  // unicast
}

sockaddr_in sin_of(in_addr a) {
  sockaddr_in s{};
  s.sin_family = AF_INET;
  s.sin_addr = a;
  return s;
}

}  // namespace

std::string LinuxSystemOps::configure_network(const std::string& mac, const std::string& ipv4,
                                              const std::string& gateway) {
  constexpr const char* kDev = "eth0";
  unsigned char hw[6];
  if (!parse_mac(mac, hw)) return "bad MAC '" + mac.substr(0, 32) + "'";
  auto slash = ipv4.find('/');
  in_addr addr{}, gw{};
  int prefix = -1;
  if (slash == std::string::npos || inet_pton(AF_INET, ipv4.substr(0, slash).c_str(), &addr) != 1 ||
      std::sscanf(ipv4.c_str() + slash + 1, "%d", &prefix) != 1 || prefix < 8 || prefix > 30) {
    return "bad IPv4 address '" + ipv4.substr(0, 32) + "'";
  }
  if (inet_pton(AF_INET, gateway.c_str(), &gw) != 1) return "bad gateway '" + gateway + "'";
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return err_text("socket");
  auto fail = [fd](const std::string& what) {
    std::string e = err_text(what);
    ::close(fd);
    return e;
  };
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kDev);
  if (::ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) return fail("SIOCGIFFLAGS(eth0)");
  const short flags = ifr.ifr_flags;
  ifr.ifr_flags = static_cast<short>(flags & ~IFF_UP);  // the MAC changes only while down
  if (::ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) return fail("SIOCSIFFLAGS(down)");
  ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  std::memcpy(ifr.ifr_hwaddr.sa_data, hw, 6);
  if (::ioctl(fd, SIOCSIFHWADDR, &ifr) < 0) return fail("SIOCSIFHWADDR");
  auto sa = sin_of(addr);
  std::memcpy(&ifr.ifr_addr, &sa, sizeof sa);
  if (::ioctl(fd, SIOCSIFADDR, &ifr) < 0) return fail("SIOCSIFADDR");
  in_addr mask{htonl(prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix))};
  auto sm = sin_of(mask);
  std::memcpy(&ifr.ifr_netmask, &sm, sizeof sm);
  if (::ioctl(fd, SIOCSIFNETMASK, &ifr) < 0) return fail("SIOCSIFNETMASK");
  ifr.ifr_flags = static_cast<short>(flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) return fail("SIOCSIFFLAGS(up)");
  rtentry rt{};
  auto dst = sin_of(in_addr{0});
  auto gsa = sin_of(gw);
  std::memcpy(&rt.rt_dst, &dst, sizeof dst);
  std::memcpy(&rt.rt_genmask, &dst, sizeof dst);
  std::memcpy(&rt.rt_gateway, &gsa, sizeof gsa);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  char dev[IFNAMSIZ];
  std::snprintf(dev, sizeof dev, "%s", kDev);
  rt.rt_dev = dev;
  if (::ioctl(fd, SIOCADDRT, &rt) < 0 && errno != EEXIST) return fail("SIOCADDRT(default)");
  ::close(fd);
  // The resolver: the host's DNS responder at the gateway. The root filesystem is read-only, so
  // a file in /run is bound over /etc/resolv.conf (once; later configurations rewrite the file).
  ::mkdir("/run/nv", 0755);
  const std::string conf = "nameserver " + gateway + "\noptions attempts:2 timeout:2\n";
  int rf = ::open("/run/nv/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (rf < 0) return err_text("open(/run/nv/resolv.conf)");
  bool ok = ::write(rf, conf.data(), conf.size()) == static_cast<ssize_t>(conf.size());
  ::close(rf);
  if (!ok) return err_text("write(/run/nv/resolv.conf)");
  if (::mount("/run/nv/resolv.conf", "/etc/resolv.conf", nullptr, MS_BIND, nullptr) < 0 &&
      errno != EBUSY) {
    return err_text("mount(/etc/resolv.conf)");
  }
  return "";
}

}  // namespace nv::guest::agent
