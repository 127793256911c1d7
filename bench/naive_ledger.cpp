#include "bench/naive_ledger.h"

namespace tally::bench {

void NaiveLedger::enroll(uint64_t account, const Ref128& ref, int64_t points) {
  references_.insert(ref);
  Account& a = accounts_[account];
  a.available = points;
  a.lifetime_earned = points;
  totals_.issued += points;
}

void NaiveLedger::apply_batch(std::span<const Event> events, std::vector<Outcome>* out) {
  for (const Event& e : events) apply(e, out);
}

void NaiveLedger::apply(const Event& e, std::vector<Outcome>* out) {
  auto it = accounts_.find(e.account);
  if (it == accounts_.end()) {
    out->push_back({0, 0, Result::kAccountNotFound});
    return;
  }
  Account& a = it->second;
  switch (e.kind) {
    case EventKind::kEarn: {
      if (e.amount <= 0 || e.amount > kPointsMax) {
        out->push_back({0, a.available, Result::kInvalidAmount});
        return;
      }
      if (!references_.insert(e.ref).second) {
        ++totals_.duplicates;
        out->push_back({0, a.available, Result::kDuplicateOrder});
        return;
      }
      int64_t points = e.amount / 100;
      a.available += points;
      a.lifetime_earned += points;
      totals_.issued += points;
      out->push_back({points, a.available, Result::kOk});
      return;
    }
    case EventKind::kRedeem: {
      if (e.amount <= 0 || e.amount > kPointsMax) {
        out->push_back({0, a.available, Result::kInvalidAmount});
        return;
      }
      if (a.available < e.amount) {  // rejected before the claim: the reference stays free
        out->push_back({0, a.available, Result::kInsufficientPoints});
        return;
      }
      if (!references_.insert(e.ref).second) {
        ++totals_.duplicates;
        out->push_back({0, a.available, Result::kDuplicateOrder});
        return;
      }
      a.available -= e.amount;
      a.lifetime_redeemed += e.amount;
      totals_.redeemed += e.amount;
      out->push_back({e.amount, a.available, Result::kOk});
      return;
    }
    case EventKind::kBalance:
      out->push_back({0, a.available, Result::kOk});
      return;
    default:
      out->push_back({0, a.available, Result::kInvalidKind});
      return;
  }
}

}  // namespace tally::bench
