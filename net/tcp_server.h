// Tally net: the TCP server as tallyd runs it — listening sockets, worker threads, a back end.
//
//   Server server(config, &ledger_service);   // binds (throws std::runtime_error saying why)
//   ledger's committer → server.listener()     // durable effects come back here
//   server.start();  ...  server.shutdown(10'000);
//
// Each worker has its own listening socket on the same port (SO_REUSEPORT: the kernel spreads
// connections), its own event loop and its own ledger producer index.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/backend.h"
#include "net/server.h"

namespace tally::net {

class Server {
 public:
  // Binds config.listen_host:config.port for every worker and picks the back end: io_uring
  // when asked for and available, else Boost.Asio (the fallback is reported by backend_note()).
  Server(ServerConfig config, LedgerService* ledger);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  EffectListener& listener() { return core_; }
  uint16_t port() const { return port_; }
  BackendKind backend() const { return backend_; }
  // Empty, or why the configured back end could not be used.
  const std::string& backend_note() const { return backend_note_; }

  void start();
  // Graceful stop: no new connections; every session answers what it received, sends
  // shutting_down and closes. Returns true when all closed within `timeout_ms`; the loops are
  // stopped either way.
  bool shutdown(int64_t timeout_ms);
  // The ledger failed: every session answers what it can, sends storage_failed and closes.
  void fail_all(const std::string& why);

  void set_keys(std::vector<ApiKey> keys) { core_.set_keys(std::move(keys)); }
  ServerStats stats() const { return core_.stats(); }
  // The server clock that stamps requests (ms since the epoch, never backwards).
  int64_t clock_ms() { return core_.clock().now_ms(); }
  // Bytes held for requests not yet answered and replies not yet sent, over all connections.
  int64_t memory_used() { return core_.memory_used().load(std::memory_order_relaxed); }
  // Waits until at most `n` connections are open (tests, operators); true if so in time.
  bool wait_open_at_most(uint32_t n, int64_t timeout_ms) { return core_.wait_open_at_most(n, timeout_ms); }
  bool ledger_failed() const { return core_.failed(); }
  std::string ledger_failure() const { return core_.failure(); }

 private:
  void stop_loops();

  ServerCore core_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  BackendKind backend_;
  std::string backend_note_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace tally::net
