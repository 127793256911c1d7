#include "storage/committer.h"

#include <chrono>

namespace tally::storage {

Committer::Committer(Store* store, CommitterOptions options, LogPosition start, DurableSink durable,
                     FailureSink failure, CommitTrace trace, std::unique_ptr<Checkpointer> checkpointer,
                     std::unique_ptr<Indexer> indexer)
    : store_(store), options_(options), durable_(std::move(durable)), failure_(std::move(failure)),
      trace_(std::move(trace)), next_lsn_(start.next_lsn), prev_hash_(start.prev_hash),
      checkpointer_(std::move(checkpointer)), indexer_(std::move(indexer)), durable_lsn_(start.next_lsn - 1) {
  if (indexer_) indexer_->on_built([this] {
    std::lock_guard lk(mu_);
    work_cv_.notify_one();
  });
  if (checkpointer_ && indexer_) checkpointer_->set_trim_limit([ix = indexer_.get()] { return ix->indexed_lsn(); });
  if (checkpointer_) {
    checkpoint_stats_ = checkpointer_->stats();
    checkpoint_idle_ = !checkpointer_->has_work();
  }
  thread_ = std::thread([this] {
    name_this_thread("tally-commit");
    run();
  });
}

void Committer::add_checkpoint(CheckpointPiece&& piece) {
  {
    std::lock_guard lk(mu_);
    if (failed_.load(std::memory_order_relaxed)) return;
    filling_->pieces.push_back(std::move(piece));
  }
  work_cv_.notify_one();
}

void Committer::request_checkpoint() {
  {
    std::lock_guard lk(mu_);
    checkpoint_requested_ = true;
  }
  work_cv_.notify_one();
}

bool Committer::wait_checkpoint(uint32_t round) {
  std::unique_lock lk(mu_);
  space_cv_.wait(lk, [&] {
    return failed_.load(std::memory_order_relaxed) || stopping_ ||
           (checkpoint_stats_.round >= round && checkpoint_idle_);
  });
  return checkpoint_stats_.round >= round && !failed_.load(std::memory_order_relaxed);
}

CheckpointStats Committer::checkpoint_stats() const {
  std::lock_guard lk(mu_);
  return checkpoint_stats_;
}

void Committer::set_cursor(const std::string& name, uint64_t lsn) {
  {
    std::lock_guard lk(mu_);
    bool found = false;
    for (auto& [n, l] : cursors_) {
      if (n == name) {
        l = lsn;
        found = true;
      }
    }
    if (!found) cursors_.emplace_back(name, lsn);
  }
  work_cv_.notify_one();
}

Committer::~Committer() { stop(); }

void Committer::stop() {
  if (!thread_.joinable()) return;
  flush();
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void Committer::close_open_batch(Stage& s) {
  if (!s.open_started) return;
  BatchHeader h;
  std::span<const uint8_t> bytes = s.open.finish(&h);
  s.arena.insert(s.arena.end(), bytes.begin(), bytes.end());
  s.batches.emplace_back(h.lsn, s.arena.size());
  prev_hash_ = h.hash;
  ++next_lsn_;
  s.open_started = false;
}

void Committer::append(std::span<const Effect> effects) {
  std::unique_lock lk(mu_);
  size_t i = 0;
  while (i < effects.size() && !failed_.load(std::memory_order_relaxed)) {
    Stage& s = *filling_;
    if (s.effects.size() >= options_.txn_effects_max ||
        s.arena.size() + (s.open_started ? s.open.body_size() : 0) >= options_.txn_bytes_max) {
      work_cv_.notify_one();
      space_cv_.wait(lk);  // the committer swaps stages when its commit returns
      continue;
    }
    const Effect& e = effects[i++];
    s.effects.push_back(e);
    ++appended_;
    if (e.event.kind == EventKind::kBalance) {  // reads are released, never logged
      s.positions.push_back({});
      continue;
    }
    if (!s.open_started) {
      s.open.begin(next_lsn_, options_.epoch, prev_hash_, e.time_ms);
      s.open_started = true;
      s.open_records = 0;
    }
    s.positions.push_back({next_lsn_, s.open_records++});
    s.open.add(e);
    ++s.records;
    if (s.open.body_size() >= kBatchBodyTarget) close_open_batch(s);
  }
  appended_hint_.store(appended_, std::memory_order_release);
  if (i < effects.size()) {  // failed: nothing more will be durable
    appended_ += effects.size() - i;
    done_ += effects.size() - i;
    std::string why = failure_reason_;
    lk.unlock();
    failure_(effects.subspan(i), why);
    space_cv_.notify_all();
    return;
  }
  lk.unlock();
  work_cv_.notify_one();
}

void Committer::flush() {
  std::unique_lock lk(mu_);
  uint64_t target = appended_;
  work_cv_.notify_one();
  space_cv_.wait(lk, [&] { return done_ >= target; });
}

std::string Committer::failure() const {
  std::lock_guard lk(mu_);
  return failure_reason_;
}

CommitterStats Committer::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void Committer::fail_all(Stage& committing, const std::string& why) {
  std::vector<Effect> lost;
  {
    std::lock_guard lk(mu_);
    failure_reason_ = why;
    failed_.store(true, std::memory_order_release);
    lost.swap(committing.effects);
    // Everything already waiting behind this commit fails with it.
    lost.insert(lost.end(), filling_->effects.begin(), filling_->effects.end());
    filling_->clear();
    committing.clear();
  }
  failure_(lost, why);
  std::lock_guard lk(mu_);
  done_ += lost.size();
  space_cv_.notify_all();
}

// A clean stop publishes the index segment being built, so the next start has less to redo.
void Committer::finish_index() {
  WriteSet w;
  if (!indexer_ || failed_.load(std::memory_order_acquire) || !indexer_->finish(&w)) return;
  try {
    store_->write(w);
    indexer_->committed();
  } catch (const StorageError&) {
    // The log holds everything the segment would: the next start rebuilds it.
  }
}

void Committer::run() {
  std::vector<BatchBytes> batches;
  std::vector<std::pair<std::string, uint64_t>> cursors;
  uint64_t taken = 0;  // appended_ when the last stage was taken
  for (;;) {
    Stage* committing = nullptr;
    // A brief spin before sleeping: at low load the next effect usually arrives within
    // microseconds of a commit returning, and a futex sleep and wake costs more than that.
    for (int spin = 0; spin < 2000 && appended_hint_.load(std::memory_order_acquire) == taken; ++spin) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    bool housekeeping = false;  // a transaction for checkpoint work alone
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] {
        return !filling_->empty() || stopping_ || checkpoint_requested_ || !cursors_.empty() ||
               (checkpointer_ && checkpointer_->has_work()) || (indexer_ && indexer_->has_work());
      });
      // Stopping, nothing left: slices already received are written first (the round may
      // complete, and the next start replay less).
      if (filling_->empty() && stopping_ && cursors_.empty() && !(checkpointer_ && checkpointer_->has_slices())) {
        lk.unlock();
        finish_index();
        return;
      }
      if (checkpoint_requested_) {
        checkpointer_->request();
        checkpoint_requested_ = false;
      }
      housekeeping = filling_->empty();
      cursors.swap(cursors_);
      committing = filling_;
      taken = appended_;
      close_open_batch(*committing);
      filling_ = committing == &stages_[0] ? &stages_[1] : &stages_[0];  // cleared after its commit
    }
    space_cv_.notify_all();

    uint64_t last_lsn = durable_lsn_.load(std::memory_order_relaxed);
    uint64_t ns = 0;
    batches.clear();
    size_t begin = 0;
    for (const auto& [lsn, end] : committing->batches) {
      batches.push_back({lsn, std::span<const uint8_t>(committing->arena.data() + begin, end - begin)});
      begin = end;
    }
    WriteSet w;
    w.log = batches;
    for (auto& [name, lsn] : cursors) w.meta.emplace_back("cursor." + name, std::to_string(lsn));
    cursors.clear();
    if (checkpointer_) checkpointer_->prepare(committing->pieces, committing->effects, committing->arena.size(), &w);
    if (indexer_) {
      index_records_.clear();
      index_positions_.clear();
      for (size_t i = 0; i < committing->effects.size(); ++i) {
        if (committing->positions[i].lsn == 0) continue;
        index_records_.push_back(committing->effects[i]);
        index_positions_.push_back(committing->positions[i]);
      }
      indexer_->add(index_records_, index_positions_);
      indexer_->prepare(&w);
    }
    if (housekeeping && w.empty()) {  // nothing to do after all
      if (checkpointer_) checkpointer_->committed();
      if (indexer_) indexer_->committed();
      std::lock_guard lk(mu_);
      if (checkpointer_) {
        checkpoint_stats_ = checkpointer_->stats();
        checkpoint_idle_ = !checkpointer_->has_work();
      }
      space_cv_.notify_all();
      continue;
    }
    bool released = false;
    if (!w.empty()) {
      if (!committing->batches.empty()) last_lsn = committing->batches.back().first;
      if (trace_) trace_(TracePoint::kCommitBegin, last_lsn);
      if (options_.unsafe_ack_before_commit) {  // negative control: release first
        released = true;
        durable_(committing->effects, last_lsn);
        if (trace_) trace_(TracePoint::kReleased, last_lsn);
      }
      auto t0 = std::chrono::steady_clock::now();
      try {
        store_->write(w);
      } catch (const StorageError& e) {
        fail_all(*committing, std::string("storage failed, writes stopped: ") + e.what());
        return;
      }
      ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
      if (trace_) trace_(TracePoint::kCommitReturned, last_lsn);
      durable_lsn_.store(last_lsn, std::memory_order_release);
      if (checkpointer_) checkpointer_->committed();
      if (indexer_ && indexer_->committed() && checkpointer_) checkpointer_->rearm_trim();
    }
    if (!released && !committing->effects.empty()) {
      durable_(committing->effects, last_lsn);
      if (trace_) trace_(TracePoint::kReleased, last_lsn);
    }
    {
      std::lock_guard lk(mu_);
      done_ += committing->effects.size();
      stats_.released += committing->effects.size();
      if (!committing->batches.empty()) {
        ++stats_.commits;
        stats_.batches += committing->batches.size();
        stats_.records += committing->records;
        stats_.bytes += committing->arena.size();
        stats_.commit_ns.record(ns);
        stats_.records_per_commit.record(committing->records);
      }
      if (checkpointer_) {
        checkpoint_stats_ = checkpointer_->stats();
        checkpoint_idle_ = !checkpointer_->has_work();
      }
      committing->clear();
    }
    space_cv_.notify_all();
  }
}

}  // namespace tally::storage
