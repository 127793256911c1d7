// tally-demo: runs the durable ledger in-process (engine + LMDB log, no network) on a realistic
// loyalty workload and prints what happened. It is what `tools/quickstart run` starts until the
// TCP server (tallyd) exists. Every counted result was acknowledged only once its log record was
// on disk.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/runtime/pipeline.h"
#include "storage/ledger.h"
#include "tools/program_config.h"

namespace {

constexpr const char* kUsage = R"(Usage: tally-demo [options]

Runs Tally's sharded ledger in-process, with its durable log, on the loyalty mix (80% earn, 15%
redeem, 5% balance; 1% of earns reuse the order ID of an earlier accepted earn and must be
caught as duplicates; 0.5% of events are identical retries and must come back as replays) and
prints the outcome. Results are counted as they are acknowledged: after their log record is on
disk (LMDB, fsync on every commit). Run it again on the same directory: the ledger recovers what
the last run left, and new members are added beside the old ones.

Options:
  --data DIR       data directory (default ./tally-data; created if missing)
  --members N      members enrolled before the run (default 100000)
  --events N       events in the run (default 2000000)
  --shards N       shard threads (default 1)
  --batch N        events per submitted batch (default 1000)
  --seed N         workload seed (default 1)
  --programs FILE  program definitions in TOML (docs/programs.md); the first one is used.
                   Without it, the built-in demo program (1 point per EUR, 50 points sign-up).
  -h, --help       this text
)";

struct Options {
  std::string data = "tally-data";
  uint64_t members = 100'000;
  uint64_t events = 2'000'000;
  uint16_t shards = 1;
  size_t batch = 1000;
  uint64_t seed = 1;
  std::string programs_file;
};

bool parse_number(const char* text, uint64_t lo, uint64_t hi, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "tally-demo: %s needs a value (see --help)\n", a.c_str());
      return 2;
    }
    const char* v = argv[++i];
    uint64_t n = 0;
    bool ok = true;
    if (a == "--members") ok = parse_number(v, 2, 100'000'000, &o->members);
    else if (a == "--events") ok = parse_number(v, 1, 10'000'000'000ULL, &o->events);
    else if (a == "--shards") ok = parse_number(v, 1, 256, &n), o->shards = static_cast<uint16_t>(n);
    else if (a == "--batch") ok = parse_number(v, 1, 100'000, &n), o->batch = n;
    else if (a == "--seed") ok = parse_number(v, 0, UINT64_MAX, &o->seed);
    else if (a == "--programs") o->programs_file = v;
    else if (a == "--data") o->data = v;
    else {
      std::fprintf(stderr, "tally-demo: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "tally-demo: bad value for %s: '%s' (see --help)\n", a.c_str(), v);
      return 2;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tally;
  Options opt;
  if (int rc = parse(argc, argv, &opt); rc != 0) return rc;

  std::vector<Program> programs;
  if (!opt.programs_file.empty()) {
    ConfigError err;
    if (!load_programs_file(opt.programs_file, &programs, &err)) {
      std::fprintf(stderr, "tally-demo: %s\n", err.to_string().c_str());
      return 1;
    }
  } else {
    programs.push_back(default_program());
  }
  Program& prog = programs.front();
  prog.accounts_max = std::max<uint64_t>(prog.accounts_max, opt.members);
  prog.orders_max = std::max<uint64_t>(prog.orders_max, (opt.members + opt.events) / opt.shards + 1024);
  prog.events_per_minute_max = 0;  // the demo sends a day's traffic in seconds

  // What was acknowledged (the durable sink runs on the committer thread), read after drain().
  uint64_t by_result[kResultCount] = {};
  uint64_t replays = 0, failed = 0;
  std::string failure;
  std::mutex accepted_mu;
  std::vector<Event> accepted_earns;  // candidates for the planned duplicates
  storage::LedgerOptions options;
  options.store.dir = opt.data;
  options.pipeline.shard_count = opt.shards;
  options.pipeline.programs = programs;
  // Room for this run's references and those earlier runs left in the log (the ledger raises it
  // further if the log holds more).
  options.pipeline.references_max = std::max<uint64_t>(4'000'000, 2 * (opt.members + opt.events) + 1024);
  auto durable = [&](std::span<const Effect> effects, uint64_t) {
    std::lock_guard lock(accepted_mu);
    for (const Effect& e : effects) {
      ++by_result[static_cast<uint8_t>(e.result)];
      replays += (e.flags & kEffectReplay) != 0;
      if (e.event.kind == EventKind::kEarn && e.result == Result::kOk && !(e.flags & kEffectReplay) &&
          accepted_earns.size() < 100'000) {
        accepted_earns.push_back(e.event);
      }
    }
  };
  auto failed_sink = [&](std::span<const Effect> effects, const std::string& why) {
    std::lock_guard lock(accepted_mu);
    failed += effects.size();
    failure = why;
  };
  std::unique_ptr<storage::Ledger> ledger;
  try {
    ledger = std::make_unique<storage::Ledger>(options, durable, failed_sink);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally-demo: cannot open the ledger in %s: %s\n", opt.data.c_str(), e.what());
    return 1;
  }
  Pipeline& pipeline = ledger->pipeline();
  const storage::RecoveryReport& rec = ledger->recovery();
  ServerClock clock;
  std::printf("tally-demo: program %u '%s', %llu members, %llu events, %u shard(s)\n", prog.id,
              prog.name.c_str(), static_cast<unsigned long long>(opt.members),
              static_cast<unsigned long long>(opt.events), opt.shards);
  if (rec.fresh) {
    std::printf("data: new ledger in %s\n", opt.data.c_str());
  } else {
    std::printf("data: recovered %s: %llu log batches, %llu records replayed and verified in %.2f s\n",
                opt.data.c_str(), static_cast<unsigned long long>(rec.batches),
                static_cast<unsigned long long>(rec.records), rec.seconds);
  }

  std::vector<Event> batch;
  uint64_t ref_counter = 0;
  // Order IDs unique to this run (a later run on the same data must not replay this one's).
  const uint64_t run_id = static_cast<uint64_t>(clock.now_ms()) ^ (opt.seed << 48);
  auto fresh_ref = [&] { return Ref128{++ref_counter, run_id}; };
  // Members: a later run adds new ones after those already enrolled.
  uint64_t first_member = 1;
  for (uint16_t s = 0; s < pipeline.shard_count(); ++s)
    pipeline.shard(s).for_each_account(prog.id, [&](uint64_t id, const AccountState&) {
      first_member = std::max(first_member, id + 1);
    });
  const uint64_t last_member = first_member + opt.members - 1;
  for (uint64_t id = first_member; id <= last_member; ++id) {
    Event e{};
    e.kind = EventKind::kEnroll;
    e.program = prog.id;
    e.account = id;
    e.ref = fresh_ref();
    batch.push_back(e);
    if (batch.size() == opt.batch || id == last_member) {
      pipeline.submit(0, batch, clock.now_ms());
      batch.clear();
    }
  }
  ledger->drain();

  std::mt19937_64 rng(opt.seed);
  auto pick = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
  uint64_t planned_duplicates = 0, planned_retries = 0;
  std::vector<Event> sent;  // recent events, for identical retries
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < opt.events; ++i) {
    Event e{};
    e.program = prog.id;
    e.account = pick(1, last_member);
    e.ref = fresh_ref();
    e.store = static_cast<uint32_t>(pick(1, 200));
    uint64_t r = pick(0, 999);
    if (r < 5 && !sent.empty()) {
      e = sent[pick(0, sent.size() - 1)];
      ++planned_retries;
    } else if (r < 800) {
      e.kind = EventKind::kEarn;
      e.amount = static_cast<int64_t>(pick(1, 100'000));
      if (pick(0, 99) == 0) {  // a different purchase reusing an accepted order ID
        std::lock_guard lock(accepted_mu);
        if (!accepted_earns.empty()) {
          e.ref = accepted_earns[pick(0, accepted_earns.size() - 1)].ref;
          e.account = e.account % last_member + 1;
          ++planned_duplicates;
        }
      }
    } else if (r < 950) {
      e.kind = EventKind::kRedeem;
      e.amount = static_cast<int64_t>(pick(1, 1000));
    } else {
      e.kind = EventKind::kBalance;
      e.ref = {};
    }
    batch.push_back(e);
    if (e.kind != EventKind::kBalance && sent.size() < 4096) sent.push_back(e);
    if (batch.size() == opt.batch || i + 1 == opt.events) {
      pipeline.submit(0, batch, clock.now_ms());
      batch.clear();
    }
  }
  ledger->drain();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  storage::CommitterStats cs = ledger->committer().stats();
  uint64_t durable_lsn = ledger->committer().durable_lsn();
  ledger->stop();

  ProgramStats total;
  for (uint16_t s = 0; s < pipeline.shard_count(); ++s) {
    const ProgramStats* ps = pipeline.shard(s).stats(prog.id);
    total.issued += ps->issued;
    total.redeemed += ps->redeemed;
    total.members += ps->members;
    total.duplicates += ps->duplicates;
  }
  std::printf("\nmembers            %llu\n", static_cast<unsigned long long>(total.members));
  std::printf("points issued      %lld\n", static_cast<long long>(total.issued));
  std::printf("points redeemed    %lld\n", static_cast<long long>(total.redeemed));
  std::printf("duplicates caught  %llu (planned %llu)\n", static_cast<unsigned long long>(total.duplicates),
              static_cast<unsigned long long>(planned_duplicates));
  std::printf("replays answered   %llu (planned retries %llu)\n", static_cast<unsigned long long>(replays),
              static_cast<unsigned long long>(planned_retries));
  std::printf("durable events/s   %.0f (%llu events in %.2f s, %u shard(s), acknowledged after fsync)\n",
              static_cast<double>(opt.events) / seconds, static_cast<unsigned long long>(opt.events), seconds,
              opt.shards);
  std::printf("log                %llu commits, %.0f records per commit on average, commit p50 %.2f ms, p99 %.2f ms;"
              " durable LSN %llu\n",
              static_cast<unsigned long long>(cs.commits), cs.records_per_commit.mean(),
              static_cast<double>(cs.commit_ns.quantile(0.5)) / 1e6, static_cast<double>(cs.commit_ns.quantile(0.99)) / 1e6,
              static_cast<unsigned long long>(durable_lsn));
  std::printf("results:");
  for (uint8_t r = 0; r < kResultCount; ++r)
    if (by_result[r] != 0)
      std::printf(" %s=%llu", std::string(to_string(static_cast<Result>(r))).c_str(),
                  static_cast<unsigned long long>(by_result[r]));
  std::printf("\n");
  if (failed != 0) {
    std::fprintf(stderr, "tally-demo: FAILED: %llu events not durable: %s\n", static_cast<unsigned long long>(failed),
                 failure.c_str());
    return 1;
  }
  // Every planned duplicate is a reuse of an accepted order: all must have been caught. Retries of
  // an event that was itself a duplicate are duplicates too, so caught >= planned.
  if (total.duplicates < planned_duplicates) {
    std::fprintf(stderr, "tally-demo: FAILED: fewer duplicates caught than planned\n");
    return 1;
  }
  return 0;
}
