// Tally storage: the history and order-lookup index (docs/history.md).
//
// A member's statement ("what happened on my account", newest first, paged) and an order lookup
// ("what happened to order X": its decision, replays of retries, refunds, captures) must answer
// in milliseconds and outlive log trimming. One B-tree insert per record at millions of records a
// second would cost more than the log itself, so the index is written in sorted segments: the
// committer collects a compact entry per logged record; every `segment_records` records a worker
// thread sorts them, and the committer appends the sorted segment (MDB_APPEND, bounded slices per
// transaction) under a new segment number. A query reads each segment with one seek, newest
// segment first, then scans the few log batches not yet in a segment. Meta `history_lsn` is the
// last LSN indexed; trimming never passes it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/history_entry.h"
#include "engine/types.h"
#include "storage/store.h"

namespace tally::storage {

// The compact entry of one effect, from its logged form and position.
HistoryEntry history_entry(const Effect& f, LogPos at);

struct HistoryOptions {
  bool enabled = true;
  uint64_t segment_records = 1u << 20;   // records per sorted segment
  size_t entries_per_commit = 1u << 14;  // index entries appended per committer transaction (whole blocks)
};

// The committer's side. Methods on the committer thread, except where said.
class Indexer {
 public:
  // Reads where the index stands (meta) and re-collects the logged records after it.
  Indexer(Store* store, HistoryOptions options);
  ~Indexer();
  Indexer(const Indexer&) = delete;
  Indexer& operator=(const Indexer&) = delete;

  // Records of a transaction about to be written, with their log positions.
  void add(std::span<const Effect> records, std::span<const LogPos> positions);
  // Adds a slice of a sorted segment (and, with its last slice, the meta that publishes it).
  void prepare(WriteSet* w);
  // True when the transaction published a segment (indexed_lsn() moved).
  bool committed();
  // At a clean stop: waits for the segment being sorted and adds all of it to `w` (false: none).
  bool finish(WriteSet* w);
  bool has_work() const;
  uint64_t indexed_lsn() const { return indexed_lsn_; }
  // Called on the worker thread when a sorted segment is ready to be written.
  void on_built(std::function<void()> wake) { wake_ = std::move(wake); }

 private:
  struct Built;
  void start_segment();
  void reserve_collecting();

  Store* store_;
  HistoryOptions options_;
  uint32_t segments_ = 0;          // published segments
  uint64_t indexed_lsn_ = 0;       // last LSN in a published segment
  bool drop_stale_ = true;         // first transaction: delete keys of an unpublished segment
  std::vector<HistoryEntry> collecting_;  // log order
  std::unique_ptr<Built> building_;  // being sorted by the worker, then written
  std::unique_ptr<Built> spare_;     // the last one written, kept for its buffers
  std::thread worker_;
  std::atomic<bool> built_{false};
  size_t written_ = 0;             // blocks of building_ already in transactions
  size_t pending_ = 0;             // blocks in the transaction being written
  bool publishing_ = false;        // the transaction being written publishes the segment
  std::function<void()> wake_;
};

// Queries (any thread, any process). Both read the published segments and then the log after
// them, so they see every committed record.
// A member's effects, newest first, strictly before `before` (LogPos{UINT64_MAX} for the newest),
// at most `limit`; program 0 = any program (slower: all programs' keys of the account).
std::vector<HistoryEntry> history(const Store& store, uint32_t program, uint64_t account, size_t limit,
                                  LogPos before);
// Every entry of every published segment (tools and tests), in key order.
void for_each_indexed(const Store& store, const std::function<void(const HistoryEntry&)>& f);
// Every effect whose reference or target is `ref` in `program` (0 = any), oldest first.
std::vector<HistoryEntry> lookup(const Store& store, uint32_t program, const Ref128& ref);

}  // namespace tally::storage
