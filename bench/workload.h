// Tally benchmarks: the loyalty mix of /work/shared/WORKLOAD.md as pre-generated event streams.
//
// A Generator plans segments of events for one program and N pre-enrolled members, and models
// their effect exactly (balances, which redeems succeed, which earns are accepted), so a run can
// check the engine's statistics against the plan: a fast wrong answer must not count. Generation
// happens outside the timed loops. Everything here is deterministic for a given seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/program.h"
#include "engine/types.h"

namespace tally::bench {

// Shared sizes: the full benchmark or the bounded smoke run (--smoke).
struct BenchConfig {
  bool smoke = false;
  uint64_t accounts_count = 1'000'000;
  std::vector<uint64_t> reference_counts = {10'000'000, 100'000'000};  // fraud set at the start
  uint64_t apply_events_per_repetition = 2'000'000;
  uint64_t pipeline_events_per_repetition = 2'000'000;
  uint64_t ring_items_per_iteration = 1 << 20;
  int repetitions = 1;  // as given by --benchmark_repetitions: sizes tables for that many segments
  // Negative control (--negative-control): every check expects one duplicate more than planned,
  // so every checked benchmark must fail. Proves the checks are alive.
  bool corrupt_plan = false;
};

constexpr uint32_t kProgramId = 1;
constexpr int64_t kStartPoints = 500;
constexpr int64_t kServerTimeMs = 1'750'000'000'000;  // a fixed stamp: no generation turns over
constexpr size_t kBatchEvents = 1000;

// The program of WORKLOAD.md: 1 point per 100 minor units, one tier, no caps, 500 points at
// sign-up. Capacity for `accounts` members and `orders` remembered orders per shard.
Program loyalty_program(uint64_t accounts, uint64_t orders);

// splitmix64: small, fast, good enough for workload generation.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi] (bias below 2^-40 for the ranges used here).
  uint64_t between(uint64_t lo, uint64_t hi) {
    return lo + static_cast<uint64_t>((static_cast<uint128>(next()) * (hi - lo + 1)) >> 64);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  Ref128 reference() {
    Ref128 r{next(), next()};
    if (r.empty()) r.lo = 1;
    return r;
  }

 private:
  uint64_t s_;
};

enum class Mix { kEarn, kRedeem, kLoyalty };
enum class Choice { kUniform, kZipf };
std::string to_string(Mix m);
std::string to_string(Choice c);

// Account choice: uniform over 1..n, or bounded Zipf(s) over ranks 1..n by rejection sampling
// (pgbench's random_zipfian, s > 1), ranks scattered over 1..n by rank -> (rank-1)*P + 1 mod n,
// P a prime that does not divide n.
class AccountChooser {
 public:
  AccountChooser(Choice c, uint64_t n, double s = 1.01);
  uint64_t next(Rng& rng);

 private:
  Choice choice_;
  uint64_t n_;
  double s_;
  double b_;
};

// What one segment is expected to do to the engine.
struct Plan {
  std::vector<Event> events;
  uint64_t duplicates = 0;        // earns reusing an accepted earn's reference
  uint64_t accepted = 0;          // mutating events that must come back kOk
  uint64_t rejected_redeems = 0;  // redeems that must come back kInsufficientPoints
  uint64_t reads = 0;
  int64_t issued = 0;             // points credited by accepted earns
  int64_t redeemed = 0;           // points spent by accepted redeems
};

class Generator {
 public:
  Generator(Mix mix, Choice choice, uint64_t accounts, uint64_t seed);
  // The enrolls of members 1..N (each with a fresh reference).
  std::vector<Event> enrolls() const;
  // The next `count` events after everything planned so far.
  Plan next(uint64_t count);
  // Upper bound on references a segment of `count` events may claim.
  static uint64_t claims_max(uint64_t count) { return count; }
  // From now on duplicates reuse only references planned before this call. For a multi-shard
  // run, call it once everything planned so far has been applied: a duplicate of an earn still
  // in another shard's queue could win the race for the reference and turn the original into
  // the duplicate (then the plan's points no longer hold).
  void settle_only() {
    settled_only_ = true;
    settled_ = earned_.size();
  }

 private:
  struct Earned {
    Ref128 ref;
    uint64_t account;
    int64_t amount;
  };
  Event earn(Plan* plan);
  Event redeem(Plan* plan);
  Event balance(Plan* plan);

  Mix mix_;
  uint64_t accounts_;
  uint64_t seed_;
  Rng rng_;
  AccountChooser chooser_;
  std::vector<int64_t> balances_;  // [account - 1], as the engine must see them
  std::vector<Earned> earned_;     // accepted earns, candidates for a duplicate
  bool settled_only_ = false;
  size_t settled_ = 0;             // with settled_only_: duplicates pick from earned_[0, settled_)
};

}  // namespace tally::bench
