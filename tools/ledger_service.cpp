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

}  // namespace tally
