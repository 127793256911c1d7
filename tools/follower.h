// Tally tools: a follower — a hot copy of a primary's ledger, fed by its change stream.
//
// `tallyd --follow HOST:PORT` runs this instead of the primary's DurableService, behind the same
// network server (it is a LedgerService). It subscribes to the primary with a replica key and, for
// every batch the stream delivers (each checked: hash and chain, tools/log_stream.h):
//   1. appends it to its own LMDB log, byte for byte as the primary logged it, with the history
//      index, in one durable transaction per received frame (fsync, like the primary);
//   2. re-applies its records to its in-memory shards (storage::Replayer: each effect replayed and
//      compared with the logged one, so a divergence stops the follower, loudly, instead of
//      serving wrong balances);
//   3. acknowledges it on the stream (the primary keeps its cursor `NAME`, so the primary's log is
//      not trimmed past what the follower has).
// It serves balance reads (from its shards), history and lookup (from its LMDB), stats, info and
// its own change stream (followers of followers); every write is answered not_primary, and `info`
// names the primary. After a restart it resumes at its last batch + 1, checking that the
// primary's next batch follows its last one's hash: no gap, no duplicate.
//
// Epochs (DESIGN section 8): a batch of an epoch lower than the highest this follower has stored
// is refused (an old primary that came back); promotion (`tally-admin promote`) raises the epoch.
//
// Threads: one replication thread; the LedgerService methods from the network threads (balance
// reads share the shards under a reader lock with the replication thread's writer lock).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/program.h"
#include "engine/service.h"
#include "engine/shard.h"
#include "engine/slot_map.h"
#include "net/client.h"
#include "storage/history.h"
#include "storage/recovery.h"
#include "storage/store.h"

namespace tally {

struct FollowerOptions {
  storage::StoreOptions store;       // the follower's own data directory
  uint16_t shard_count = 1;          // must be the primary's
  std::vector<Program> programs;     // must be the primary's rules (replay checks every effect)
  uint64_t references_max = 1u << 20;
  storage::HistoryOptions history;
  net::ClientOptions primary;        // host, port and a replica key of the primary
  std::string cursor_name = "follower";  // the primary keeps this follower's cursor under it
  int64_t retry_ms = 500;            // between reconnection attempts
  size_t frame_bytes = 1u << 20;     // stream frames (one local commit each)
  std::function<void(const std::string&)> log;  // notable events (default: stderr)
};

struct FollowerStatus {
  bool connected = false;
  uint64_t applied_lsn = 0;          // durable here and applied to the shards
  uint64_t primary_durable_lsn = 0;  // as the primary last said
  uint64_t epoch = 1;
  uint64_t batches = 0;              // received since start
  uint64_t commits = 0;
  std::string failure;               // non-empty: stopped following (divergence, disk, epoch)
};

class FollowerService final : public LedgerService {
 public:
  // Opens the data directory, replays its log into the shards, and starts following. Throws
  // storage::StorageError like storage::Ledger (a corrupt log, other shard count or rules).
  explicit FollowerService(FollowerOptions options);
  ~FollowerService() override;
  FollowerService(const FollowerService&) = delete;
  FollowerService& operator=(const FollowerService&) = delete;

  void attach(EffectListener* listener);
  FollowerStatus status() const;
  // Waits until the follower has applied `lsn` (or failed, or `timeout_ms` passed); true if applied.
  bool wait_applied(uint64_t lsn, int64_t timeout_ms);
  // XXH3-64 over every account of every program in (program, account) order, and each program's
  // totals: equal on two ledgers that hold the same state.
  uint64_t digest();
  // Stops following (the data stays; a restart resumes).
  void stop();
  storage::Store& store() { return *store_; }

  void submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) override;
  std::vector<HistoryEntry> history(uint32_t program, uint64_t account, size_t limit, LogPos before) override;
  Result statement(uint32_t program, uint64_t account, Statement* out) override;
  std::vector<HistoryEntry> lookup(uint32_t program, const Ref128& ref) override;
  std::optional<ProgramStats> program_stats(uint32_t program) override;
  const Program* rules(uint32_t program) override {
    for (const Program& p : options_.programs)
      if (p.id == program) return &p;
    return nullptr;
  }
  LogSummary log_summary() override;
  std::string server_info() override;
  LogRange log_range() override;
  LogRead read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) override;
  std::optional<uint64_t> cursor(const std::string& name) override;
  void set_cursor(const std::string& name, uint64_t lsn) override;

 private:
  void run();
  void log(const std::string& line) const;
  void fail(const std::string& why);

  FollowerOptions options_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<FraudSet> fraud_;
  std::vector<std::unique_ptr<Shard>> shards_;
  SlotMap slots_;
  std::unique_ptr<storage::Replayer> replayer_;   // replication thread only (after start)
  std::unique_ptr<storage::Indexer> indexer_;     // replication thread only
  mutable std::shared_mutex state_mu_;            // the shards: readers shared, the applier exclusive

  std::atomic<EffectListener*> listener_{nullptr};
  std::mutex listener_mu_;                        // one caller of the listener at a time

  mutable std::mutex mu_;
  std::condition_variable cv_;                    // progress, failure, stop
  FollowerStatus status_;
  uint64_t next_prev_hash_ = 0;                   // the hash the next batch must follow
  std::vector<std::pair<std::string, uint64_t>> cursors_;  // of this follower's own subscribers
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tally
