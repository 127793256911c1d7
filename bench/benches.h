// Tally benchmarks: registration of each group, called by main() in engine_bench.cpp.
//
// Every benchmark runs a fixed number of iterations on pre-generated data and checks its
// outcome against the plan after the timed loop (state.SkipWithError on a mismatch), so the
// binary fails rather than report a figure for a wrong answer.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "bench/workload.h"

namespace tally::bench {

void register_apply_benchmarks(const BenchConfig& config);
void register_ring_benchmarks(const BenchConfig& config);
void register_pipeline_benchmarks(const BenchConfig& config);

// Adds min and max to the repetition aggregates (median [min-max] in the report).
inline benchmark::internal::Benchmark* with_min_max(benchmark::internal::Benchmark* b) {
  b->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
  b->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
  return b;
}

}  // namespace tally::bench
