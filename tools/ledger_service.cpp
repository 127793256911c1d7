#include "tools/ledger_service.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "storage/history.h"
#include "storage/log_codec.h"

namespace tally {

DurableService::DurableService(storage::LedgerOptions options, ReplicationOptions replication)
    : repl_(std::move(replication)) {
  if (repl_.sync_followers > 0) releaser_ = std::thread([this] { release_main(); });
  ledger_ = std::make_unique<storage::Ledger>(
      std::move(options), [this](std::span<const Effect> effects, uint64_t lsn) { durable(effects, lsn); },
      [this](std::span<const Effect> effects, const std::string& why) {
        notify([&](EffectListener* l) { l->on_failed(effects, why); });
      });
}

DurableService::~DurableService() {
  ledger_->stop();
  {
    std::lock_guard lk(repl_mu_);
    repl_stopping_ = true;  // replies still waiting for followers are not sent: clients resend (replays)
  }
  repl_cv_.notify_all();
  if (releaser_.joinable()) releaser_.join();
  listener_.store(nullptr, std::memory_order_release);
}

void DurableService::durable(std::span<const Effect> effects, uint64_t lsn) {
  if (repl_.sync_followers == 0) {
    notify([&](EffectListener* l) { l->on_durable(effects); });
    return;
  }
  {
    std::lock_guard lk(repl_mu_);
    held_.push_back({std::vector<Effect>(effects.begin(), effects.end()), lsn});
  }
  repl_cv_.notify_all();
  // The followers' streams move on now; the replies wait for them.
  notify([](EffectListener* l) { l->on_log_advanced(); });
}

uint64_t DurableService::quorum_lsn_locked() const {
  if (follower_acks_.size() < repl_.sync_followers) return 0;
  std::vector<uint64_t> acks;
  for (const auto& [name, lsn] : follower_acks_) acks.push_back(lsn);
  std::sort(acks.begin(), acks.end(), std::greater<>());
  return acks[repl_.sync_followers - 1];
}

uint64_t DurableService::replicated_lsn() const {
  std::lock_guard lk(repl_mu_);
  return quorum_lsn_locked();
}

void DurableService::follower_ack(const std::string& name, uint64_t lsn) {
  {
    std::lock_guard lk(repl_mu_);
    uint64_t& a = follower_acks_[name];
    a = std::max(a, lsn);
  }
  repl_cv_.notify_all();
}

void DurableService::follower_gone(const std::string& name) {
  std::lock_guard lk(repl_mu_);
  follower_acks_.erase(name);
}

// Releases held replies in commit order once enough followers have their batches.
void DurableService::release_main() {
  auto log = [this](const std::string& line) {
    if (repl_.log) {
      repl_.log(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  };
  std::unique_lock lk(repl_mu_);
  for (;;) {
    auto ready = [&] {
      return repl_stopping_ || (!held_.empty() && (degraded_ || quorum_lsn_locked() >= held_.front().lsn));
    };
    if (repl_.degrade_after_ms > 0 && !degraded_) {
      if (!repl_cv_.wait_for(lk, std::chrono::milliseconds(repl_.degrade_after_ms), ready) && !held_.empty()) {
        degraded_ = true;
        log("tallyd: REPLICATION DEGRADED to asynchronous: fewer than " + std::to_string(repl_.sync_followers) +
            " follower(s) acknowledged within " + std::to_string(repl_.degrade_after_ms) +
            " ms; replies are released without them, and a failover now can lose acknowledged events");
      }
    } else {
      repl_cv_.wait(lk, ready);
    }
    if (repl_stopping_) return;
    if (degraded_ && !held_.empty() && quorum_lsn_locked() >= held_.front().lsn) {
      degraded_ = false;
      log("tallyd: replication synchronous again: " + std::to_string(repl_.sync_followers) + " follower(s) caught up");
    }
    while (!held_.empty() && (degraded_ || quorum_lsn_locked() >= held_.front().lsn)) {
      Held h = std::move(held_.front());
      held_.pop_front();
      lk.unlock();
      notify([&](EffectListener* l) { l->on_durable(h.effects); });
      lk.lock();
    }
  }
}

void DurableService::submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) {
  ledger_->pipeline().submit(producer, events, time_ms);
}

std::vector<HistoryEntry> DurableService::history(uint32_t program, uint64_t account, size_t limit, LogPos before) {
  return storage::history(ledger_->store(), program, account, limit, before);
}

std::vector<HistoryEntry> DurableService::lookup(uint32_t program, const Ref128& ref) {
  return storage::lookup(ledger_->store(), program, ref);
}

Result DurableService::statement(uint32_t program, uint64_t account, Statement* out) {
  if (!ledger_->pipeline().program_stats(program)) return Result::kProgramNotFound;
  return ledger_->pipeline().statement(program, account, out) ? Result::kOk : Result::kAccountNotFound;
}

std::optional<ProgramStats> DurableService::program_stats(uint32_t program) {
  return ledger_->pipeline().program_stats(program);
}

LogSummary DurableService::log_summary() {
  storage::CommitterStats c = ledger_->committer().stats();
  LogSummary s;
  s.durable_lsn = ledger_->committer().durable_lsn();
  s.commits = c.commits;
  s.records = c.records;
  s.bytes = c.bytes;
  s.records_per_commit_p50 = c.records_per_commit.quantile(0.5);
  s.records_per_commit_p99 = c.records_per_commit.quantile(0.99);
  s.records_per_commit_max = c.records_per_commit.max();
  s.commit_us_p50 = c.commit_ns.quantile(0.5) / 1000;
  s.commit_us_p99 = c.commit_ns.quantile(0.99) / 1000;
  s.commit_us_max = c.commit_ns.max() / 1000;
  return s;
}

std::string DurableService::server_info() {
  std::string s = "role=primary\nepoch=" + std::to_string(ledger_->committer().epoch()) +
                  "\ndurable_lsn=" + std::to_string(ledger_->committer().durable_lsn()) + "\n";
  if (repl_.sync_followers > 0) {
    std::lock_guard lk(repl_mu_);
    s += "sync_followers=" + std::to_string(repl_.sync_followers) + "\nconnected_followers=" +
         std::to_string(follower_acks_.size()) + "\nreplicated_lsn=" + std::to_string(quorum_lsn_locked()) +
         "\ndegraded=" + (degraded_ ? "1" : "0") + "\n";
  }
  return s;
}

LogRange store_log_range(const storage::Store& st, uint64_t durable_lsn, uint64_t epoch) {
  LogRange r;
  r.durable_lsn = durable_lsn;
  r.epoch = epoch;
  if (uint64_t first = st.first_lsn()) {
    r.oldest_lsn = first;
  } else {
    auto trim = st.meta("trim_lsn");
    r.oldest_lsn = (trim ? std::stoull(*trim) : 0) + 1;
  }
  return r;
}

LogRead read_store_log(const storage::Store& st, const LogRange& range, uint64_t from, size_t max_bytes,
                       uint32_t program, std::vector<uint8_t>* out) {
  LogRead r;
  r.range = range;
  r.next_lsn = from;
  if (from < r.range.oldest_lsn) {
    r.trimmed = true;
    return r;
  }
  if (from > r.range.durable_lsn) return r;
  size_t start = out->size();
  bool gap = false;
  st.scan(from, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    if (lsn != r.next_lsn) {  // trimmed between the range's reading and this one
      gap = true;
      return false;
    }
    if (lsn > r.range.durable_lsn) return false;
    size_t at = out->size();
    out->resize(at + 4);
    if (program == 0) {
      out->insert(out->end(), bytes.begin(), bytes.end());
    } else if (!storage::filter_batch(bytes, program, out)) {
      throw storage::StorageError("log batch " + std::to_string(lsn) + " does not decode", 0);
    }
    auto len = static_cast<uint32_t>(out->size() - at - 4);
    for (int i = 0; i < 4; ++i) (*out)[at + i] = static_cast<uint8_t>(len >> (8 * i));
    ++r.batches;
    ++r.next_lsn;
    return out->size() - start < max_bytes;
  });
  // Nothing read although `from` is durable: trimmed since the range was read.
  if (gap || r.batches == 0) {
    out->resize(start);
    r.batches = 0;
    r.next_lsn = from;
    r.trimmed = true;
  }
  return r;
}

LogRange DurableService::log_range() {
  // The durable LSN first: a batch the log still holds at or below it is on disk.
  uint64_t durable = ledger_->committer().durable_lsn();
  return store_log_range(ledger_->store(), durable, ledger_->committer().epoch());
}

LogRead DurableService::read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) {
  return read_store_log(ledger_->store(), log_range(), from, max_bytes, program, out);
}

std::optional<uint64_t> DurableService::cursor(const std::string& name) {
  auto v = ledger_->store().meta("cursor." + name);
  if (!v) return std::nullopt;
  return std::stoull(*v);
}

void DurableService::set_cursor(const std::string& name, uint64_t lsn) { ledger_->committer().set_cursor(name, lsn); }

}  // namespace tally
