// Tally storage: checkpoints and log trimming (docs/checkpoints.md).
//
// A round: the committer asks every shard for a cut (Pipeline::request_checkpoint). Each shard's
// state at its cut is saved, in slices, copy-on-write, while it keeps applying events; the slices
// go into the `accounts` database under the round's number, inside the committer's ordinary
// transactions, a bounded number of bytes per transaction (the rest waits in memory, in key order,
// for the next ones). The round is complete when every shard's slices are all written and every
// effect up to each cut is durable: one transaction then writes meta `checkpoint_round` and each
// shard's small state. From then on the log before the cuts can go: the committer trims it a bounded
// number of batches per transaction, moving the order references it claimed into the `dedup`
// database and the transfer legs still owed into meta `open_legs`, and never past the slowest
// consumer cursor (meta `cursor.NAME`) unless that cursor is further behind than the retention
// limit, in which case the cursor is dropped, loudly.
//
// Recovery (load_checkpoint, then replay_log): each shard restores its state and the newest slice
// versions of the complete round, the fraud set is refilled from `dedup`, and the log is replayed
// from its first batch, skipping the records each shard's checkpoint already holds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "engine/runtime/pipeline.h"
#include "engine/shard.h"
#include "engine/types.h"
#include "storage/store.h"

namespace tally::storage {

struct CheckpointOptions {
  // Begin a round once this many bytes of log were written since the last one began (0: only
  // when asked). Smaller: a shorter replay after a crash; larger: fewer table slices rewritten.
  uint64_t interval_log_bytes = 512ull << 20;
  size_t trim_batches_per_commit = 256;  // log batches trimmed per transaction at most
  // Slice bytes written per transaction at most (0: no limit). Shards save slices as fast as
  // their writes and their idle time allow (copy on write saves most of a table within moments
  // of a cut under a uniform load); the committer queues them and writes this much with each
  // transaction, so a round never makes one commit, and the log behind it, wait for seconds.
  size_t slice_bytes_per_commit = 1u << 20;
  // A consumer cursor more than this many batches behind the end of the log no longer holds the
  // log back: it is dropped (and the drop logged).
  uint64_t cursor_retention_batches = 1ull << 22;
};

// Transfer legs owed: a transfer until its receiver's leg is logged, a bounce until the sender's
// refund is. Recovery re-sends what is owed at the end of the log; trimming carries what is owed
// at the trim point in meta `open_legs`.
class OpenLegs {
 public:
  void observe(const Effect& f);
  std::vector<Event> owed() const;
  std::string encode() const;
  // Throws StorageError on bytes that are not an encoding.
  static OpenLegs decode(std::string_view bytes);
  size_t size() const { return legs_.size() + bounces_.size(); }

 private:
  std::map<std::pair<uint64_t, uint64_t>, Event> legs_, bounces_;
};

// Order references in the dedup database: 24 bytes each (program, reference, owner shard, day).
constexpr size_t kClaimBytes = 24;
constexpr size_t kClaimsPerValue = 80;  // a value stays under LMDB's inline node limit
void append_claim(std::vector<uint8_t>* out, const Effect& f);

// Where checkpointing resumes after recovery.
struct CheckpointStart {
  uint32_t round = 0;                 // the last complete round (0: none)
  std::vector<uint64_t> cut_seq;      // per shard: its cut in that round
  std::vector<uint64_t> applied_seq;  // per shard: its last sequence after recovery (durable)
  OpenLegs open_legs;                 // as of the trim point
  uint64_t dedup_claims = 0;
  std::vector<SliceKey> stale;        // slice versions of an unfinished round: deleted first
  uint64_t trim_lsn = 0;
  double load_seconds = 0;            // what recovery spent loading the state and slices
  double refill_seconds = 0;          // and re-entering the dedup references in the fraud set
};

struct CheckpointStats {
  uint32_t round = 0;               // last complete round
  uint32_t in_progress = 0;         // round being taken (0: none)
  uint64_t rounds_completed = 0;    // in this process
  uint64_t slices_written = 0;
  uint64_t slice_bytes = 0;
  uint64_t trimmed_batches = 0;
  uint64_t trim_lsn = 0;            // last trimmed LSN
  uint64_t dedup_claims = 0;        // references held in the dedup database
  uint64_t cursors_dropped = 0;
  uint64_t queued_bytes = 0;        // slice bytes received, not yet in a transaction
  uint64_t queued_bytes_max = 0;    // the most ever queued (memory a round holds at its peak)
};

// The committer's side. Every method runs on the committer thread.
class Checkpointer {
 public:
  Checkpointer(Store* store, CheckpointOptions options, uint16_t shard_count, CheckpointStart start,
               std::function<void(uint64_t round)> request_round);

  // Adds to the transaction `w` about to be written: slices shards sent (queued, then at most
  // slice_bytes_per_commit of them per transaction, kept alive until committed()), the completion
  // of the round once its last slice is in, and a slice of trimming. `effects`
  // are the transaction's effects (for each shard's durable sequence), `log_bytes` its log bytes.
  void prepare(std::vector<CheckpointPiece>& pieces, std::span<const Effect> effects, uint64_t log_bytes,
               WriteSet* w);
  // The transaction written by prepare() is durable.
  void committed();
  // True when there is work left to do even without new effects: slices queued, or trimming.
  bool has_work() const { return trim_ready_ || !queue_.empty(); }
  // Slices received and not yet in a transaction.
  bool has_slices() const { return !queue_.empty(); }
  // Begin a round at the next commit, whatever the interval says.
  void request() { requested_ = true; }
  // Another bound on trimming: the log after the LSN it returns must stay (the history index).
  void set_trim_limit(std::function<uint64_t()> limit) { trim_limit_ = std::move(limit); }
  // That bound moved: look at the log again.
  void rearm_trim() { trim_ready_ = complete_ > 0; }
  CheckpointStats stats() const;

 private:
  void trim(WriteSet* w);
  uint64_t cursor_limit(WriteSet* w);

  Store* store_;
  CheckpointOptions options_;
  std::function<void(uint64_t)> request_round_;
  std::function<uint64_t()> trim_limit_;
  uint16_t shard_count_;
  uint32_t complete_ = 0;                 // last complete round
  std::vector<uint64_t> cuts_;            // its cuts: the log holding only records at or below may go
  uint32_t in_progress_ = 0;
  std::vector<uint64_t> cut_of_round_;    // the round in progress: cut per shard (when done)
  std::vector<std::string> state_of_round_;
  std::vector<bool> done_;                // the shard's last piece of the round arrived
  std::vector<uint64_t> durable_seq_;     // per shard, everything up to it is durable
  std::vector<uint64_t> txn_seq_;         // per shard, the highest in the transaction being written
  uint64_t bytes_since_round_ = 0;
  bool requested_ = false;
  uint32_t completing_ = 0;               // the round the pending transaction completes
  std::vector<CheckpointPiece> holding_;  // pieces whose bytes the pending transaction points into
  // Slices received and not yet in a transaction, in key order: each transaction takes the next
  // ones after the last it took (wrapping around), so consecutive puts land on the same B-tree
  // leaves instead of one random leaf each.
  using SliceId = std::tuple<uint16_t, uint32_t, uint8_t, uint64_t>;  // shard, program, table, slice
  struct QueuedSlice {
    std::span<const uint8_t> bytes;  // into the piece's buffer
    uint64_t piece;
  };
  struct QueuedPiece {
    CheckpointPiece piece;
    size_t left = 0;  // its slices not yet in a transaction
  };
  void enqueue(std::vector<CheckpointPiece>& pieces);
  void take_slices(WriteSet* w);
  void release(uint64_t piece);
  std::map<SliceId, QueuedSlice> queue_;
  std::map<uint64_t, QueuedPiece> queued_pieces_;
  uint64_t next_piece_ = 0;
  SliceId sweep_{};
  std::vector<uint64_t> shard_queued_;    // per shard: its slices in queue_
  uint64_t queued_bytes_ = 0;
  std::vector<std::vector<uint8_t>> dedup_values_;
  std::vector<SliceKey> stale_;
  // Trimming
  bool trim_ready_ = false;               // a complete round with log left to look at
  uint64_t trim_lsn_ = 0;                 // last trimmed (durable)
  uint64_t pending_trim_lsn_ = 0;
  OpenLegs open_legs_, pending_legs_;
  uint64_t dedup_claims_ = 0, pending_claims_ = 0;
  CheckpointStats stats_;
};

// Recovery, before replay: restores each shard from the complete round in `store` (state, then
// the newest slice version of that round or before), and refills the fraud set from the dedup
// database. Returns where checkpointing resumes (applied_seq is each shard's cut: replay moves it
// on). Throws StorageError when the checkpoint is unreadable or does not fit the configuration.
CheckpointStart load_checkpoint(const Store& store, std::span<Shard* const> shards);

}  // namespace tally::storage
