// tally_engine_bench: Google Benchmark micro-benchmarks of the engine, and a summary.
//
//   tally_engine_bench [--smoke] [--negative-control] [google benchmark flags]
//
// --smoke shrinks every size (10k members, 100k references, short streams) so the run takes
// seconds: CTest runs it so the binary cannot rot. --negative-control makes every check expect
// one duplicate more than planned: every checked benchmark must then fail (CTest expects that).
// After the runs, a summary prints median [min-max] per benchmark (over repetitions), the ratio
// of Tally to the naive baseline at the same reference count, and the targets met or missed.
// The exit status is 1 if any benchmark reported an error (a check failed).
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/benches.h"

namespace tally::bench {
namespace {

struct Figure {
  double median = 0, min = 0, max = 0;
  bool have_aggregates = false;
};

struct Row {
  std::string name;
  std::map<std::string, Figure> counters;  // items_per_second, bytes_per_account, ...
  bool error = false;
  std::string error_message;
};

// The console output as usual, plus every run remembered for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      Row& row = row_for(run.run_name.function_name);
      if (run.error_occurred) {
        row.error = true;
        row.error_message = run.error_message;
        continue;
      }
      for (const auto& [key, counter] : run.counters) {
        Figure& f = row.counters[key];
        double v = counter.value;
        if (run.run_type == Run::RT_Iteration) {
          if (!f.have_aggregates) f.median = f.min = f.max = v;  // until aggregates arrive
        } else if (run.aggregate_name == "median") {
          f.median = v, f.have_aggregates = true;
        } else if (run.aggregate_name == "min") {
          f.min = v, f.have_aggregates = true;
        } else if (run.aggregate_name == "max") {
          f.max = v, f.have_aggregates = true;
        }
      }
    }
  }

  const std::vector<Row>& rows() const { return rows_; }
  const Row* find(const std::string& name) const {
    for (const Row& r : rows_)
      if (r.name == name) return &r;
    return nullptr;
  }

 private:
  Row& row_for(const std::string& name) {
    for (Row& r : rows_)
      if (r.name == name) return r;
    rows_.push_back({name, {}, false, {}});
    return rows_.back();
  }
  std::vector<Row> rows_;
};

std::string millions(const Figure& f) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%7.2f [%.2f-%.2f]", f.median / 1e6, f.min / 1e6, f.max / 1e6);
  return buf;
}

const Figure* counter(const Row* row, const char* key) {
  if (row == nullptr) return nullptr;
  auto it = row->counters.find(key);
  return it == row->counters.end() ? nullptr : &it->second;
}

// Prints the summary; returns the number of rows with errors.
int print_summary(const SummaryReporter& r, const BenchConfig& c) {
  std::printf("\n==== Tally engine benchmark summary (%s) ====\n",
              c.smoke ? "SMOKE sizes: figures not meaningful" : "full sizes");
  std::printf("Real (wall) time; median [min-max] of the repetitions; M = million.\n\n");
  std::printf("%-44s %-28s %s\n", "benchmark", "M items/s", "other");
  int errors = 0;
  for (const Row& row : r.rows()) {
    if (row.error) {
      ++errors;
      std::printf("%-44s ERROR: %s\n", row.name.c_str(), row.error_message.c_str());
      continue;
    }
    const Figure* ips = counter(&row, "items_per_second");
    std::string extra;
    for (const char* key : {"bytes_per_account", "bytes_per_ref", "bytes_per_ref_est", "refs_M"}) {
      if (const Figure* f = counter(&row, key)) {
        // Reference bytes per reference fall as a run fills the set (sized for every repetition):
        // the figure printed is the fullest table, at the end of the last repetition.
        bool fullest = std::strncmp(key, "bytes_per_ref", 13) == 0;
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%s%s=%.4g ", key, fullest ? "(full)" : "", fullest ? f->min : f->median);
        extra += buf;
      }
    }
    // Ratio against the naive baseline on the same stream and reference count.
    if (row.name.rfind("apply/tally/", 0) == 0) {
      std::string naive = "apply/naive/" + row.name.substr(std::strlen("apply/tally/"));
      const Figure* base = counter(r.find(naive), "items_per_second");
      if (ips != nullptr && base != nullptr && base->median > 0) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "tally/naive=%.2fx", ips->median / base->median);
        extra += buf;
      }
    }
    std::printf("%-44s %-28s %s\n", row.name.c_str(), ips ? millions(*ips).c_str() : "-", extra.c_str());
  }

  // Targets (DESIGN section 2 and the brief): per shard, loyalty mix, both account choices.
  std::printf("\nTargets%s:\n", c.smoke ? " (smoke sizes: not meaningful)" : "");
  auto verdict = [](bool met) { return met ? "met" : "MISSED"; };
  for (uint64_t refs : c.reference_counts) {
    std::string suffix = "/refs:" + (refs % 1'000'000 == 0 ? std::to_string(refs / 1'000'000) + "M"
                                                           : std::to_string(refs / 1'000) + "k");
    double target = refs >= 100'000'000 ? 6e6 : 10e6;
    for (const char* choice : {"uniform", "zipf"}) {
      std::string name = std::string("apply/tally/mix/") + choice + suffix;
      const Figure* t = counter(r.find(name), "items_per_second");
      const Figure* n = counter(r.find("apply/naive/mix/" + std::string(choice) + suffix), "items_per_second");
      if (t == nullptr) continue;
      std::printf("  %-40s %.2f M/s >= %.0f M/s: %s\n", name.c_str(), t->median / 1e6, target / 1e6,
                  verdict(t->median >= target));
      if (n != nullptr && n->median > 0) {
        std::printf("  %-40s %.2fx >= 2x naive: %s\n", name.c_str(), t->median / n->median,
                    verdict(t->median >= 2 * n->median));
      }
      if (const Figure* b = counter(r.find(name), "bytes_per_account"))
        std::printf("  %-40s %.4f bytes/account <= 64: %s\n", name.c_str(), b->median, verdict(b->median <= 64));
      if (const Figure* b = counter(r.find(name), "bytes_per_ref"))
        std::printf("  %-40s %.2f bytes/reference (fullest) <= 32: %s\n", name.c_str(), b->min, verdict(b->min <= 32));
    }
  }
  if (errors > 0) std::printf("\n%d benchmark(s) FAILED their checks.\n", errors);
  return errors;
}

// --benchmark_repetitions=N as Google Benchmark will read it: tables are sized for N segments.
int repetitions_from(int argc, char** argv) {
  const char* flag = "--benchmark_repetitions=";
  int reps = 1;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) reps = std::atoi(argv[i] + std::strlen(flag));
  return reps < 1 ? 1 : reps;
}

}  // namespace
}  // namespace tally::bench

int main(int argc, char** argv) {
  using namespace tally::bench;
  BenchConfig config;
  // Our own flags first; the rest belongs to Google Benchmark.
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      config.smoke = true;
    } else if (std::strcmp(argv[i], "--negative-control") == 0) {
      config.corrupt_plan = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  config.repetitions = repetitions_from(n, args.data());
  if (config.smoke) {
    config.accounts_count = 10'000;
    config.reference_counts = {100'000};
    config.apply_events_per_repetition = 20'000;
    config.pipeline_events_per_repetition = 20'000;
    config.ring_items_per_iteration = 1 << 14;
  }
  register_apply_benchmarks(config);
  register_ring_benchmarks(config);
  register_pipeline_benchmarks(config);

  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  int errors = print_summary(reporter, config);
  benchmark::Shutdown();
  return errors > 0 ? 1 : 0;
}
