// Tally storage: the group committer, the one thread that makes effects durable.
//
// The pipeline's output thread append()s effects (all shards, in their release order). They are
// encoded at once into the filling stage: chained, checksummed batches of about 4 KiB each
// (storage/log_codec.h), LSNs consecutive. The committer thread takes the whole filling stage as
// soon as its previous commit has returned, writes it in one LMDB transaction and commits
// (fdatasync + meta page). Only then does it publish the durable LSN and hand the stage's effects to
// the durable sink, which releases replies. So at low load a commit carries a few events and
// returns fast; at high load commits grow up to the size cap, and append() waits (backpressure
// into the shards) while the filling stage is at the cap. Reads (kBalance) are not logged; they
// are released with the commit that follows them, so everything they observed is durable.
//
// Checkpoints (storage/checkpoint.h) ride in the same transactions: shards hand their saved
// slices to add_checkpoint(), and each transaction carries those, a round's completion when it is
// due, and a bounded slice of log trimming.
//
// Failure is final: the first commit that fails (EIO, ENOSPC, MDB_MAP_FULL at the map limit, any
// LMDB error) is not retried. The committer hands that commit's effects, and everything appended
// after, to the failure sink (storage_failed) and never to the durable sink again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/histogram.h"
#include "engine/runtime/pipeline.h"
#include "engine/types.h"
#include "storage/checkpoint.h"
#include "storage/history.h"
#include "storage/log_codec.h"
#include "storage/store.h"

namespace tally::storage {

struct CommitterOptions {
  // Size cap of one transaction: encoded log bytes and effects (both configurable; DESIGN 8).
  size_t txn_bytes_max = 8u << 20;
  size_t txn_effects_max = 65536;
  uint64_t epoch = 1;
  // Negative control for the fault tests ONLY: hand effects to the durable sink before the commit
  // has returned. Never set in a product build path (tallyd has no flag for it).
  bool unsafe_ack_before_commit = false;
};

// Where the log continues: the next LSN and the hash of the batch before it.
struct LogPosition {
  uint64_t next_lsn = 1;
  uint64_t prev_hash = 0;
};

enum class TracePoint : uint8_t { kCommitBegin, kCommitReturned, kReleased };
// Called on the committer thread at each point, with the last LSN of the commit (tests use it to
// prove that no release comes before its commit returned).
using CommitTrace = std::function<void(TracePoint, uint64_t last_lsn)>;

// On the committer thread: effects now durable (or, for reads, observed state now durable), in
// append order; `durable_lsn` is the last LSN on disk.
using DurableSink = std::function<void(std::span<const Effect>, uint64_t durable_lsn)>;
// On the committer (or appending) thread: effects that will never be durable; `why` names the
// failure.
using FailureSink = std::function<void(std::span<const Effect>, const std::string& why)>;

struct CommitterStats {
  uint64_t commits = 0;
  uint64_t batches = 0;        // log values written
  uint64_t records = 0;        // effects logged (reads excluded)
  uint64_t released = 0;       // effects handed to the durable sink (reads included)
  uint64_t bytes = 0;          // encoded batch bytes written
  LogHistogram commit_ns;      // duration of each commit (put + fsync), nanoseconds
  LogHistogram records_per_commit;
};

class Committer {
 public:
  // `checkpointer` may be null: no checkpoints, no trimming. `indexer` may be null: no history
  // index.
  Committer(Store* store, CommitterOptions options, LogPosition start, DurableSink durable,
            FailureSink failure, CommitTrace trace = {}, std::unique_ptr<Checkpointer> checkpointer = nullptr,
            std::unique_ptr<Indexer> indexer = nullptr);
  // flush(), then stops the thread.
  ~Committer();
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // One producer thread at a time (the pipeline's output thread). Waits while the filling stage is
  // at the size cap. After a failure, hands the effects to the failure sink at once.
  void append(std::span<const Effect> effects);
  // Returns once everything appended before the call is durable and released, or failed.
  void flush();
  void stop();

  // Shard threads: slices saved for a checkpoint; written with the next transaction.
  void add_checkpoint(CheckpointPiece&& piece);
  // Begins a checkpoint round now (a test or an operator's request), and returns at once.
  void request_checkpoint();
  // Waits until checkpoint round `round` is complete and no trimming is left that could be done
  // now; false if the committer failed or stopped first.
  bool wait_checkpoint(uint32_t round);
  CheckpointStats checkpoint_stats() const;

  // Consumer `name`'s cursor (meta cursor.NAME = `lsn`, docs/log-format.md), written with the
  // next transaction (one is started if the committer is idle); a later call for the same name
  // before then replaces the value. Any thread.
  void set_cursor(const std::string& name, uint64_t lsn);

  uint64_t epoch() const { return options_.epoch; }
  uint64_t durable_lsn() const { return durable_lsn_.load(std::memory_order_acquire); }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure() const;
  CommitterStats stats() const;

 private:
  struct Stage {
    std::vector<Effect> effects;          // everything appended, reads included
    std::vector<uint8_t> arena;           // finished batches, back to back
    std::vector<std::pair<uint64_t, size_t>> batches;  // (lsn, end offset in arena)
    BatchWriter open;                     // the batch being filled
    bool open_started = false;
    uint64_t records = 0;
    std::vector<CheckpointPiece> pieces;  // checkpoint slices to write with this stage
    std::vector<LogPos> positions;        // per effect: where it is logged (lsn 0: a read)
    uint32_t open_records = 0;            // records in the open batch
    void clear() {
      positions.clear();
      open_records = 0;
      effects.clear();
      arena.clear();
      batches.clear();
      open_started = false;
      records = 0;
      pieces.clear();
    }
    bool empty() const { return effects.empty() && pieces.empty(); }
  };

  void run();
  void finish_index();
  void close_open_batch(Stage& s);  // under mu_
  void fail_all(Stage& committing, const std::string& why);

  Store* store_;
  CommitterOptions options_;
  DurableSink durable_;
  FailureSink failure_;
  CommitTrace trace_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // the committer waits for effects
  std::condition_variable space_cv_;  // append waits for room; flush waits for progress
  Stage stages_[2];
  Stage* filling_ = &stages_[0];
  uint64_t next_lsn_;                 // LSN of the next batch to open (under mu_)
  uint64_t prev_hash_;                // hash of the last finished batch (under mu_)
  uint64_t appended_ = 0;             // effects appended (under mu_)
  uint64_t done_ = 0;                 // effects released or failed (under mu_)
  bool stopping_ = false;
  std::string failure_reason_;
  CommitterStats stats_;
  std::unique_ptr<Checkpointer> checkpointer_;  // used on the committer thread only
  std::unique_ptr<Indexer> indexer_;            // used on the committer thread only
  std::vector<Effect> index_records_;
  std::vector<LogPos> index_positions_;
  bool checkpoint_requested_ = false;           // (under mu_)
  std::vector<std::pair<std::string, uint64_t>> cursors_;  // to write with the next transaction (under mu_)
  CheckpointStats checkpoint_stats_;            // copy for other threads (under mu_)
  bool checkpoint_idle_ = true;                 // no trimming left to do now (under mu_)

  std::atomic<uint64_t> durable_lsn_;
  std::atomic<uint64_t> appended_hint_{0};  // appended_, readable without mu_ (for a brief spin)
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

}  // namespace tally::storage
