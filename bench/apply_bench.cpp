// Apply per shard: one tally::Shard (single thread, apply_batch of 1000 events) against the naive
// baseline, on the same pre-generated streams, with the reference set pre-filled.
//
// A "world" (fraud set, shard, members, generator) is built on a benchmark's first repetition and
// kept for its later ones: each repetition applies the next segment of the same stream, so the
// tables are sized for all repetitions (--benchmark_repetitions) up front. Only one world is
// alive at a time: at 100M references one takes several GiB.
#include <cstdio>
#include <memory>
#include <string>

#include "bench/benches.h"
#include "bench/naive_ledger.h"
#include "engine/fraud_set.h"
#include "engine/shard.h"

namespace tally::bench {
namespace {

constexpr uint64_t kSeed = 0x7a11'7a11'0001ULL;
constexpr uint64_t kPrefillSeed = 0x7a11'f111'0002ULL;
constexpr uint16_t kBusinessDay = static_cast<uint16_t>(kServerTimeMs / kMsPerDay);

enum class Engine { kTally, kNaive };

struct Setup {
  Engine engine;
  Mix mix;
  Choice choice;
  uint64_t references;  // in the set when the timed part starts, enrolls included
};

std::string label(uint64_t n) {
  if (n >= 1'000'000 && n % 1'000'000 == 0) return std::to_string(n / 1'000'000) + "M";
  if (n >= 1'000 && n % 1'000 == 0) return std::to_string(n / 1'000) + "k";
  return std::to_string(n);
}

std::string name_of(const Setup& s) {
  return std::string("apply/") + (s.engine == Engine::kTally ? "tally" : "naive") + "/" +
         to_string(s.mix) + "/" + to_string(s.choice) + "/refs:" + label(s.references);
}

// Calls f(ref) for `count` random references (a stream of its own: never equal to an event's).
template <class F>
void for_each_prefill_reference(uint64_t count, F&& f) {
  Rng rng(kPrefillSeed);
  for (uint64_t i = 0; i < count; ++i) f(rng.reference());
}

struct TallyWorld {
  TallyWorld(const Setup& s, const BenchConfig& c)
      : generator(s.mix, s.choice, c.accounts_count, kSeed) {
    uint64_t claims = Generator::claims_max(c.apply_events_per_repetition) * c.repetitions;
    // Chunks of 1024 are handed to a shard at a time: leave room for one more.
    fraud = std::make_unique<FraudSet>(s.references + claims + 2048, 1);
    programs.push_back(loyalty_program(c.accounts_count, c.accounts_count + claims + 1024));
    shard = std::make_unique<Shard>(0, programs, fraud.get());
    // Pre-fill, prefetching a few references ahead: the table is far larger than the caches.
    constexpr size_t kAhead = 16;
    Ref128 ahead[kAhead];
    uint64_t prefill = s.references - c.accounts_count;
    Rng rng(kPrefillSeed);
    for (size_t i = 0; i < kAhead; ++i) {
      ahead[i] = rng.reference();
      fraud->prefetch(kProgramId, ahead[i]);
    }
    for (uint64_t i = 0; i < prefill; ++i) {
      Ref128& r = ahead[i % kAhead];
      if (!fraud->insert_unsynchronised(kProgramId, r, 0, kBusinessDay)) ok = false;
      r = rng.reference();
      fraud->prefetch(kProgramId, r);
    }
    std::vector<Event> enrolls = generator.enrolls();
    ApplyOutput out;
    for (size_t i = 0; i < enrolls.size(); i += kBatchEvents) {
      out.clear();
      size_t n = std::min(kBatchEvents, enrolls.size() - i);
      shard->apply_batch({enrolls.data() + i, n}, kServerTimeMs, &out);
      for (const Effect& e : out.effects) ok &= e.result == Result::kOk;
    }
    ok &= fraud->size() == s.references;
    segments_left = c.repetitions;
  }

  std::unique_ptr<FraudSet> fraud;
  std::vector<Program> programs;
  std::unique_ptr<Shard> shard;
  Generator generator;
  int segments_left = 0;
  bool ok = true;
};

struct NaiveWorld {
  NaiveWorld(const Setup& s, const BenchConfig& c)
      : ledger(c.accounts_count,
               s.references + Generator::claims_max(c.apply_events_per_repetition) * c.repetitions),
        generator(s.mix, s.choice, c.accounts_count, kSeed) {
    for_each_prefill_reference(s.references - c.accounts_count,
                               [&](const Ref128& r) { ok &= ledger.insert_reference(r); });
    for (const Event& e : generator.enrolls()) ledger.enroll(e.account, e.ref, kStartPoints);
    ok &= ledger.references() == s.references;
    segments_left = c.repetitions;
  }

  NaiveLedger ledger;
  Generator generator;
  int segments_left = 0;
  bool ok = true;
};

// The one world alive, and the benchmark it belongs to.
struct Worlds {
  std::string owner;
  std::unique_ptr<TallyWorld> tally;
  std::unique_ptr<NaiveWorld> naive;
  void reset() {
    tally.reset();
    naive.reset();
    owner.clear();
  }
};
Worlds g_worlds;

template <class World>
World& world_for(const Setup& s, const BenchConfig& c, std::unique_ptr<World>& slot) {
  std::string name = name_of(s);
  if (g_worlds.owner != name || slot == nullptr || slot->segments_left == 0) {
    g_worlds.reset();  // first: at most one world in memory
    slot = std::make_unique<World>(s, c);
    g_worlds.owner = name;
  }
  return *slot;
}

// The check after the timed loop: returns an empty string when the engine did what was planned.
std::string mismatch(const char* what, int64_t got, int64_t want) {
  if (got == want) return {};
  return std::string(what) + ": got " + std::to_string(got) + ", planned " + std::to_string(want);
}

void run_tally(benchmark::State& state, Setup s, BenchConfig c) {
  TallyWorld& w = world_for(s, c, g_worlds.tally);
  if (!w.ok) return state.SkipWithError("world set-up failed (pre-fill or enrolls)");
  Plan plan = w.generator.next(c.apply_events_per_repetition);
  const ProgramStats before = *w.shard->stats(kProgramId);
  ApplyOutput out;
  out.effects.reserve(kBatchEvents * 2);
  const size_t batches = plan.events.size() / kBatchEvents;
  size_t next = 0;
  for (auto _ : state) {
    if (next == batches) {  // more iterations than planned events
      state.SkipWithError("more iterations than planned events");
      break;
    }
    out.clear();
    w.shard->apply_batch({plan.events.data() + next * kBatchEvents, kBatchEvents}, kServerTimeMs, &out);
    benchmark::DoNotOptimize(out.effects.data());
    ++next;
  }
  const ProgramStats& after = *w.shard->stats(kProgramId);
  uint64_t planned_duplicates = plan.duplicates + (c.corrupt_plan ? 1 : 0);
  std::string bad = mismatch("batches", static_cast<int64_t>(next), static_cast<int64_t>(batches));
  if (bad.empty()) bad = mismatch("duplicates", static_cast<int64_t>(after.duplicates - before.duplicates),
                                  static_cast<int64_t>(planned_duplicates));
  if (bad.empty()) bad = mismatch("points issued", after.issued - before.issued, plan.issued);
  if (bad.empty()) bad = mismatch("points redeemed", after.redeemed - before.redeemed, plan.redeemed);
  if (bad.empty())
    bad = mismatch("effects", static_cast<int64_t>(after.events - before.events),
                   static_cast<int64_t>(plan.events.size() - plan.reads));
  --w.segments_left;
  if (!bad.empty()) return state.SkipWithError(bad.c_str());

  ShardMemory m = w.shard->memory();
  state.SetItemsProcessed(static_cast<int64_t>(next * kBatchEvents));
  state.counters["bytes_per_account"] = static_cast<double>(m.account_bytes) / static_cast<double>(m.accounts);
  state.counters["bytes_per_ref"] = static_cast<double>(w.fraud->bytes()) / static_cast<double>(w.fraud->size());
  state.counters["refs_M"] = static_cast<double>(w.fraud->size()) / 1e6;
  state.counters["dups"] = static_cast<double>(plan.duplicates);
  if (w.segments_left == 0) g_worlds.reset();  // its last segment: free the memory now
}

void run_naive(benchmark::State& state, Setup s, BenchConfig c) {
  NaiveWorld& w = world_for(s, c, g_worlds.naive);
  if (!w.ok) return state.SkipWithError("world set-up failed (pre-fill or enrolls)");
  Plan plan = w.generator.next(c.apply_events_per_repetition);
  const NaiveLedger::Totals before = w.ledger.totals();
  std::vector<NaiveLedger::Outcome> out;
  out.reserve(kBatchEvents);
  const size_t batches = plan.events.size() / kBatchEvents;
  size_t next = 0;
  for (auto _ : state) {
    if (next == batches) {  // more iterations than planned events
      state.SkipWithError("more iterations than planned events");
      break;
    }
    out.clear();
    w.ledger.apply_batch({plan.events.data() + next * kBatchEvents, kBatchEvents}, &out);
    benchmark::DoNotOptimize(out.data());
    ++next;
  }
  const NaiveLedger::Totals& after = w.ledger.totals();
  uint64_t planned_duplicates = plan.duplicates + (c.corrupt_plan ? 1 : 0);
  std::string bad = mismatch("batches", static_cast<int64_t>(next), static_cast<int64_t>(batches));
  if (bad.empty()) bad = mismatch("duplicates", static_cast<int64_t>(after.duplicates - before.duplicates),
                                  static_cast<int64_t>(planned_duplicates));
  if (bad.empty()) bad = mismatch("points issued", after.issued - before.issued, plan.issued);
  if (bad.empty()) bad = mismatch("points redeemed", after.redeemed - before.redeemed, plan.redeemed);
  --w.segments_left;
  if (!bad.empty()) return state.SkipWithError(bad.c_str());

  state.SetItemsProcessed(static_cast<int64_t>(next * kBatchEvents));
  state.counters["bytes_per_ref_est"] = static_cast<double>(w.ledger.reference_bytes_estimate()) /
                                        static_cast<double>(w.ledger.references());
  state.counters["refs_M"] = static_cast<double>(w.ledger.references()) / 1e6;
  state.counters["dups"] = static_cast<double>(plan.duplicates);
  if (w.segments_left == 0) g_worlds.reset();
}

}  // namespace

void register_apply_benchmarks(const BenchConfig& c) {
  const uint64_t iterations = c.apply_events_per_repetition / kBatchEvents;
  // Earn only and redeem only at the smallest reference count; the mix at every count (a world
  // of 100M references takes minutes to pre-fill on the reference machine).
  for (uint64_t refs : c.reference_counts) {
    for (Mix mix : {Mix::kLoyalty, Mix::kEarn, Mix::kRedeem}) {
      if (mix != Mix::kLoyalty && refs != c.reference_counts.front()) continue;
      for (Choice choice : {Choice::kUniform, Choice::kZipf}) {
        for (Engine engine : {Engine::kTally, Engine::kNaive}) {
          Setup s{engine, mix, choice, refs};
          auto* b = engine == Engine::kTally
                        ? benchmark::RegisterBenchmark(name_of(s).c_str(), run_tally, s, c)
                        : benchmark::RegisterBenchmark(name_of(s).c_str(), run_naive, s, c);
          with_min_max(b)->Iterations(static_cast<benchmark::IterationCount>(iterations))->UseRealTime();
        }
      }
    }
  }
}

}  // namespace tally::bench
