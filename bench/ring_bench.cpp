// SPSC ring transfer between two threads: a producer thread pushes a numbered stream as fast as
// the ring takes it; the benchmark thread pops and checks every item's number (order, no loss).
// Items: 104 bytes (the size of a pipeline command: event + stamp) and 8 bytes; one at a time
// (try_push / pop_n of 1) and in batches (try_push_n / pop_n of kRingBatch).
#include <atomic>
#include <cstring>
#include <thread>

#include "bench/benches.h"
#include "engine/runtime/spsc_ring.h"

namespace tally::bench {
namespace {

constexpr size_t kRingCapacity = 8192;  // the pipeline's producer ring
constexpr size_t kRingBatch = 64;

struct Item104 {
  uint64_t seq;
  unsigned char payload[96];
};
static_assert(sizeof(Item104) == 104);

inline void set_seq(Item104& item, uint64_t seq) { item.seq = seq; }
inline void set_seq(uint64_t& item, uint64_t seq) { item = seq; }
inline uint64_t seq_of(const Item104& item) { return item.seq; }
inline uint64_t seq_of(uint64_t item) { return item; }

template <class T, bool kBatched>
void run_ring(benchmark::State& state, uint64_t items_per_iteration) {
  SpscRing<T> ring(kRingCapacity);
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    T buf[kRingBatch];
    std::memset(static_cast<void*>(buf), 0, sizeof(buf));
    uint64_t seq = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      size_t pushed = 0;
      if constexpr (kBatched) {
        for (size_t i = 0; i < kRingBatch; ++i) set_seq(buf[i], seq + i);
        pushed = ring.try_push_n(buf, kRingBatch);
      } else {
        set_seq(buf[0], seq);
        pushed = ring.try_push(buf[0]) ? 1 : 0;
      }
      seq += pushed;
      if (pushed == 0) cpu_relax();
    }
  });
  T buf[kRingBatch];
  uint64_t expect = 0;
  bool in_order = true;
  for (auto _ : state) {
    uint64_t got = 0;
    while (got < items_per_iteration) {
      size_t want = kBatched ? std::min<uint64_t>(kRingBatch, items_per_iteration - got) : 1;
      size_t n = ring.pop_n(buf, want);
      if (n == 0) {
        cpu_relax();
        continue;
      }
      for (size_t i = 0; i < n; ++i) in_order &= seq_of(buf[i]) == expect++;
      got += n;
    }
  }
  stop.store(true, std::memory_order_relaxed);
  producer.join();
  if (!in_order) return state.SkipWithError("items lost or out of order");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * items_per_iteration));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * items_per_iteration * sizeof(T)));
}

}  // namespace

void register_ring_benchmarks(const BenchConfig& c) {
  const uint64_t n = c.ring_items_per_iteration;
  auto setup = [&](benchmark::internal::Benchmark* b) {
    with_min_max(b)->UseRealTime();
    if (c.smoke) b->Iterations(4);
  };
  setup(benchmark::RegisterBenchmark("spsc/item:104B/single", run_ring<Item104, false>, n));
  setup(benchmark::RegisterBenchmark("spsc/item:104B/batch:64", run_ring<Item104, true>, n));
  setup(benchmark::RegisterBenchmark("spsc/item:8B/single", run_ring<uint64_t, false>, n));
  setup(benchmark::RegisterBenchmark("spsc/item:8B/batch:64", run_ring<uint64_t, true>, n));
}

}  // namespace tally::bench
