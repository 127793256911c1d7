// Tally engine: the small interfaces between the network layer and the durable ledger.
//
// net/ must not depend on storage/ (docs/architecture.md, layering), yet a server has to submit
// events to the ledger, hear back when their effects are durable, and answer history and lookup
// queries from the log. These two interfaces are that contract; tools/tallyd.cpp wires the
// storage ledger to them.
//
// Threads: submit() from the producer thread it names (one thread per producer index); the
// listener's methods on the ledger's committer thread; the queries from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/history_entry.h"
#include "engine/shard.h"  // ProgramStats
#include "engine/types.h"

namespace tally {

// What the server hears from the ledger. Both methods run on the committer thread and must be
// quick: they hand results to the network threads and return.
class EffectListener {
 public:
  virtual ~EffectListener() = default;
  // These effects (reads included) are durable, or observed only durable state; in per-shard
  // order. Effects of internal kinds and with tag 0 are not replies to anybody.
  virtual void on_durable(std::span<const Effect> effects) = 0;
  // These effects will never be durable: the log failed (`why` says how). Nothing after them will
  // be durable either.
  virtual void on_failed(std::span<const Effect> effects, const std::string& why) = 0;
  // The durable log has grown (subscribers may read on), whether or not replies are released
  // with it (a semi-synchronous primary holds them for its followers). Any thread.
  virtual void on_log_advanced() {}
};

// What the durable log has done since the server started: for operators and load generators
// (tally stats, tally-bench). Percentiles from log-linear histograms (a few percent).
struct LogSummary {
  uint64_t durable_lsn = 0;  // the last log batch on disk
  uint64_t commits = 0;      // transactions (each one fsync)
  uint64_t records = 0;      // effects logged (reads excluded)
  uint64_t bytes = 0;        // encoded log bytes
  uint64_t records_per_commit_p50 = 0, records_per_commit_p99 = 0, records_per_commit_max = 0;
  uint64_t commit_us_p50 = 0, commit_us_p99 = 0, commit_us_max = 0;  // write and fsync
};

// The change stream's view of the log (docs/protocol.md, "Subscribe").
struct LogRange {
  uint64_t oldest_lsn = 1;   // the first batch still in the log (trim point + 1)
  uint64_t durable_lsn = 0;  // the last batch on disk; the stream never goes past it
  uint64_t epoch = 1;
};
struct LogRead {
  bool trimmed = false;      // `from` is older than the oldest batch still in the log
  uint32_t batches = 0;      // appended to the output
  uint64_t next_lsn = 0;     // the LSN to read next
  LogRange range;
};

// What the server asks of the ledger.
class LedgerService {
 public:
  virtual ~LedgerService() = default;
  // Routes `events` (already checked for program and role, tagged for their replies) to their
  // shards, all stamped `time_ms`. Waits while a shard's ring is full (backpressure).
  virtual void submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) = 0;
  // A page of a member's statement, newest first, strictly before `before`; committed effects only.
  virtual std::vector<HistoryEntry> history(uint32_t program, uint64_t account, size_t limit,
                                            LogPos before) = 0;
  // Every committed effect whose reference or target is `ref` in `program`, oldest first.
  virtual std::vector<HistoryEntry> lookup(uint32_t program, const Ref128& ref) = 0;
  // A program's totals over all shards, as applied (an effect counts here before it is durable,
  // never after its reply); nullopt for a program the ledger does not run. Any thread.
  virtual std::optional<ProgramStats> program_stats(uint32_t program) = 0;
  virtual LogSummary log_summary() = 0;
  // A member's lots and points as of now (Shard::statement): kOk, kProgramNotFound or
  // kAccountNotFound. Any thread; waits for the member's shard.
  virtual Result statement(uint32_t program, uint64_t account, Statement* out) = 0;
  // What this server is, as "key=value" lines: role=primary|follower, epoch=N, durable_lsn=N, and
  // for a follower primary=HOST:PORT (docs/protocol.md, "Info"). Any thread.
  virtual std::string server_info() = 0;
  // The rules of a program the ledger runs (immutable while it runs); null for another. Any thread.
  virtual const Program* rules(uint32_t program) { (void)program; return nullptr; }

  // ---- the change stream; any thread ----
  virtual LogRange log_range() = 0;
  // Appends durable batches from LSN `from` on, each as a u32 length and its bytes, until about
  // `max_bytes` are appended (at least one batch when there is one); `program` non-zero: each batch
  // filtered to that program's records (storage/log_codec.h, filter_batch). Never past the durable
  // LSN; trimmed = true (nothing appended) when `from` is no longer in the log.
  virtual LogRead read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) = 0;
  // A named consumer's durable cursor: the last LSN it acknowledged (nullopt: none), and a new
  // value, written with the log's next commit.
  virtual std::optional<uint64_t> cursor(const std::string& name) = 0;
  virtual void set_cursor(const std::string& name, uint64_t lsn) = 0;
  // A synchronous follower (subscribed with kSubscribeSync) has everything through `lsn`
  // durably; and it is gone. Semi-synchronous acknowledgement counts these. Network threads.
  virtual void follower_ack(const std::string& name, uint64_t lsn) { (void)name, (void)lsn; }
  virtual void follower_gone(const std::string& name) { (void)name; }
};

}  // namespace tally
