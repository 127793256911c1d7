// Tally storage: reading the log back — verification and replay.
//
// verify_log() walks every batch: checksum, LSN continuity, the hash chain, record decoding. It
// needs no engine and is what `tally-admin verify` and recovery run first.
//
// replay_log() loads the last complete checkpoint into fresh shards (storage/checkpoint.h), then
// re-applies every logged effect the checkpoint does not hold (Shard::apply_logged), in log order,
// and checks that each effect the engine produces equals the logged one: same result, points,
// resulting balances, sequence. The log is thereby verified twice, as bytes and as meaning. What
// recovery returns besides the rebuilt shards:
//   - effects the engine produced at the very end that the log does not hold (hold expiries due
//     at the time of an event whose own effect was lost with the crash): the caller logs them first;
//   - transfer legs to re-send: a transfer whose receiver's leg never reached the log, a bounce
//     whose refund never did.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/shard.h"
#include "engine/types.h"
#include "storage/checkpoint.h"
#include "storage/committer.h"
#include "storage/store.h"

namespace tally::storage {

struct LogCheck {
  bool ok = true;
  uint64_t batches = 0;
  uint64_t records = 0;
  uint64_t claims = 0;        // records that claimed an order reference (fraud-set entries)
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  uint64_t bad_lsn = 0;       // the first bad batch (or where a missing one should be)
  std::string error;          // what is wrong with it
  LogPosition next;           // where appending continues (valid when ok)
};

// Walks the log from its first batch. Stops at the first problem.
LogCheck verify_log(const Store& store);

struct ReplayResult {
  LogCheck log;
  CheckpointStart checkpoint;         // where checkpointing resumes
  uint64_t skipped = 0;               // records the checkpoint held already (not re-applied)
  std::vector<Effect> unlogged_tail;  // to append before anything else
  std::vector<Event> legs;            // to re-send (Pipeline::resend_legs)
  int64_t last_time_ms = 0;           // the latest server time in the log
  double seconds = 0;
};

// replay_log() one batch at a time, for a follower that keeps applying what its primary streams.
// Not thread-safe; the shards are the caller's, and only the Replayer may change them meanwhile.
class Replayer {
 public:
  // Loads the last complete checkpoint of `store` into `shards`.
  Replayer(const Store& store, std::span<Shard* const> shards);
  ~Replayer();
  // Checks batch `lsn` (checksum, LSN continuity, chain) and re-applies its records, comparing
  // each with the logged one. Empty on success; else what is wrong (the shards are then unusable).
  std::string apply(uint64_t lsn, std::span<const uint8_t> bytes);
  // Where the next batch must continue (LSN and the previous batch's hash).
  const LogPosition& next() const;
  // What replay_log() returns, as of the batches applied so far.
  ReplayResult finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Throws StorageError when the log is corrupt or does not replay to what it says (naming the LSN
// and the difference); the shards are then unusable.
ReplayResult replay_log(const Store& store, std::span<Shard* const> shards);

}  // namespace tally::storage
