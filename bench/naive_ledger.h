// Tally benchmarks: the naive baseline, what a first attempt would write.
//
// std::unordered_map of accounts and std::unordered_set of 128-bit references (hashed with
// XXH3-64), one thread. Same semantics as the engine for the loyalty mix: checks first, and the
// reference is claimed only when the event is accepted, so a rejected redeem never consumes it;
// a reference seen before makes the event a duplicate order. One small result per event.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/types.h"

namespace tally::bench {

class NaiveLedger {
 public:
  struct Account {
    int64_t available = 0;
    int64_t lifetime_earned = 0;
    int64_t lifetime_redeemed = 0;
  };
  struct Outcome {
    int64_t points;
    int64_t available;
    Result result;
  };
  struct Totals {
    uint64_t duplicates = 0;
    int64_t issued = 0;
    int64_t redeemed = 0;
  };

  NaiveLedger(uint64_t accounts_max, uint64_t references_max) {
    accounts_.reserve(accounts_max);
    references_.reserve(references_max);
  }

  void enroll(uint64_t account, const Ref128& ref, int64_t points);
  // Inserts a reference outright (the pre-fill); false if present.
  bool insert_reference(const Ref128& ref) { return references_.insert(ref).second; }
  void apply_batch(std::span<const Event> events, std::vector<Outcome>* out);

  const Totals& totals() const { return totals_; }
  uint64_t references() const { return references_.size(); }
  // Estimate for libstdc++: a bucket pointer per bucket, a 32-byte heap node per reference.
  uint64_t reference_bytes_estimate() const {
    return references_.bucket_count() * sizeof(void*) + references_.size() * 32;
  }

 private:
  struct RefHash {
    size_t operator()(const Ref128& r) const noexcept { return XXH3_64bits(&r, sizeof(r)); }
  };
  void apply(const Event& e, std::vector<Outcome>* out);

  std::unordered_map<uint64_t, Account> accounts_;
  std::unordered_set<Ref128, RefHash> references_;
  Totals totals_;
};

}  // namespace tally::bench
