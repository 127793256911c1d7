#include "net/tcp_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tally::net {
namespace {

constexpr int kListenBacklog = 1024;

// A listening, non-blocking socket on host:port with SO_REUSEPORT, so every worker can have one.
int listen_on(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error("cannot resolve listen address '" + host + "': " + gai_strerror(rc));
  std::string last = "no address";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, kListenBacklog) == 0) {
      freeaddrinfo(res);
      return fd;
    }
    last = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + last);
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

}  // namespace

std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown";
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  }
  return buf;
}

void send_and_forget(int fd, const std::vector<uint8_t>& frame) {
  (void)!send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

Server::Server(ServerConfig config, LedgerService* ledger)
    : core_(std::move(config), ledger), backend_(core_.config().backend) {
  const ServerConfig& c = core_.config();
  std::vector<int> fds;
  try {
    uint16_t port = c.port;
    for (uint16_t w = 0; w < c.workers; ++w) {
      fds.push_back(listen_on(c.listen_host, port));
      if (w == 0) port = bound_port(fds[0]);  // port 0: the others join the one the kernel chose
    }
    port_ = port;
  } catch (...) {
    for (int fd : fds) close(fd);
    throw;
  }
  if (backend_ == BackendKind::kUring) {
    std::string why;
    if (!uring_available(&why)) {
      backend_ = BackendKind::kAsio;
      backend_note_ = "io_uring is not available here (" + why + "); running on Boost.Asio";
      core_.log("tallyd: WARNING: " + backend_note_);
    }
  }
  for (uint16_t w = 0; w < c.workers; ++w) {
    try {
      loops_.push_back(backend_ == BackendKind::kUring ? make_uring_loop(core_, core_.worker(w), fds[w])
                                                       : make_asio_loop(core_, core_.worker(w), fds[w]));
    } catch (...) {
      // The loops made so far own their sockets; the rest are still ours to close.
      for (uint16_t v = static_cast<uint16_t>(w + 1); v < c.workers; ++v) close(fds[v]);
      throw;
    }
  }
}

Server::~Server() {
  if (started_ && !stopped_) shutdown(5'000);
  stop_loops();
}

void Server::start() {
  if (started_) return;
  started_ = true;
  for (size_t i = 0; i < loops_.size(); ++i)
    threads_.emplace_back([loop = loops_[i].get(), i] {
      name_this_thread("tally-net-" + std::to_string(i));
      loop->run();
    });
}

bool Server::shutdown(int64_t timeout_ms) {
  if (!started_ || stopped_) return true;
  for (uint16_t w = 0; w < loops_.size(); ++w) {
    Worker* worker = &core_.worker(w);
    Loop* loop = loops_[w].get();
    loop->post([loop, worker] {
      loop->stop_accepting();
      worker->for_each_session([](Session& s) { s.begin_shutdown(); });
    });
  }
  bool all = core_.wait_open_at_most(0, timeout_ms);
  stop_loops();
  return all;
}

void Server::fail_all(const std::string& why) {
  for (uint16_t w = 0; w < loops_.size(); ++w) {
    Worker* worker = &core_.worker(w);
    Loop* loop = loops_[w].get();
    loop->post([loop, worker, why] {
      loop->stop_accepting();
      worker->for_each_session([&](Session& s) { s.begin_failure(why); });
    });
  }
}

void Server::stop_loops() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& l : loops_) l->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

}  // namespace tally::net
