// Tally storage: the durable ledger — engine pipeline + LMDB log, recovered at start.
//
//   Ledger ledger(options, on_durable, on_failure);   // opens, recovers, starts
//   ledger.pipeline().submit(producer, events, clock.now_ms());
//   ... on_durable(effects, lsn) fires on the committer thread once they are on disk ...
//
// Start-up: open the store; check the data directory against the configuration (shard count and
// program rules must match what the log was written with); replay the log into the shards
// (storage/recovery.h) before any thread starts; log the effects recovery produced that the log
// lacked; re-send owed transfer legs. Only then does the ledger accept events.
#pragma once

#include <memory>
#include <string>

#include "engine/runtime/pipeline.h"
#include "storage/committer.h"
#include "storage/recovery.h"
#include "storage/store.h"

namespace tally::storage {

struct LedgerOptions {
  StoreOptions store;
  CommitterOptions committer;
  PipelineConfig pipeline;  // its checkpoint sink is the ledger's own
  CheckpointOptions checkpoint;
  bool checkpoints = true;  // off: the log is never trimmed and recovery replays all of it
  HistoryOptions history;   // the history and order-lookup index (storage/history.h)
};

struct RecoveryReport {
  bool fresh = false;            // a new data directory
  uint32_t checkpoint_round = 0; // the checkpoint loaded (0: none)
  uint64_t dedup_references = 0; // order references loaded from the checkpoint
  uint64_t batches = 0;          // log batches verified and replayed
  uint64_t records = 0;
  uint64_t skipped = 0;          // records the checkpoint held (verified, not re-applied)
  uint64_t last_lsn = 0;
  uint64_t tail_effects = 0;     // produced by replay, missing from the log, logged now
  uint64_t legs_resent = 0;
  uint64_t references = 0;       // order references the log holds (all re-entered in the fraud set)
  uint64_t references_max = 0;   // the fraud set's capacity in force (raised to fit the log if needed)
  double seconds = 0;            // loading the checkpoint and replaying the log, of which:
  double checkpoint_seconds = 0; //   the shards' state and slices
  double refill_seconds = 0;     //   the checkpointed references back into the fraud set
  double verify_seconds = 0;     // the first pass over the log (before the shards exist)
};

// The meta every ledger directory carries (docs/log-format.md, "Meta keys"). check_ledger_meta:
// true for a fresh directory; else throws StorageError when the directory was written with
// another shard count or other rules. ledger_meta: what a fresh directory gets written.
bool check_ledger_meta(const Store& store, uint16_t shard_count, const std::vector<Program>& programs);
std::vector<std::pair<std::string, std::string>> ledger_meta(uint16_t shard_count, const std::vector<Program>& programs);
// Meta `epoch` (1 when absent): raised by each promotion; every batch written carries it.
uint64_t stored_epoch(const Store& store);

class Ledger {
 public:
  // Throws StorageError (unreadable or corrupt data, a configuration that does not match it) or
  // std::invalid_argument (a bad configuration). Nothing is running when it throws.
  Ledger(LedgerOptions options, DurableSink on_durable, FailureSink on_failure, CommitTrace trace = {});
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  Pipeline& pipeline() { return *pipeline_; }
  Committer& committer() { return *committer_; }
  Store& store() { return *store_; }
  const RecoveryReport& recovery() const { return report_; }

  // Everything submitted before the call is applied, durable and released (or failed).
  void drain();
  void stop();

 private:
  std::unique_ptr<Store> store_;
  std::unique_ptr<Committer> committer_;
  std::unique_ptr<Pipeline> pipeline_;
  RecoveryReport report_;
};

}  // namespace tally::storage
