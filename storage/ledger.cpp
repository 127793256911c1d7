#include "storage/ledger.h"

#include <chrono>

#include "storage/program_codec.h"

namespace tally::storage {

bool check_ledger_meta(const Store& store, uint16_t shard_count, const std::vector<Program>& programs) {
  const std::string& dir = store.options().dir;
  // The data directory must be read with the shard layout and rules it was written with.
  std::optional<std::string> shards = store.meta("shard_count");
  std::optional<std::string> stored_programs = store.meta("programs");
  if (!shards) return true;
  if (std::stoul(*shards) != shard_count)
    throw StorageError(dir + " was written by " + *shards + " shards, but " + std::to_string(shard_count) +
                           " are configured; the shard count of a data directory cannot change",
                       0);
  std::optional<std::vector<Program>> stored = stored_programs ? decode_programs(*stored_programs) : std::nullopt;
  if (!stored) throw StorageError(dir + ": the stored program definitions are unreadable", 0);
  std::string diff = rule_difference(*stored, programs);
  if (!diff.empty())
    throw StorageError(dir + ": " + diff +
                           ". The log must be replayed under the rules it was written with; start "
                           "with those rules (changing rules on a running ledger is not supported yet)",
                       0);
  return false;
}

std::vector<std::pair<std::string, std::string>> ledger_meta(uint16_t shard_count, const std::vector<Program>& programs) {
  return {{"shard_count", std::to_string(shard_count)}, {"programs", encode_programs(programs)}};
}

uint64_t stored_epoch(const Store& store) {
  std::optional<std::string> e = store.meta("epoch");
  return e ? std::stoull(*e) : 1;
}

Ledger::Ledger(LedgerOptions o, DurableSink on_durable, FailureSink on_failure, CommitTrace trace) {
  store_ = std::make_unique<Store>(o.store);

  report_.fresh = check_ledger_meta(*store_, o.pipeline.shard_count, o.pipeline.programs);
  o.committer.epoch = stored_epoch(*store_);

  // A first pass over the log: bytes, chain, and how many references the fraud set must hold.
  auto verify_start = std::chrono::steady_clock::now();
  LogCheck check = verify_log(*store_);
  report_.verify_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - verify_start).count();
  if (!check.ok)
    throw StorageError("log batch " + std::to_string(check.bad_lsn) + ": " + check.error +
                           ". Refusing to start on a corrupt log: `tally-admin verify` reports it; "
                           "`tally-admin repair` truncates the log to the last good batch, saying what it drops.",
                       0);
  // The fraud set must hold every reference in the log and the checkpoint plus room to work:
  // raised, never refused.
  uint64_t checkpointed = 0;
  if (auto v = store_->meta("dedup_claims")) checkpointed = std::stoull(*v);
  uint64_t claims = check.claims + checkpointed;
  uint64_t needed = claims + claims / 4 + 1024;
  if (o.pipeline.references_max < needed) o.pipeline.references_max = needed;
  report_.references = claims;
  report_.references_max = o.pipeline.references_max;

  ReplayResult replay;
  if (o.checkpoints)
    o.pipeline.checkpoint_sink = [this](CheckpointPiece&& p) { committer_->add_checkpoint(std::move(p)); };
  pipeline_ = std::make_unique<Pipeline>(
      o.pipeline, [this](std::span<const Effect> effects) { committer_->append(effects); },
      [&](std::span<Shard* const> s) { replay = replay_log(*store_, s); });

  if (report_.fresh) store_->commit({}, ledger_meta(o.pipeline.shard_count, o.pipeline.programs));
  std::unique_ptr<Checkpointer> checkpointer;
  report_.checkpoint_round = replay.checkpoint.round;
  report_.checkpoint_seconds = replay.checkpoint.load_seconds;
  report_.refill_seconds = replay.checkpoint.refill_seconds;
  report_.dedup_references = replay.checkpoint.dedup_claims;
  if (o.checkpoints)
    checkpointer = std::make_unique<Checkpointer>(store_.get(), o.checkpoint, o.pipeline.shard_count,
                                                  std::move(replay.checkpoint),
                                                  [this](uint64_t round) { pipeline_->request_checkpoint(round); });
  std::unique_ptr<Indexer> indexer;
  if (o.history.enabled) indexer = std::make_unique<Indexer>(store_.get(), o.history);
  committer_ = std::make_unique<Committer>(store_.get(), o.committer, replay.log.next, std::move(on_durable),
                                           std::move(on_failure), std::move(trace), std::move(checkpointer),
                                           std::move(indexer));

  report_.batches = replay.log.batches;
  report_.records = replay.log.records;
  report_.skipped = replay.skipped;
  report_.last_lsn = replay.log.last_lsn;
  report_.tail_effects = replay.unlogged_tail.size();
  report_.legs_resent = replay.legs.size();
  report_.seconds = replay.seconds;
  // What the shards decided at the end of the log but the log lacks goes in first, so the log
  // again holds every effect the shards' state reflects.
  if (!replay.unlogged_tail.empty()) committer_->append(replay.unlogged_tail);
  if (!replay.legs.empty()) {
    int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    pipeline_->resend_legs(0, replay.legs, std::max(now, replay.last_time_ms));
  }
}

Ledger::~Ledger() { stop(); }

void Ledger::drain() {
  pipeline_->drain();
  committer_->flush();
}

void Ledger::stop() {
  if (pipeline_) pipeline_->stop();
  if (committer_) committer_->stop();
}

}  // namespace tally::storage
