// Tally tools: the durable ledger (storage::Ledger) behind the network layer's LedgerService.
//
// The one place where net/ and storage/ meet (docs/architecture.md, layering): tallyd and the
// end-to-end tests build a DurableService, hand it to net::Server as its LedgerService, then
// attach the server's EffectListener. Effects that become durable before a listener is attached
// (recovery's tail) are replies to nobody and are dropped.
//
// Threads: submit() from the producer thread it names; the queries from any thread.
#pragma once

#include <atomic>
#include <memory>

#include "engine/service.h"
#include "storage/ledger.h"

namespace tally {

// The change stream's reads of a log (shared by the primary's and the follower's services):
// the range it holds up to `durable_lsn`, and LedgerService::read_log over it.
LogRange store_log_range(const storage::Store& store, uint64_t durable_lsn, uint64_t epoch);
LogRead read_store_log(const storage::Store& store, const LogRange& range, uint64_t from, size_t max_bytes,
                       uint32_t program, std::vector<uint8_t>* out);

class DurableService final : public LedgerService {
 public:
  // Opens (and recovers) the ledger. Throws what storage::Ledger throws.
  explicit DurableService(storage::LedgerOptions options);
  ~DurableService() override;

  void attach(EffectListener* listener) { listener_.store(listener, std::memory_order_release); }
  storage::Ledger& ledger() { return *ledger_; }

  void submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) override;
  std::vector<HistoryEntry> history(uint32_t program, uint64_t account, size_t limit, LogPos before) override;
  std::vector<HistoryEntry> lookup(uint32_t program, const Ref128& ref) override;
  std::optional<ProgramStats> program_stats(uint32_t program) override;
  LogSummary log_summary() override;
  std::string server_info() override;
  LogRange log_range() override;
  LogRead read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) override;
  std::optional<uint64_t> cursor(const std::string& name) override;
  void set_cursor(const std::string& name, uint64_t lsn) override;

 private:
  std::atomic<EffectListener*> listener_{nullptr};
  std::unique_ptr<storage::Ledger> ledger_;
};

}  // namespace tally
