// The whole runtime: tally::Pipeline with 1 or 2 shards and one producer (the benchmark thread),
// loyalty mix over N members enrolled through the pipeline before timing. One iteration submits
// a pre-generated segment in frames of 1000 events and drains: end to end, from submit() to the
// sink, which only counts (effects, duplicates, points) for the check after the loop.
// Threads: producer + shards + output thread share however many cores the machine has.
#include <atomic>
#include <memory>
#include <string>

#include "bench/benches.h"
#include "engine/runtime/pipeline.h"

namespace tally::bench {
namespace {

constexpr uint64_t kSeed = 0x7a11'919e'0003ULL;

struct SinkCounts {
  std::atomic<uint64_t> effects{0};
  std::atomic<uint64_t> failed{0};  // results other than ok, duplicate, insufficient points
  std::atomic<uint64_t> duplicates{0};
  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> redeemed{0};
};

struct PipelineWorld {
  PipelineWorld(Choice choice, uint16_t shards, const BenchConfig& c)
      : generator(Mix::kLoyalty, choice, c.accounts_count, kSeed) {
    uint64_t claims = Generator::claims_max(c.pipeline_events_per_repetition) * c.repetitions +
                      Generator::claims_max(c.pipeline_events_per_repetition / 10);
    PipelineConfig pc;
    pc.shard_count = shards;
    pc.producer_count = 1;
    pc.programs.push_back(loyalty_program(c.accounts_count, c.accounts_count + claims + 1024));
    pc.references_max = c.accounts_count + claims + 1024 * (shards + 1);
    pipeline = std::make_unique<Pipeline>(std::move(pc), [this](std::span<const Effect> effects) {
      count(effects);
    });
    std::vector<Event> enrolls = generator.enrolls();
    for (size_t i = 0; i < enrolls.size(); i += kBatchEvents) {
      size_t n = std::min(kBatchEvents, enrolls.size() - i);
      pipeline->submit(0, {enrolls.data() + i, n}, kServerTimeMs);
    }
    pipeline->drain();
    ok = counts.effects.load() == c.accounts_count && counts.failed.load() == 0 &&
         counts.duplicates.load() == 0;
    // A warm-up segment, untimed, so the first timed one has settled earns to duplicate.
    generator.settle_only();
    Plan warm = generator.next(c.pipeline_events_per_repetition / 10);
    for (size_t i = 0; i < warm.events.size(); i += kBatchEvents) {
      size_t n = std::min(kBatchEvents, warm.events.size() - i);
      pipeline->submit(0, {warm.events.data() + i, n}, kServerTimeMs);
    }
    pipeline->drain();
    ok &= counts.duplicates.load() == warm.duplicates && counts.issued.load() == warm.issued &&
          counts.redeemed.load() == warm.redeemed;
    generator.settle_only();
    segments_left = c.repetitions;
  }

  // On the output thread.
  void count(std::span<const Effect> effects) {
    uint64_t failed = 0, duplicates = 0;
    int64_t issued = 0, redeemed = 0;
    for (const Effect& e : effects) {
      if (e.result == Result::kOk) {
        if (e.event.kind == EventKind::kEarn) issued += e.points;
        if (e.event.kind == EventKind::kRedeem) redeemed += e.points;
      } else if (e.result == Result::kDuplicateOrder) {
        ++duplicates;
      } else if (e.result != Result::kInsufficientPoints) {
        ++failed;
      }
    }
    counts.effects.fetch_add(effects.size(), std::memory_order_relaxed);
    counts.failed.fetch_add(failed, std::memory_order_relaxed);
    counts.duplicates.fetch_add(duplicates, std::memory_order_relaxed);
    counts.issued.fetch_add(issued, std::memory_order_relaxed);
    counts.redeemed.fetch_add(redeemed, std::memory_order_relaxed);
  }

  SinkCounts counts;
  Generator generator;
  std::unique_ptr<Pipeline> pipeline;
  int segments_left = 0;
  bool ok = true;
};

std::string g_owner;
std::unique_ptr<PipelineWorld> g_world;

void run_pipeline(benchmark::State& state, Choice choice, uint16_t shards, BenchConfig c) {
  std::string name = "pipeline/" + to_string(choice) + "/shards:" + std::to_string(shards);
  if (g_owner != name || g_world == nullptr || g_world->segments_left == 0) {
    g_world.reset();
    g_world = std::make_unique<PipelineWorld>(choice, shards, c);
    g_owner = name;
  }
  PipelineWorld& w = *g_world;
  if (!w.ok) return state.SkipWithError("enrolment through the pipeline failed");
  Plan plan = w.generator.next(c.pipeline_events_per_repetition);
  w.generator.settle_only();  // the next segment starts after this one has drained
  const uint64_t effects0 = w.counts.effects.load(), duplicates0 = w.counts.duplicates.load();
  const int64_t issued0 = w.counts.issued.load(), redeemed0 = w.counts.redeemed.load();
  for (auto _ : state) {
    for (size_t i = 0; i < plan.events.size(); i += kBatchEvents) {
      size_t n = std::min(kBatchEvents, plan.events.size() - i);
      w.pipeline->submit(0, {plan.events.data() + i, n}, kServerTimeMs);
    }
    w.pipeline->drain();
  }
  --w.segments_left;
  uint64_t planned_duplicates = plan.duplicates + (c.corrupt_plan ? 1 : 0);
  if (w.counts.effects.load() - effects0 != plan.events.size() * state.iterations() ||
      w.counts.failed.load() != 0) {
    return state.SkipWithError("effects missing or unexpected results");
  }
  if (state.iterations() != 1 || w.counts.duplicates.load() - duplicates0 != planned_duplicates ||
      w.counts.issued.load() - issued0 != plan.issued ||
      w.counts.redeemed.load() - redeemed0 != plan.redeemed) {
    return state.SkipWithError("duplicates or points differ from the plan");
  }
  state.SetItemsProcessed(static_cast<int64_t>(plan.events.size()));
  state.counters["dups"] = static_cast<double>(plan.duplicates);
  if (w.segments_left == 0) {
    g_world.reset();
    g_owner.clear();
  }
}

}  // namespace

void register_pipeline_benchmarks(const BenchConfig& c) {
  for (Choice choice : {Choice::kUniform, Choice::kZipf}) {
    for (uint16_t shards : {uint16_t{1}, uint16_t{2}}) {
      std::string name = "pipeline/" + to_string(choice) + "/shards:" + std::to_string(shards);
      with_min_max(benchmark::RegisterBenchmark(name.c_str(), run_pipeline, choice, shards, c))
          ->Iterations(1)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace tally::bench
