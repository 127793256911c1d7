#include "tools/ledger_service.h"

#include "storage/history.h"
#include "storage/log_codec.h"

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

std::string DurableService::server_info() {
  return "role=primary\nepoch=" + std::to_string(ledger_->committer().epoch()) +
         "\ndurable_lsn=" + std::to_string(ledger_->committer().durable_lsn()) + "\n";
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
