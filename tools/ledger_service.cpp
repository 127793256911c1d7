#include "tools/ledger_service.h"

#include "storage/history.h"

namespace tally {

DurableService::DurableService(storage::LedgerOptions options) {
  ledger_ = std::make_unique<storage::Ledger>(
      std::move(options),
      [this](std::span<const Effect> effects, uint64_t) {
        if (EffectListener* l = listener_.load(std::memory_order_acquire)) l->on_durable(effects);
      },
      [this](std::span<const Effect> effects, const std::string& why) {
        if (EffectListener* l = listener_.load(std::memory_order_acquire)) l->on_failed(effects, why);
      });
}

DurableService::~DurableService() {
  ledger_->stop();
  listener_.store(nullptr, std::memory_order_release);
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

}  // namespace tally
