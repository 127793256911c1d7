// tally_storage_bench: what durability costs, next to what the disk and LMDB allow.
//
//   1. Commit: durable records/s and commit latency for 1, 10, 100, 1000 and 8000 effects per
//      commit through the committer, next to a bare LMDB loop appending the same bytes in the
//      same commits (storage/raw_append.h), in the same run. Target: >= 70% of the bare loop.
//   2. End to end in-process (engine + storage, no network): the loyalty mix on N members, 1 shard,
//      durable events/s, with the file system, the LMDB flags, fsyncs/s, events per commit and bytes
//      per effect, checking events/s <= fsyncs/s x events per commit. Target: >= 2M events/s and
//      >= 50% of the bare loop for the same bytes per event.
//      Twice: the log alone, and the full durable path (checkpoint rounds every 32 MiB of log and
//      the history index; --full picks one of the two), with the ratio of the two, the longest
//      commit, and how the checkpoint rounds kept up.
//   3. Recovery: restart on that directory; replay speed (target >= 1M records/s).
//   4. With --recovery-scale (or only it, --only-scale): restart time of a data directory holding
//      a checkpoint of N members (default 10M) and M order references of a trimmed log (default
//      100M), built synthetically, with the time of each phase of the open and a probe of 1001
//      members spread over the range (all must be found, and the member count must be N).
// Medians of --reps runs (default 3). The last line is JSON for scripts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "bench/workload.h"
#include "engine/shard.h"
#include "storage/committer.h"
#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/program_codec.h"
#include "storage/raw_append.h"
#include "storage/store.h"

namespace {

using namespace tally;
using namespace tally::storage;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(Usage: tally_storage_bench [options]

Measures the durable log (docs/benchmarks.md, "Durable log"). Writes scratch LMDB environments
under DIR and removes them.

Options:
  --dir DIR        scratch directory on the file system to measure (default ./bench-scratch)
  --reps N         repetitions per figure; the median is reported (default 3)
  --members N      members for the end-to-end run (default 1000000)
  --events N       events in the end-to-end run (default 3000000)
  --recovery-scale also measure a restart with --scale-members members in the checkpoint and
                   --scale-refs order references in the dedup database (minutes; about 10 GB
                   of memory and disk at the defaults)
  --scale-members N  (default 10000000)
  --scale-refs N     (default 100000000)
  --only-e2e       run only sections 2 and 3 (end to end, recovery)
  --only-scale     run only section 4 (implies --recovery-scale)
  --full MODE      what the second end-to-end run adds to the log: both (default: checkpoints
                   and the history index), checkpoints, index
  --checkpoint-mib N  log MiB between checkpoint rounds in that run (default 32)
  --slice-kib N    checkpoint slice KiB written per commit at most in that run (default: the
                   server's, CheckpointOptions::slice_bytes_per_commit)
  --smoke          tiny sizes, seconds: what ctest runs so the binary cannot rot
  -h, --help       this text
)";

struct Options {
  std::string dir = "bench-scratch";
  int reps = 3;
  uint64_t members = 1'000'000;
  uint64_t events = 3'000'000;
  bool smoke = false;
  bool recovery_scale = false;
  uint64_t scale_members = 10'000'000;
  uint64_t scale_refs = 100'000'000;
  bool only_e2e = false;
  bool only_scale = false;
  bool with_checkpoints = true;  // the second end-to-end run
  bool with_index = true;
  uint64_t checkpoint_mib = 32;
  uint64_t slice_kib = 0;  // 0: the default
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Realistic effects: the loyalty mix applied by a real shard to 10k members.
std::vector<Effect> sample_effects(size_t n) {
  bench::Generator gen(bench::Mix::kLoyalty, bench::Choice::kUniform, 10'000, 99);
  std::vector<Program> programs{bench::loyalty_program(10'000, n + 20'000)};
  FraudSet fraud(n + 20'000, 1);
  Shard shard(0, programs, &fraud);
  ApplyOutput out;
  std::vector<Event> enrolls = gen.enrolls();
  shard.apply_batch(enrolls, bench::kServerTimeMs, &out);
  out.clear();
  bench::Plan plan = gen.next(n + n / 10);
  shard.apply_batch(plan.events, bench::kServerTimeMs, &out);
  std::vector<Effect> effects;
  for (const Effect& e : out.effects)
    if (e.event.kind != EventKind::kBalance && effects.size() < n) effects.push_back(e);
  return effects;
}

struct CommitFigure {
  double records_per_s = 0, p50_ms = 0, p99_ms = 0;
};

// The committer with its size cap at `batch` effects per commit, fed continuously (as the
// pipeline feeds it): encoding overlaps the previous commit, each commit carries <= `batch`.
CommitFigure committer_run(const std::string& dir, const std::vector<Effect>& sample, size_t batch, uint64_t commits) {
  std::filesystem::remove_all(dir);
  Store store({.dir = dir});
  std::vector<Effect> chunk(batch);
  CommitterOptions o;
  o.txn_effects_max = batch;
  Committer c(&store, o, {}, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string& w) {
    std::fprintf(stderr, "storage failed: %s\n", w.c_str());
    std::exit(1);
  });
  uint64_t seq = 0;
  auto t0 = Clock::now();
  for (uint64_t k = 0; k < commits; ++k) {
    for (size_t i = 0; i < batch; ++i) {
      chunk[i] = sample[(k * batch + i) % sample.size()];
      chunk[i].seq = ++seq;
    }
    c.append(chunk);
  }
  c.flush();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  CommitterStats st = c.stats();
  c.stop();
  return {static_cast<double>(st.records) / s, st.commit_ns.quantile(0.5) / 1e6, st.commit_ns.quantile(0.99) / 1e6};
}

// The same bytes, the same commits, through a bare LMDB loop.
CommitFigure raw_run(const std::string& dir, const std::vector<Effect>& sample, size_t batch, uint64_t commits) {
  std::filesystem::remove_all(dir);
  // Encode `commits` distinct commits' worth (cycled if many) exactly as the committer would.
  std::vector<std::vector<std::vector<uint8_t>>> per_commit;
  uint64_t distinct = std::min<uint64_t>(commits, 64);
  uint64_t seq = 0, lsn = 0;
  for (uint64_t k = 0; k < distinct; ++k) {
    std::vector<std::vector<uint8_t>> values;
    BatchWriter w;
    bool open = false;
    for (size_t i = 0; i < batch; ++i) {
      Effect e = sample[(k * batch + i) % sample.size()];
      e.seq = ++seq;
      if (!open) w.begin(++lsn, 1, 0, e.time_ms), open = true;
      w.add(e);
      if (w.body_size() >= kBatchBodyTarget) {
        BatchHeader h;
        auto b = w.finish(&h);
        values.emplace_back(b.begin(), b.end());
        open = false;
      }
    }
    if (open) {
      BatchHeader h;
      auto b = w.finish(&h);
      values.emplace_back(b.begin(), b.end());
    }
    per_commit.push_back(std::move(values));
  }
  RawAppendResult r = raw_append_loop(dir, per_commit, commits);
  return {static_cast<double>(commits * batch) / r.seconds, r.commit_ns.quantile(0.5) / 1e6,
          r.commit_ns.quantile(0.99) / 1e6};
}

struct EndToEnd {
  double events_per_s = 0;
  double commits_per_s = 0;
  double events_per_commit = 0;
  double bytes_per_effect = 0;
  double replay_records_per_s = 0;
  double replay_seconds = 0;
  uint64_t records = 0;
  std::string flags;
  bool consistent = true;
  // The longest commit of the run, and its p99 (a checkpoint round must not stall the log), and
  // what the checkpoints wrote.
  double commit_p99_ms = 0, commit_max_ms = 0;
  uint64_t rounds = 0;           // completed during the timed part
  double slice_mib = 0;          // written during the whole run
  double queued_mib_max = 0;     // slices held in memory at the peak, waiting for their turn
  double round_tail_s = -1;      // after the last event was durable, until the round in progress completed
  uint64_t trimmed_batches = 0;
};

// What the durable path carries besides the log: checkpoint rounds every `checkpoint_mib` MiB
// of log, the history index; both off: the log alone.
struct Durability {
  bool checkpoints = false;
  bool index = false;
  uint64_t checkpoint_mib = 32;
  uint64_t slice_kib = 0;  // 0: the default
};

EndToEnd end_to_end(const std::string& dir, uint64_t members, uint64_t events, Durability full) {
  std::filesystem::remove_all(dir);
  EndToEnd r;
  bench::Generator gen(bench::Mix::kLoyalty, bench::Choice::kUniform, members, 7);
  std::vector<Event> enrolls = gen.enrolls();
  bench::Plan plan = gen.next(events);
  LedgerOptions o;
  o.store.dir = dir;
  o.pipeline.shard_count = 1;
  o.pipeline.programs = {bench::loyalty_program(members, members + events + 1024)};
  o.pipeline.references_max = members + events + 1024;
  o.checkpoints = full.checkpoints;
  o.checkpoint.interval_log_bytes = full.checkpoint_mib << 20;
  if (full.slice_kib != 0) o.checkpoint.slice_bytes_per_commit = full.slice_kib << 10;
  o.history.enabled = full.index;
  std::mutex mu;
  uint64_t durable = 0;
  {
    Ledger l(o, [&](std::span<const Effect> e, uint64_t) {
      std::lock_guard lk(mu);
      durable += e.size();
    }, [](std::span<const Effect>, const std::string& w) {
      std::fprintf(stderr, "storage failed: %s\n", w.c_str());
      std::exit(1);
    });
    ServerClock clock;
    for (size_t i = 0; i < enrolls.size(); i += 1000)
      l.pipeline().submit(0, std::span(enrolls).subspan(i, std::min<size_t>(1000, enrolls.size() - i)), clock.now_ms());
    l.drain();
    CommitterStats before = l.committer().stats();
    uint64_t rounds_before = l.committer().checkpoint_stats().rounds_completed;
    uint64_t durable_before;
    {
      std::lock_guard lk(mu);
      durable_before = durable;
    }
    auto t0 = Clock::now();
    for (size_t i = 0; i < plan.events.size(); i += 1000)
      l.pipeline().submit(0, std::span(plan.events).subspan(i, std::min<size_t>(1000, plan.events.size() - i)),
                          clock.now_ms());
    l.drain();
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    CommitterStats after = l.committer().stats();
    uint64_t n;
    {
      std::lock_guard lk(mu);
      n = durable - durable_before;
    }
    uint64_t commits = after.commits - before.commits;
    uint64_t records = after.records - before.records;
    r.events_per_s = static_cast<double>(n) / s;
    r.commits_per_s = static_cast<double>(commits) / s;
    r.events_per_commit = commits == 0 ? 0 : static_cast<double>(n) / static_cast<double>(commits);
    r.bytes_per_effect = records == 0 ? 0 : static_cast<double>(after.bytes - before.bytes) / static_cast<double>(records);
    r.flags = l.store().stats().flags;
    r.commit_p99_ms = static_cast<double>(after.commit_ns.quantile(0.99)) / 1e6;
    r.commit_max_ms = static_cast<double>(after.commit_ns.max()) / 1e6;
    CheckpointStats cs = l.committer().checkpoint_stats();
    r.rounds = cs.rounds_completed - rounds_before;
    if (cs.in_progress != 0) {  // how far behind the log the checkpoint runs
      auto t1 = Clock::now();
      l.committer().wait_checkpoint(cs.in_progress);
      r.round_tail_s = std::chrono::duration<double>(Clock::now() - t1).count();
      cs = l.committer().checkpoint_stats();
    }
    r.slice_mib = static_cast<double>(cs.slice_bytes) / (1 << 20);
    r.queued_mib_max = static_cast<double>(cs.queued_bytes_max) / (1 << 20);
    r.trimmed_batches = cs.trimmed_batches;
    // Each commit is one fdatasync plus one synchronous meta-page write: 2 syncs.
    double fsyncs_per_s = 2 * r.commits_per_s;
    r.consistent = n == plan.events.size() && r.events_per_s <= fsyncs_per_s * r.events_per_commit * 1.0001;
  }
  Ledger again(o, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string&) {});
  r.records = again.recovery().records;
  r.replay_seconds = again.recovery().seconds;
  r.replay_records_per_s = static_cast<double>(r.records) / std::max(r.replay_seconds, 1e-9);
  return r;
}

struct ScaleRecovery {
  double build_seconds = 0;
  double open_seconds = 0;     // Ledger constructor: verify, load the checkpoint, refill, replay
  double recovery_seconds = 0; // of which load + replay
  RecoveryReport report;
  uint64_t references = 0;
  uint64_t members_probed = 0;
  uint64_t members_found = 0;  // of the probed members, how many the restarted ledger knows
  uint64_t members_counted = 0;  // the restored program's member count
  uint64_t orders = 0;         // orders in the checkpointed order tables
};

// A data directory as a long-running server leaves it: a checkpoint of `members` accounts and
// `refs` order references moved to the dedup database by trimming; then the time to open it.
// The members enrolled over many refund windows, as a server's members do: each enroll is an
// order (a replay of it must be answered as one), and the order tables remember one or two
// windows' worth (loyalty_program's 1M per generation), not every order ever taken.
ScaleRecovery recovery_at_scale(const std::string& dir, uint64_t members, uint64_t refs) {
  std::filesystem::remove_all(dir);
  ScaleRecovery r;
  auto t0 = Clock::now();
  constexpr uint64_t kOrdersPerGeneration = 1'000'000;
  std::vector<Program> programs{bench::loyalty_program(members, kOrdersPerGeneration)};
  {
    FraudSet enroll_refs(members + 1024, 1);  // the enrolls' own references (not measured)
    Shard shard(0, programs, &enroll_refs);
    bench::Generator gen(bench::Mix::kLoyalty, bench::Choice::kUniform, members, 7);
    std::vector<Event> enrolls = gen.enrolls();
    ApplyOutput out;
    // At most 90% of a generation per refund window, then the clock moves a window on.
    const uint64_t per_window = kOrdersPerGeneration - kOrdersPerGeneration / 10;
    int64_t time_ms = 1'767'225'600'000;
    uint64_t enrolled = 0;
    for (size_t i = 0; i < enrolls.size(); i += 4096) {
      if (i > 0 && i / per_window != (i - 4096) / per_window) time_ms += programs[0].refund_window_ms;
      out.clear();
      shard.apply_batch(std::span(enrolls).subspan(i, std::min<size_t>(4096, enrolls.size() - i)), time_ms, &out);
      for (const Effect& e : out.effects) enrolled += e.event.kind == EventKind::kEnroll && e.result == Result::kOk;
    }
    if (enrolled != members) {  // a checkpoint of fewer members would measure (and probe) nothing
      std::fprintf(stderr, "restart at scale: only %llu of %llu enrolls were accepted; the synthetic checkpoint "
                           "is wrong\n", static_cast<unsigned long long>(enrolled),
                   static_cast<unsigned long long>(members));
      std::exit(1);
    }
    enrolls = {};
    r.orders = shard.memory().orders;
    std::vector<uint8_t> state = shard.begin_checkpoint();
    while (!shard.checkpoint_step(1u << 20)) {
    }
    std::vector<uint8_t> slices = std::move(shard.checkpoint_out());
    Store s({.dir = dir, .unsafe_no_sync = true});  // building only: the measured open is durable
    WriteSet meta;
    meta.meta = {{"shard_count", "1"},
                 {"programs", encode_programs(programs)},
                 {"checkpoint_round", "1"},
                 {"checkpoint_state.0", std::string(state.begin(), state.end())},
                 {"dedup_claims", std::to_string(refs)}};
    std::span<const uint8_t> in(slices);
    SliceRecord rec;
    WriteSet w;
    while (next_slice_record(&in, &rec)) {
      w.slices.push_back({{0, rec.program, rec.table, rec.slice, 1}, rec.bytes});
      if (w.slices.size() == 100'000) {
        s.write(w);
        w.slices.clear();
      }
    }
    s.write(w);
    // References: 80 claims per value, as trimming writes them.
    std::vector<std::vector<uint8_t>> values;
    uint64_t done = 0;
    while (done < refs) {
      values.clear();
      for (int v = 0; v < 50'000 && done < refs; ++v) {
        std::vector<uint8_t>& value = values.emplace_back();
        for (size_t c = 0; c < kClaimsPerValue && done < refs; ++c, ++done) {
          Effect f{};
          f.event.program = programs[0].id;
          f.event.ref = {done + 1, 0x5ca1e};
          f.event.business_time_ms = 1'767'225'600'000;
          append_claim(&value, f);
        }
      }
      WriteSet d;
      for (const auto& v : values) d.dedup.emplace_back(v);
      s.write(d);
    }
    s.write(meta);
  }
  r.build_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  LedgerOptions o;
  o.store.dir = dir;
  o.pipeline.shard_count = 1;
  o.pipeline.programs = programs;
  o.pipeline.references_max = refs + refs / 4 + 1024;
  auto t1 = Clock::now();
  Ledger l(o, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string&) {});
  r.open_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  r.recovery_seconds = l.recovery().seconds;
  r.report = l.recovery();
  r.references = l.pipeline().fraud_set().size();
  // Probe members spread over the whole range (the first and the last included), as they enrolled.
  AccountState st;
  const uint64_t probes = std::min<uint64_t>(members, 1001);
  for (uint64_t k = 0; k < probes; ++k) {
    uint64_t a = probes == 1 ? 1 : 1 + k * (members - 1) / (probes - 1);
    r.members_found += l.pipeline().shard(0).account(programs[0].id, a, &st) ? 1 : 0;
  }
  r.members_probed = probes;
  r.members_counted = l.pipeline().shard(0).stats(programs[0].id)->members;
  l.stop();
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tally_storage_bench: %s needs a value (see --help)\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--dir") {
      opt.dir = value();
    } else if (a == "--reps") {
      opt.reps = std::max(1, std::atoi(value()));
    } else if (a == "--members") {
      opt.members = std::strtoull(value(), nullptr, 10);
    } else if (a == "--events") {
      opt.events = std::strtoull(value(), nullptr, 10);
    } else if (a == "--recovery-scale") {
      opt.recovery_scale = true;
    } else if (a == "--scale-members") {
      opt.scale_members = std::strtoull(value(), nullptr, 10);
    } else if (a == "--scale-refs") {
      opt.scale_refs = std::strtoull(value(), nullptr, 10);
    } else if (a == "--only-e2e") {
      opt.only_e2e = true;
    } else if (a == "--only-scale") {
      opt.only_scale = true;
      opt.recovery_scale = true;
    } else if (a == "--full") {
      std::string m = value();
      if (m == "both") opt.with_checkpoints = opt.with_index = true;
      else if (m == "checkpoints") opt.with_checkpoints = true, opt.with_index = false;
      else if (m == "index") opt.with_checkpoints = false, opt.with_index = true;
      else {
        std::fprintf(stderr, "tally_storage_bench: --full takes both, checkpoints or index\n");
        return 2;
      }
    } else if (a == "--checkpoint-mib") {
      opt.checkpoint_mib = std::max<uint64_t>(1, std::strtoull(value(), nullptr, 10));
    } else if (a == "--slice-kib") {
      opt.slice_kib = std::max<uint64_t>(1, std::strtoull(value(), nullptr, 10));
    } else if (a == "--smoke") {
      opt.smoke = true;
    } else {
      std::fprintf(stderr, "tally_storage_bench: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (opt.smoke) opt.members = 2000, opt.events = 20'000, opt.reps = 1;
  if (opt.members < 2 || opt.events < 1) {
    std::fprintf(stderr, "tally_storage_bench: --members must be >= 2 and --events >= 1\n");
    return 2;
  }
  std::filesystem::create_directories(opt.dir);
  std::printf("file system under %s: %s\n", opt.dir.c_str(), file_system_of(opt.dir).c_str());

  std::vector<Effect> sample = sample_effects(20'000);
  size_t bytes = 0;
  for (const Effect& e : sample) bytes += encoded_size(e, e.time_ms);
  std::printf("sample: %zu loyalty-mix effects, %.1f encoded bytes per record (192 in memory)\n\n", sample.size(),
              static_cast<double>(bytes) / static_cast<double>(sample.size()));

  const bool run_commit = !opt.only_e2e && !opt.only_scale;
  const bool run_e2e = !opt.only_scale;
  std::string json = "{\"commit\":[";
  bool targets_met = true;
  if (run_commit) {
    std::printf("1. commit: durable records/s and commit latency; median of %d\n", opt.reps);
    std::printf("%8s %16s %16s %8s %22s %22s\n", "batch", "committer rec/s", "bare LMDB rec/s", "ratio",
                "committer p50/p99 ms", "bare p50/p99 ms");
  }
  for (size_t batch : {1, 10, 100, 1000, 8000}) {
    if (!run_commit) break;
    uint64_t commits = opt.smoke ? 20 : std::clamp<uint64_t>(400'000 / batch, 60, 1500);
    std::vector<double> cr, rr;
    CommitFigure cl{}, rl{};
    for (int rep = 0; rep < opt.reps; ++rep) {  // alternate, so drift hits both alike
      CommitFigure c = committer_run(opt.dir + "/committer", sample, batch, commits);
      CommitFigure r = raw_run(opt.dir + "/raw", sample, batch, commits);
      cr.push_back(c.records_per_s);
      rr.push_back(r.records_per_s);
      if (rep == opt.reps / 2) cl = c, rl = r;
    }
    double c = median(cr), r = median(rr), ratio = c / r;
    targets_met &= ratio >= 0.7;
    std::printf("%8zu %16.0f %16.0f %7.2fx %10.2f / %-9.2f %10.2f / %-9.2f\n", batch, c, r, ratio, cl.p50_ms, cl.p99_ms,
                rl.p50_ms, rl.p99_ms);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s{\"batch\":%zu,\"committer\":%.0f,\"bare\":%.0f,\"ratio\":%.3f}",
                  batch == 1 ? "" : ",", batch, c, r, ratio);
    json += buf;
  }
  json += "]";

  EndToEnd m, f;
  double bare_e2e = 0;
  bool consistent = true;
  Durability full{.checkpoints = opt.with_checkpoints, .index = opt.with_index, .checkpoint_mib = opt.checkpoint_mib,
                  .slice_kib = opt.slice_kib};
  std::string full_name = std::string(full.checkpoints ? "checkpoints (a round per " +
                                                              std::to_string(full.checkpoint_mib) + " MiB of log)"
                                                        : "") +
                          (full.checkpoints && full.index ? " and " : "") + (full.index ? "the history index" : "");
  if (run_e2e) {
    std::printf("\n2. end to end in-process: loyalty mix, %llu members, %llu events, 1 shard; median of %d\n",
                static_cast<unsigned long long>(opt.members), static_cast<unsigned long long>(opt.events), opt.reps);
    std::vector<EndToEnd> runs, full_runs;
    for (int rep = 0; rep < opt.reps; ++rep) {  // interleaved, so drift on a shared machine hits both
      runs.push_back(end_to_end(opt.dir + "/ledger", opt.members, opt.events, Durability{}));
      full_runs.push_back(end_to_end(opt.dir + "/ledger", opt.members, opt.events, full));
    }
    auto by_speed = [](const EndToEnd& a, const EndToEnd& b) { return a.events_per_s < b.events_per_s; };
    std::sort(runs.begin(), runs.end(), by_speed);
    std::sort(full_runs.begin(), full_runs.end(), by_speed);
    m = runs[runs.size() / 2];
    f = full_runs[full_runs.size() / 2];
    // The bare loop with this run's bytes per event and commit size.
    size_t e2e_batch = std::max<size_t>(1, static_cast<size_t>(m.events_per_commit));
    std::vector<double> bare;
    for (int rep = 0; rep < opt.reps; ++rep)
      bare.push_back(
          raw_run(opt.dir + "/raw", sample, e2e_batch, opt.smoke ? 20 : std::max<uint64_t>(30, 2'000'000 / e2e_batch))
              .records_per_s);
    bare_e2e = median(bare);
    for (const EndToEnd& r : runs) consistent &= r.consistent;
    for (const EndToEnd& r : full_runs) consistent &= r.consistent;
    std::printf("   durable events/s %.0f [%.0f-%.0f]; bare LMDB loop at %zu records per commit %.0f: ratio %.2fx\n",
                m.events_per_s, runs.front().events_per_s, runs.back().events_per_s, e2e_batch, bare_e2e,
                m.events_per_s / bare_e2e);
    std::printf("   commits/s %.0f, fsyncs/s %.0f (fdatasync + O_DSYNC meta page per commit), events per commit %.0f, "
                "%.1f log bytes per effect; commit p99 %.1f ms, longest %.1f ms\n",
                m.commits_per_s, 2 * m.commits_per_s, m.events_per_commit, m.bytes_per_effect, m.commit_p99_ms,
                m.commit_max_ms);
    std::printf("   LMDB flags: %s\n", m.flags.c_str());
    std::printf("   with %s: durable events/s %.0f [%.0f-%.0f], %.2fx the log alone; commits/s %.0f, events per "
                "commit %.0f; commit p99 %.1f ms, longest %.1f ms\n",
                full_name.c_str(), f.events_per_s, full_runs.front().events_per_s, full_runs.back().events_per_s,
                f.events_per_s / m.events_per_s, f.commits_per_s, f.events_per_commit, f.commit_p99_ms,
                f.commit_max_ms);
    if (full.checkpoints) {
      char tail[96] = "none in progress at the end";
      if (f.round_tail_s >= 0)
        std::snprintf(tail, sizeof tail, "the one in progress completed %.1f s after the last event", f.round_tail_s);
      std::printf("   checkpoints in that run: %llu rounds completed while events were timed, %s; %.0f MiB of "
                  "slices written, at most %.0f MiB queued in memory; %llu log batches trimmed\n",
                  static_cast<unsigned long long>(f.rounds), tail, f.slice_mib, f.queued_mib_max,
                  static_cast<unsigned long long>(f.trimmed_batches));
    }
    std::printf("   check events/s <= fsyncs/s x events per commit, all events durable: %s\n",
                consistent ? "ok" : "FAILED");

    std::printf("\n3. recovery: %llu records replayed and verified in %.2f s: %.2f M records/s\n",
                static_cast<unsigned long long>(m.records), m.replay_seconds, m.replay_records_per_s / 1e6);
    if (full.checkpoints)
      std::printf("   with checkpoints: restart loaded the last checkpoint and replayed %llu records in %.2f s\n",
                  static_cast<unsigned long long>(f.records), f.replay_seconds);
  }
  ScaleRecovery sc;
  if (opt.recovery_scale || opt.smoke) {
    uint64_t mem = opt.smoke ? 10'000 : opt.scale_members, refs = opt.smoke ? 100'000 : opt.scale_refs;
    sc = recovery_at_scale(opt.dir + "/scale", mem, refs);
    bool members_ok = sc.members_found == sc.members_probed && sc.members_counted == mem;
    std::printf("\n4. restart at scale: checkpoint of %llu members (and %llu orders in the order tables), %llu order "
                "references of a trimmed log (built in %.1f s): open %.2f s, of which checkpoint load + reference "
                "refill + replay %.2f s; %llu references in the fraud set; members found: %llu of %llu probed, "
                "%llu counted: %s\n",
                static_cast<unsigned long long>(mem), static_cast<unsigned long long>(sc.orders),
                static_cast<unsigned long long>(refs), sc.build_seconds, sc.open_seconds, sc.recovery_seconds,
                static_cast<unsigned long long>(sc.references), static_cast<unsigned long long>(sc.members_found),
                static_cast<unsigned long long>(sc.members_probed), static_cast<unsigned long long>(sc.members_counted),
                members_ok ? "ok" : "MISSING");
    const RecoveryReport& rr = sc.report;
    std::printf("   the open: verify the log %.2f s, checkpointed state and slices %.2f s, references into the fraud set "
                "%.2f s, replay %.2f s, the rest (tables and fraud set allocated, threads started) %.2f s\n",
                rr.verify_seconds, rr.checkpoint_seconds, rr.refill_seconds,
                rr.seconds - rr.checkpoint_seconds - rr.refill_seconds,
                sc.open_seconds - rr.seconds - rr.verify_seconds);
    consistent &= members_ok && sc.references == refs;
  }

  if (run_commit && run_e2e)
    std::printf("\ntargets: commit >= 0.7x bare at every batch size: %s; end to end >= 2M events/s: %s; "
                ">= 0.5x bare: %s; replay >= 1M records/s: %s\n",
                targets_met ? "met" : "MISSED", m.events_per_s >= 2e6 ? "met" : "MISSED",
                m.events_per_s >= 0.5 * bare_e2e ? "met" : "MISSED", m.replay_records_per_s >= 1e6 ? "met" : "MISSED");
  char buf[512];
  std::snprintf(buf, sizeof buf,
                ",\"end_to_end\":{\"events_per_s\":%.0f,\"bare\":%.0f,\"events_per_commit\":%.0f,\"bytes_per_effect\":%.1f,"
                "\"commits_per_s\":%.0f,\"full_events_per_s\":%.0f},\"replay_records_per_s\":%.0f,"
                "\"scale_open_seconds\":%.2f,\"consistent\":%s}",
                m.events_per_s, bare_e2e, m.events_per_commit, m.bytes_per_effect, m.commits_per_s, f.events_per_s,
                m.replay_records_per_s, sc.open_seconds, consistent ? "true" : "false");
  json += buf;
  std::printf("%s\n", json.c_str());
  std::filesystem::remove_all(opt.dir + "/committer");
  std::filesystem::remove_all(opt.dir + "/raw");
  std::filesystem::remove_all(opt.dir + "/ledger");
  return consistent ? 0 : 1;
}
