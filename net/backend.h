// Tally net: the I/O back ends behind the server, one event loop per worker thread.
//
// A back end owns sockets and nothing else: it accepts on the worker's listening socket, reads
// into Session::on_bytes, writes what Session::take_output hands it, calls Session::on_tick every
// kTickMs, and runs Worker::drain_done when the worker is woken. Everything protocol-level is in
// Session (net/server.h), so both back ends behave the same by construction, and the same tests
// run against both.
//
// Threads: run() on the worker's thread; post() and stop() from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "net/server.h"

namespace tally::net {

constexpr int64_t kTickMs = 100;       // timeouts and budget re-checks happen at this granularity
constexpr size_t kReadChunkBytes = 64u << 10;

class Loop {
 public:
  virtual ~Loop() = default;
  // Runs the loop until stop(). Closes every connection before returning.
  virtual void run() = 0;
  // Runs `f` on the loop's thread soon. Any thread.
  virtual void post(std::function<void()> f) = 0;
  // Stops accepting new connections (the listening socket is closed). Loop thread.
  virtual void stop_accepting() = 0;
  // Makes run() return. Any thread.
  virtual void stop() = 0;
};

// `listen_fd`: a bound, listening, non-blocking socket the loop takes ownership of.
std::unique_ptr<Loop> make_asio_loop(ServerCore& core, Worker& worker, int listen_fd);
// Throws std::runtime_error when the ring cannot be set up; ask uring_available() first.
std::unique_ptr<Loop> make_uring_loop(ServerCore& core, Worker& worker, int listen_fd);
// False when this kernel (or a seccomp filter, or a sysctl) refuses io_uring or an operation the
// loop needs; *why_not says what failed.
bool uring_available(std::string* why_not);

// The peer address of a connected socket, "127.0.0.1" or "::1" (no port): the unit that failed
// handshakes are counted by.
std::string peer_address(int fd);
// Sends `frame` (an error) on a socket about to be closed, best effort, without blocking.
void send_and_forget(int fd, const std::vector<uint8_t>& frame);

}  // namespace tally::net
