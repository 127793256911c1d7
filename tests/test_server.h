// What the end-to-end tests share: a durable ledger and a server on a free loopback port (the
// order in which they stop loses nothing), test keys with known secrets, and small helpers for
// events and raw sockets. Tests only; everything talks to 127.0.0.1.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/program.h"
#include "net/client.h"
#include "net/scram.h"
#include "net/tcp_server.h"
#include "net/tls.h"
#include "tools/ledger_service.h"

namespace tally::testing {

// The secret of test key `id`.
inline std::string test_secret(uint32_t id) { return "s3cret-for-tests-" + std::to_string(id); }

inline net::ApiKey test_key(uint32_t id, uint32_t program, net::Role role) {
  std::optional<net::scram::Verifier> v = net::scram::make_verifier(test_secret(id));
  if (!v) throw std::runtime_error("make_verifier");
  return net::ApiKey{id, program, role, *v};
}

struct StackOptions {
  net::BackendKind backend = net::BackendKind::kAsio;
  net::ServerLimits limits;
  std::vector<net::ApiKey> keys;
  // Rate limits off and small tables, whatever the programs say.
  std::vector<Program> programs = {default_program()};
  uint16_t shards = 2;
  std::shared_ptr<net::TlsServerContext> tls;
  // Last word on the ledger's options (checkpoints, the history index, ...).
  std::function<void(storage::LedgerOptions&)> configure;
  ReplicationOptions replication;  // semi-synchronous acknowledgement (docs/replication.md)
};

// The programs a ServerStack runs, given those asked for: rate limits off, small tables. A follower
// of a stack must run the same.
inline std::vector<Program> stack_programs(std::vector<Program> programs) {
  for (Program& p : programs) {
    p.events_per_minute_max = 0;
    p.accounts_max = 10'000;
    p.orders_max = 10'000;
  }
  return programs;
}

// What the change-stream tests share: program 1 (the default) and program 2 ("other"), and keys
// of every role for program 1 plus a pos key of program 2.
namespace two_programs {
constexpr uint32_t kProgram = 1, kOtherProgram = 2;
constexpr uint32_t kPosKey = 11, kOperatorKey = 12, kReaderKey = 13, kReplicaKey = 14, kOtherPosKey = 21;
inline Program other_program() {
  Program p = default_program();
  p.id = kOtherProgram;
  p.name = "other";
  return p;
}
inline std::vector<Program> programs() { return {default_program(), other_program()}; }
inline std::vector<net::ApiKey> keys() {
  return {test_key(kPosKey, kProgram, net::Role::kPos), test_key(kOperatorKey, kProgram, net::Role::kOperator),
          test_key(kReaderKey, kProgram, net::Role::kReader), test_key(kReplicaKey, kProgram, net::Role::kReplica),
          test_key(kOtherPosKey, kOtherProgram, net::Role::kPos)};
}
}  // namespace two_programs

class ServerStack {
 public:
  ServerStack(const std::string& dir, StackOptions o) {
    storage::LedgerOptions lo;
    lo.store.dir = dir;
    lo.pipeline.shard_count = o.shards;
    lo.pipeline.producer_count = 2;
    lo.pipeline.programs = stack_programs(o.programs);
    lo.pipeline.references_max = 100'000;
    if (o.configure) o.configure(lo);
    service = std::make_unique<DurableService>(lo, o.replication);
    net::ServerConfig c;
    c.port = 0;
    c.workers = 2;
    c.backend = o.backend;
    c.limits = o.limits;
    c.keys = std::move(o.keys);
    c.tls = std::move(o.tls);
    c.log = [this](const std::string& line) {
      std::lock_guard lock(log_mu_);
      log_lines_.push_back(line);
    };
    server = std::make_unique<net::Server>(c, service.get());
    service->attach(&server->listener());
    server->start();
  }
  ~ServerStack() { stop(); }
  ServerStack(const ServerStack&) = delete;
  ServerStack& operator=(const ServerStack&) = delete;

  // Server first (it answers what it received), then the ledger's last effects, then the rest.
  void stop() {
    if (!server) return;
    server->shutdown(10'000);
    service->ledger().drain();
    service->attach(nullptr);
    server.reset();
    service.reset();
  }
  // Options of a client of test key `key_id` to this server.
  net::ClientOptions client(uint32_t key_id) const {
    net::ClientOptions o;
    o.port = server->port();
    o.key_id = key_id;
    o.secret = test_secret(key_id);
    o.request_timeout_ms = 20'000;
    return o;
  }
  std::vector<std::string> log_lines() {
    std::lock_guard lock(log_mu_);
    return log_lines_;
  }
  // How many logged lines contain `what`.
  int logged(const std::string& what) {
    int n = 0;
    for (const std::string& l : log_lines()) n += l.find(what) != std::string::npos;
    return n;
  }

  std::unique_ptr<DurableService> service;
  std::unique_ptr<net::Server> server;

 private:
  std::mutex log_mu_;
  std::vector<std::string> log_lines_;
};

inline Event event(EventKind kind, uint64_t account, int64_t amount, const std::string& ref,
                   uint32_t program = 1) {
  Event e;
  e.kind = kind;
  e.account = account;
  e.amount = amount;
  e.program = program;
  if (!ref.empty()) e.ref = reference_from_string(ref);
  return e;
}

// Submits one event; a transport error fails the test.
inline net::WireResult submit_one(net::Client& c, const Event& e) {
  std::vector<net::WireResult> r;
  net::ClientError err = c.submit(std::span(&e, 1), &r);
  EXPECT_FALSE(err) << err.message;
  return r.empty() ? net::WireResult{} : r[0];
}

// A plain TCP connection to 127.0.0.1:port, for hostile bytes; -1 if refused.
inline int raw_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace tally::testing
