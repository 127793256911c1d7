// Tally tools: the durable ledger (storage::Ledger) behind the network layer's LedgerService.
//
// The one place where net/ and storage/ meet (docs/architecture.md, layering): tallyd and the
// end-to-end tests build a DurableService, hand it to net::Server as its LedgerService, then
// attach the server's EffectListener. Effects that become durable before a listener is attached
// (recovery's tail) are replies to nobody and are dropped.
//
// Threads: submit() from the producer thread it names; the queries from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/service.h"
#include "storage/ledger.h"

namespace tally {

// The change stream's reads of a log (shared by the primary's and the follower's services):
// the range it holds up to `durable_lsn`, and LedgerService::read_log over it.
LogRange store_log_range(const storage::Store& store, uint64_t durable_lsn, uint64_t epoch);
LogRead read_store_log(const storage::Store& store, const LogRange& range, uint64_t from, size_t max_bytes,
                       uint32_t program, std::vector<uint8_t>* out);

// Semi-synchronous replication (docs/replication.md): with sync_followers = N > 0 a reply is
// released only once N synchronous followers have acknowledged its batch durably, so promoting
// one of them loses nothing acknowledged. While fewer than N are connected and caught up, replies
// wait (blocking, the default) — or, after degrade_after_ms (> 0), are released anyway, with a
// loud line on stderr: the ledger is then asynchronous until the followers are back.
struct ReplicationOptions {
  uint32_t sync_followers = 0;
  int64_t degrade_after_ms = 0;
  std::function<void(const std::string&)> log;  // default: stderr
};

class DurableService final : public LedgerService {
 public:
  // Opens (and recovers) the ledger. Throws what storage::Ledger throws.
  explicit DurableService(storage::LedgerOptions options, ReplicationOptions replication = {});
  ~DurableService() override;

  // Returns once no callback into the previous listener is running (so it can be destroyed).
  void attach(EffectListener* listener) {
    std::lock_guard lk(listener_mu_);
    listener_.store(listener, std::memory_order_release);
  }
  storage::Ledger& ledger() { return *ledger_; }

  void submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) override;
  std::vector<HistoryEntry> history(uint32_t program, uint64_t account, size_t limit, LogPos before) override;
  std::vector<HistoryEntry> lookup(uint32_t program, const Ref128& ref) override;
  std::optional<ProgramStats> program_stats(uint32_t program) override;
  const Program* rules(uint32_t program) override { return ledger_->pipeline().program(program); }
  LogSummary log_summary() override;
  Result statement(uint32_t program, uint64_t account, Statement* out) override;
  std::string server_info() override;
  LogRange log_range() override;
  LogRead read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) override;
  std::optional<uint64_t> cursor(const std::string& name) override;
  void set_cursor(const std::string& name, uint64_t lsn) override;
  void follower_ack(const std::string& name, uint64_t lsn) override;
  void follower_gone(const std::string& name) override;
  // The LSN N synchronous followers have (0 without semi-synchronous replication).
  uint64_t replicated_lsn() const;

 private:
  struct Held {
    std::vector<Effect> effects;
    uint64_t lsn;
  };
  void durable(std::span<const Effect> effects, uint64_t lsn);  // committer thread
  void release_main();
  uint64_t quorum_lsn_locked() const;
  // Calls f(listener) if one is attached, holding listener_mu_ so attach() waits for it.
  template <class F>
  void notify(F&& f) {
    std::lock_guard lk(listener_mu_);
    if (EffectListener* l = listener_.load(std::memory_order_acquire)) f(l);
  }

  ReplicationOptions repl_;
  std::atomic<EffectListener*> listener_{nullptr};
  std::mutex listener_mu_;  // held by every callback into listener_ and by attach()
  mutable std::mutex repl_mu_;
  std::condition_variable repl_cv_;
  std::deque<Held> held_;                            // durable here, waiting for the followers
  std::map<std::string, uint64_t> follower_acks_;    // connected synchronous followers
  bool degraded_ = false;
  bool repl_stopping_ = false;
  std::thread releaser_;
  std::unique_ptr<storage::Ledger> ledger_;
};

}  // namespace tally
