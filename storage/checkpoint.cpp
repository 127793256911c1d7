#include "storage/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <limits>
#include <stdexcept>

#include "storage/log_codec.h"

namespace tally::storage {

// ---- open legs ----------------------------------------------------------------------------------
void OpenLegs::observe(const Effect& f) {
  // A leg's effect depends on the effect that sent it, so the log holds them in that order
  // (engine/shard.cpp, leg_origin).
  auto key = std::make_pair(f.event.ref.lo, f.event.ref.hi);
  if (f.event.kind == EventKind::kTransfer && f.result == Result::kOk && !(f.flags & kEffectReplay)) {
    Event leg = f.event;
    leg.kind = EventKind::kTransferIn;
    leg.account = f.event.counterparty;
    leg.counterparty = f.event.account;
    leg.target = {f.seq, f.shard};  // as Shard::on_transfer forwards it
    legs_[key] = leg;
  } else if (f.event.kind == EventKind::kTransferIn) {
    legs_.erase(key);
    if (f.flags & kEffectBounced) {
      Event bounce = f.event;
      bounce.kind = EventKind::kTransferBounce;
      bounce.account = f.event.counterparty;
      bounce.counterparty = f.event.account;
      bounce.target = {f.seq, f.shard};
      bounces_[key] = bounce;
    }
  } else if (f.event.kind == EventKind::kTransferBounce) {
    bounces_.erase(key);
  }
}

std::vector<Event> OpenLegs::owed() const {
  std::vector<Event> out;
  for (const auto& [k, e] : legs_) out.push_back(e);
  for (const auto& [k, e] : bounces_) out.push_back(e);
  return out;
}

// Events as in memory (the layout is pinned by static_assert in engine/types.h).
std::string OpenLegs::encode() const {
  std::string out;
  for (const auto* m : {&legs_, &bounces_})
    for (const auto& [k, e] : *m) out.append(reinterpret_cast<const char*>(&e), sizeof(Event));
  return out;
}

OpenLegs OpenLegs::decode(std::string_view bytes) {
  if (bytes.size() % sizeof(Event) != 0) throw StorageError("meta open_legs: not a list of transfer legs", 0);
  OpenLegs legs;
  for (size_t off = 0; off < bytes.size(); off += sizeof(Event)) {
    Event e;
    std::memcpy(&e, bytes.data() + off, sizeof(Event));
    auto key = std::make_pair(e.ref.lo, e.ref.hi);
    if (e.kind == EventKind::kTransferIn) legs.legs_[key] = e;
    else if (e.kind == EventKind::kTransferBounce) legs.bounces_[key] = e;
    else throw StorageError("meta open_legs: an entry that is not a transfer leg", 0);
  }
  return legs;
}

// ---- claims -------------------------------------------------------------------------------------
void append_claim(std::vector<uint8_t>* out, const Effect& f) {
  uint8_t c[kClaimBytes];
  uint16_t day = reference_day(f.event, f.time_ms);
  std::memcpy(c, &f.event.program, 4);
  std::memcpy(c + 4, &f.event.ref.lo, 8);
  std::memcpy(c + 12, &f.event.ref.hi, 8);
  std::memcpy(c + 20, &f.shard, 2);
  std::memcpy(c + 22, &day, 2);
  out->insert(out->end(), c, c + kClaimBytes);
}

// ---- the committer's side -----------------------------------------------------------------------
Checkpointer::Checkpointer(Store* store, CheckpointOptions options, uint16_t shard_count, CheckpointStart start,
                           std::function<void(uint64_t)> request_round)
    : store_(store), options_(options), request_round_(std::move(request_round)), shard_count_(shard_count),
      complete_(start.round), cuts_(std::move(start.cut_seq)), cut_of_round_(shard_count, 0),
      state_of_round_(shard_count), done_(shard_count, false), durable_seq_(std::move(start.applied_seq)),
      txn_seq_(shard_count, 0), shard_queued_(shard_count, 0), stale_(std::move(start.stale)),
      trim_ready_(start.round > 0),
      trim_lsn_(start.trim_lsn), open_legs_(std::move(start.open_legs)), dedup_claims_(start.dedup_claims) {
  cuts_.resize(shard_count, 0);
  durable_seq_.resize(shard_count, 0);
  stats_.round = complete_;
  stats_.trim_lsn = trim_lsn_;
  stats_.dedup_claims = dedup_claims_;
}

void Checkpointer::prepare(std::vector<CheckpointPiece>& pieces, std::span<const Effect> effects,
                           uint64_t log_bytes, WriteSet* w) {
  for (const Effect& e : effects)
    if (e.shard < shard_count_) txn_seq_[e.shard] = std::max(txn_seq_[e.shard], e.seq);
  bytes_since_round_ += log_bytes;
  if (!stale_.empty()) {
    w->slice_erase = std::move(stale_);
    stale_.clear();
  }
  w->slices_complete_round = complete_;
  enqueue(pieces);
  take_slices(w);
  // Complete: every shard sent its last piece, all of its slices are in this transaction or an
  // earlier one, and every effect up to each cut is durable by the end of this transaction (each
  // shard's effects reach the committer in sequence order).
  bool all_written = true;
  for (uint16_t i = 0; i < shard_count_; ++i) all_written &= done_[i] && shard_queued_[i] == 0;
  if (in_progress_ != 0 && all_written) {
    bool durable = true;
    for (uint16_t i = 0; i < shard_count_; ++i)
      durable &= std::max(durable_seq_[i], txn_seq_[i]) >= cut_of_round_[i];
    if (durable) {
      completing_ = in_progress_;
      w->meta.emplace_back("checkpoint_round", std::to_string(in_progress_));
      for (uint16_t i = 0; i < shard_count_; ++i)
        w->meta.emplace_back("checkpoint_state." + std::to_string(i), state_of_round_[i]);
    }
  }
  trim(w);
}

// Pieces as shards sent them: their slices join the queue (the bytes stay in the piece's buffer).
void Checkpointer::enqueue(std::vector<CheckpointPiece>& pieces) {
  for (CheckpointPiece& p : pieces) {
    if (p.round != in_progress_ || p.shard >= shard_count_) continue;  // cannot happen; never trusted
    uint64_t id = next_piece_++;
    QueuedPiece& q = queued_pieces_[id];
    q.piece = std::move(p);
    std::span<const uint8_t> in(q.piece.slices);
    SliceRecord r;
    while (next_slice_record(&in, &r)) {
      SliceId key{q.piece.shard, r.program, r.table, r.slice};
      auto [it, inserted] = queue_.try_emplace(key, QueuedSlice{r.bytes, id});
      queued_bytes_ += r.bytes.size();
      if (inserted) {
        ++q.left;
        ++shard_queued_[q.piece.shard];
      } else if (it->second.piece != id) {  // saved twice in a round: cannot happen; the newer wins
        queued_bytes_ -= it->second.bytes.size();
        uint64_t old = it->second.piece;
        it->second = {r.bytes, id};
        ++q.left;
        release(old);
      } else {
        queued_bytes_ -= it->second.bytes.size();
        it->second.bytes = r.bytes;
      }
    }
    if (q.piece.done) {
      done_[q.piece.shard] = true;
      cut_of_round_[q.piece.shard] = q.piece.cut_seq;
      state_of_round_[q.piece.shard] = std::string(q.piece.state.begin(), q.piece.state.end());
    }
    if (q.left == 0) {  // nothing to write: only its state matters
      holding_.push_back(std::move(q.piece));
      queued_pieces_.erase(id);
    }
  }
  pieces.clear();
  stats_.queued_bytes_max = std::max(stats_.queued_bytes_max, queued_bytes_);
}

// The next queued slices in key order, from where the previous transaction stopped (wrapping
// around), up to the budget of one transaction.
void Checkpointer::take_slices(WriteSet* w) {
  size_t budget = options_.slice_bytes_per_commit == 0 ? std::numeric_limits<size_t>::max()
                                                       : options_.slice_bytes_per_commit;
  size_t taken = 0;
  auto it = queue_.lower_bound(sweep_);
  while (taken < budget && !queue_.empty()) {
    if (it == queue_.end()) it = queue_.begin();
    const auto& [shard, program, table, slice] = it->first;
    const QueuedSlice& q = it->second;
    w->slices.push_back({{shard, program, table, slice, in_progress_}, q.bytes});
    taken += kSliceRecordHeader + q.bytes.size();
    ++stats_.slices_written;
    stats_.slice_bytes += q.bytes.size();
    queued_bytes_ -= q.bytes.size();
    --shard_queued_[shard];
    release(q.piece);  // its buffer stays alive in holding_ until the transaction is durable
    it = queue_.erase(it);
  }
  sweep_ = it == queue_.end() ? SliceId{} : it->first;
  stats_.queued_bytes = queued_bytes_;
}

// One slice of the piece is in a transaction now: the last one moves the piece to holding_.
void Checkpointer::release(uint64_t piece) {
  auto it = queued_pieces_.find(piece);
  if (it == queued_pieces_.end() || --it->second.left > 0) return;
  holding_.push_back(std::move(it->second.piece));  // a move keeps the buffer the spans point into
  queued_pieces_.erase(it);
}

uint64_t Checkpointer::cursor_limit(WriteSet* w) {
  uint64_t limit = trim_limit_ ? trim_limit_() : std::numeric_limits<uint64_t>::max();
  uint64_t end = store_->last_lsn();
  for (const auto& [key, value] : store_->meta_with_prefix("cursor.")) {
    uint64_t at = std::strtoull(value.c_str(), nullptr, 10);
    if (end > at && end - at > options_.cursor_retention_batches) {
      std::cerr << "tally: consumer " << key.substr(7) << " dropped: its cursor at LSN " << at << " is "
                << end - at << " batches behind the log's end, beyond the retention of "
                << options_.cursor_retention_batches << " batches; the log is trimmed past it\n";
      w->meta_erase.push_back(key);
      ++stats_.cursors_dropped;
      continue;
    }
    limit = std::min(limit, at);
  }
  return limit;
}

void Checkpointer::trim(WriteSet* w) {
  if (!trim_ready_ || complete_ == 0) return;
  uint64_t limit = cursor_limit(w);
  OpenLegs legs = open_legs_;
  std::vector<uint8_t> claims;
  std::vector<Effect> records;
  uint64_t last = 0, last_hash = 0, n = 0, claim_count = 0;
  bool blocked = false;
  store_->scan(trim_lsn_ + 1, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    if (lsn > limit || n >= options_.trim_batches_per_commit) {
      blocked = lsn > limit;
      return false;
    }
    records.clear();
    BatchHeader h;
    if (decode_batch(bytes, &h, &records) != DecodeError::kOk) {  // left for verify to report
      blocked = true;
      return false;
    }
    for (const Effect& f : records)
      if (f.shard >= shard_count_ || f.seq > cuts_[f.shard]) {  // not in the checkpoint yet
        blocked = true;
        return false;
      }
    for (const Effect& f : records) {
      if (f.flags & kEffectClaimed) {
        append_claim(&claims, f);
        ++claim_count;
      }
      legs.observe(f);
    }
    last = lsn;
    last_hash = h.hash;
    ++n;
    return true;
  });
  if (n == 0) {
    trim_ready_ = false;  // until the next round completes
    return;
  }
  if (blocked) trim_ready_ = false;
  for (size_t off = 0; off < claims.size(); off += kClaimsPerValue * kClaimBytes) {
    size_t len = std::min(claims.size() - off, kClaimsPerValue * kClaimBytes);
    dedup_values_.emplace_back(claims.begin() + static_cast<std::ptrdiff_t>(off),
                               claims.begin() + static_cast<std::ptrdiff_t>(off + len));
  }
  for (const auto& v : dedup_values_) w->dedup.emplace_back(v);
  w->trim_through = last;
  pending_trim_lsn_ = last;
  pending_legs_ = std::move(legs);
  pending_claims_ = dedup_claims_ + claim_count;
  w->meta.emplace_back("trim_lsn", std::to_string(last));
  w->meta.emplace_back("trim_hash", std::to_string(last_hash));
  w->meta.emplace_back("open_legs", pending_legs_.encode());
  w->meta.emplace_back("dedup_claims", std::to_string(pending_claims_));
  stats_.trimmed_batches += n;
}

void Checkpointer::committed() {
  for (uint16_t i = 0; i < shard_count_; ++i) durable_seq_[i] = std::max(durable_seq_[i], txn_seq_[i]);
  holding_.clear();
  dedup_values_.clear();
  if (completing_ != 0) {
    complete_ = completing_;
    cuts_ = cut_of_round_;
    in_progress_ = 0;
    completing_ = 0;
    trim_ready_ = true;
    ++stats_.rounds_completed;
  }
  if (pending_trim_lsn_ != 0) {
    trim_lsn_ = pending_trim_lsn_;
    open_legs_ = std::move(pending_legs_);
    pending_legs_ = OpenLegs();
    dedup_claims_ = pending_claims_;
    pending_trim_lsn_ = 0;
  }
  if (in_progress_ == 0 &&
      (requested_ || (options_.interval_log_bytes > 0 && bytes_since_round_ >= options_.interval_log_bytes))) {
    in_progress_ = complete_ + 1;
    std::fill(done_.begin(), done_.end(), false);
    bytes_since_round_ = 0;
    requested_ = false;
    request_round_(in_progress_);
  }
  stats_.round = complete_;
  stats_.in_progress = in_progress_;
  stats_.trim_lsn = trim_lsn_;
  stats_.dedup_claims = dedup_claims_;
}

CheckpointStats Checkpointer::stats() const { return stats_; }

// ---- recovery -----------------------------------------------------------------------------------
CheckpointStart load_checkpoint(const Store& store, std::span<Shard* const> shards) {
  auto t0 = std::chrono::steady_clock::now();
  CheckpointStart st;
  st.cut_seq.assign(shards.size(), 0);
  if (auto v = store.meta("checkpoint_round")) st.round = static_cast<uint32_t>(std::stoul(*v));
  if (auto v = store.meta("trim_lsn")) st.trim_lsn = std::stoull(*v);
  if (auto v = store.meta("dedup_claims")) st.dedup_claims = std::stoull(*v);
  if (auto v = store.meta("open_legs")) st.open_legs = OpenLegs::decode(*v);
  const std::string& dir = store.options().dir;
  if (st.round > 0) {
    for (size_t i = 0; i < shards.size(); ++i) {
      auto state = store.meta("checkpoint_state." + std::to_string(i));
      if (!state) throw StorageError(dir + ": checkpoint round " + std::to_string(st.round) + " lacks shard " +
                                         std::to_string(i) + "'s state",
                                     0);
      try {
        shards[i]->restore_state(std::span(reinterpret_cast<const uint8_t*>(state->data()), state->size()));
      } catch (const std::runtime_error& e) {
        throw StorageError(dir + ": checkpoint round " + std::to_string(st.round) + ", shard " + std::to_string(i) +
                               ": " + e.what(),
                           0);
      }
      st.cut_seq[i] = shards[i]->last_seq();
    }
  }
  // Slice versions come in key order: by slice, then by round. Each version at or below the
  // complete round is restored as it comes, so the newest of them is the one left; newer ones
  // belong to a round that never completed. (Restored inside the scan: the bytes live in its read
  // transaction.)
  store.scan_slices([&](const SliceKey& k, std::span<const uint8_t> bytes) {
    if (k.round > st.round) {
      st.stale.push_back(k);
      return;
    }
    if (k.shard >= shards.size())
      throw StorageError(dir + ": a checkpoint slice of shard " + std::to_string(k.shard) + ", but only " +
                             std::to_string(shards.size()) + " shards are configured",
                         0);
    try {
      shards[k.shard]->restore_slice(k.program, k.table, k.slice, bytes);
    } catch (const std::runtime_error& e) {
      throw StorageError(dir + ": " + e.what(), 0);
    }
  });
  for (Shard* s : shards) s->finish_restore();
  auto t1 = std::chrono::steady_clock::now();
  st.load_seconds = std::chrono::duration<double>(t1 - t0).count();
  // References of the trimmed log, back into the fraud set, thousands at a time (the bulk insert
  // overlaps their memory misses: one by one, each waited for two of them).
  if (!shards.empty()) {
    FraudSet& fraud = shards[0]->fraud_set();
    std::vector<FraudSet::BulkClaim> batch;
    constexpr size_t kBatchClaims = 8192;
    batch.reserve(kBatchClaims + kClaimsPerValue);
    auto flush = [&] {
      size_t done = fraud.insert_unsynchronised(batch);
      for (size_t i = done; i < batch.size(); ++i)  // full: fine only for references held already
        if (!fraud.find(batch[i].program, batch[i].ref).found)
          throw StorageError(dir + ": the fraud set is too small for the checkpointed order references", 0);
      batch.clear();
    };
    store.scan_dedup([&](std::span<const uint8_t> value) {
      if (value.size() % kClaimBytes != 0) throw StorageError(dir + ": a dedup value of the wrong size", 0);
      for (size_t off = 0; off < value.size(); off += kClaimBytes) {
        const uint8_t* c = value.data() + off;
        FraudSet::BulkClaim& claim = batch.emplace_back();
        std::memcpy(&claim.program, c, 4);
        std::memcpy(&claim.ref.lo, c + 4, 8);
        std::memcpy(&claim.ref.hi, c + 12, 8);
        std::memcpy(&claim.shard, c + 20, 2);
        std::memcpy(&claim.day, c + 22, 2);
      }
      if (batch.size() >= kBatchClaims) flush();
    });
    flush();
  }
  st.refill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  st.applied_seq = st.cut_seq;
  return st;
}

}  // namespace tally::storage
