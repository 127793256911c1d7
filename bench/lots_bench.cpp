// tally_lots_bench: what point lots and expiry cost (docs/benchmarks.md, "Lots and expiry").
//
//  1. Apply rate of the loyalty mix on one shard: the core program, the same program with lots and
//     expiry (spendable through the end of the month after), and with pending points (14 days) and
//     inactivity expiry too, and with lots and tiers over a rolling 12-month window (four tiers,
//     upgrade bonuses, 30 days' grace), on the same events with the same stamps, simulated time moving a month
//     per round so lots mature and expire inside the timed loop. The order rotates each round;
//     medians and ratios are printed (target: lots and expiry at most 25% slower).
//  2. The expiry sweep over N accounts (default 10M): every member holds a lot that has expired;
//     one pass expires them all (a kExpire effect each). Then the pass of the next day, when
//     nothing is due: the cost of looking.
// Every round checks the program's invariant (counters against a scan of the accounts), so a
// fast wrong answer does not count.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/workload.h"
#include "engine/fraud_set.h"
#include "engine/shard.h"

namespace tally::bench {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Options {
  uint64_t accounts = 1'000'000;
  uint64_t events_per_round = 4'000'000;
  int rounds = 3;
  uint64_t sweep_accounts = 10'000'000;
  bool smoke = false;
};

// Lots and expiry: spendable through the end of the month after the purchase's.
LotPolicy expiry_lots() {
  LotPolicy l;
  l.expiry = ExpiryKind::kEndOfMonth;
  l.expiry_months = 1;
  return l;
}
// The same with pending points (14 days) and inactivity expiry (540 days).
LotPolicy pending_lots() {
  LotPolicy l = expiry_lots();
  l.pending_days = 14;
  l.inactivity_days = 540;
  return l;
}

// Four tiers won over the last 12 months, with upgrade bonuses and 30 days' grace.
void rolling_tiers(Program* p) {
  p->tier_count = 4;
  p->tiers[0] = {0, 1000, "member", 0};
  p->tiers[1] = {500, 1250, "silver", 50};
  p->tiers[2] = {2'000, 1500, "gold", 200};
  p->tiers[3] = {8'000, 2000, "platinum", 500};
  p->tier_policy.period = TierPeriod::kRollingMonths;
  p->tier_policy.window_months = 12;
  p->tier_policy.grace_days = 30;
}

struct World {
  World(const char* name, const LotPolicy& lots, const Options& o, bool tiers = false) : name(name) {
    uint64_t orders = o.events_per_round * (o.rounds + 1) + o.accounts + 1024;
    fraud = std::make_unique<FraudSet>(orders + 4096, 1);
    Program p = loyalty_program(o.accounts, orders);
    p.lots = lots;
    if (tiers) rolling_tiers(&p);
    programs.push_back(p);
    shard = std::make_unique<Shard>(0, programs, fraud.get());
  }
  // Applies `events` in batches, the stamp moving from t0 by `step_ms` per batch. Seconds taken.
  double apply(const std::vector<Event>& events, int64_t t0, int64_t step_ms) {
    ApplyOutput out;
    out.effects.reserve(kBatchEvents * 4);
    auto start = Clock::now();
    for (size_t i = 0, b = 0; i < events.size(); i += kBatchEvents, ++b) {
      out.clear();
      size_t n = std::min(kBatchEvents, events.size() - i);
      shard->apply_batch({events.data() + i, n}, t0 + static_cast<int64_t>(b) * step_ms, &out);
      for (const Effect& f : out.effects) {
        expired += f.event.kind == EventKind::kExpire;
        matured += f.event.kind == EventKind::kMature;
        tier_effects += f.event.kind == EventKind::kTier;
        refused += f.result == Result::kInsufficientPoints;
      }
    }
    return seconds_since(start);
  }
  bool invariant_holds() const {
    int64_t held = 0;
    shard->for_each_account(kProgramId, [&](uint64_t, const AccountState& a) { held += a.available + a.held + a.pending; });
    return shard->stats(kProgramId)->expected_balances() == held;
  }

  std::string name;
  std::unique_ptr<FraudSet> fraud;
  std::vector<Program> programs;
  std::unique_ptr<Shard> shard;
  uint64_t expired = 0, matured = 0, refused = 0, tier_effects = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int apply_rates(const Options& o) {
  std::printf("== apply rate: the loyalty mix, %llu members, %llu events per round, %d rounds, a month per round\n",
              static_cast<unsigned long long>(o.accounts), static_cast<unsigned long long>(o.events_per_round), o.rounds);
  World core("core", LotPolicy{}, o), lots("lots", expiry_lots(), o), pend("lots+pending", pending_lots(), o),
      tiers("lots+tiers", expiry_lots(), o, true);
  constexpr int kWorlds = 4;
  World* worlds[kWorlds] = {&core, &lots, &pend, &tiers};
  Generator gen(Mix::kLoyalty, Choice::kUniform, o.accounts, 0x1075'1075);
  const int64_t t_start = days_from_civil(2026, 1, 1) * kMsPerDay + 9 * 3'600'000;
  std::vector<Event> enrolls = gen.enrolls();
  for (World* w : worlds) w->apply(enrolls, t_start, 0);
  const int64_t month_ms = 30 * kMsPerDay;
  const int64_t batches = static_cast<int64_t>((o.events_per_round + kBatchEvents - 1) / kBatchEvents);
  const int64_t step_ms = month_ms / batches;
  std::vector<double> rates[kWorlds];
  // A first month, not timed: the tables' pages are touched (mapped) once, as in a server that
  // has been running; a short run would otherwise time the kernel clearing pages.
  {
    Plan warm = gen.next(o.events_per_round);
    for (World* w : worlds) w->apply(warm.events, t_start + kMsPerDay, step_ms);
  }
  for (int r = 0; r < o.rounds; ++r) {
    Plan plan = gen.next(o.events_per_round);
    const int64_t t0 = t_start + kMsPerDay + (r + 1) * month_ms;
    // Rotate which goes first: none always runs on a warmer (or quieter) machine.
    for (int k = 0; k < kWorlds; ++k) {
      const int i = (k + r) % kWorlds;
      World* w = worlds[i];
      double s = w->apply(plan.events, t0, step_ms);
      double rate = static_cast<double>(plan.events.size()) / s;
      rates[i].push_back(rate);
      std::printf("round %d %-12s %10.0f events/s  (%.2f s)\n", r + 1, w->name.c_str(), rate, s);
      if (!w->invariant_holds()) {
        std::printf("FAILED: %s: the counters and the accounts disagree\n", w->name.c_str());
        return 1;
      }
    }
  }
  for (World* w : worlds) {
    const ShardMemory m = w->shard->memory();
    std::printf("%-12s %9llu expire effects, %9llu mature effects, %8llu tier effects, %8llu redeems refused for "
                "want of points, %.0f bytes per account (tables included)\n",
                w->name.c_str(), static_cast<unsigned long long>(w->expired), static_cast<unsigned long long>(w->matured),
                static_cast<unsigned long long>(w->tier_effects), static_cast<unsigned long long>(w->refused),
                static_cast<double>(m.account_bytes) / static_cast<double>(m.accounts));
  }
  double c = median(rates[0]), l = median(rates[1]), p = median(rates[2]), t = median(rates[3]);
  std::printf("median: core %.0f, lots %.0f, lots+pending %.0f, lots+tiers %.0f events/s: lots/core %.2fx (target >= "
              "0.75x: %s), lots+pending/core %.2fx, lots+tiers/core %.2fx\n\n",
              c, l, p, t, l / c, l / c >= 0.75 ? "met" : "MISSED", p / c, t / c);
  if (o.smoke && (lots.expired == 0 || pend.matured == 0 || tiers.tier_effects == 0)) {
    std::printf("FAILED: the run never expired or matured a lot, or never changed a tier\n");
    return 1;
  }
  return 0;
}

int sweep_time(const Options& o) {
  const uint64_t n = o.sweep_accounts;
  std::printf("== expiry sweep over %llu members (one shard)\n", static_cast<unsigned long long>(n));
  Program p = loyalty_program(n, n + 1024);
  p.lots.expiry = ExpiryKind::kDays;
  p.lots.expiry_days = 30;
  p.lots_max = n + 1024;
  FraudSet fraud(n + 4096, 1);
  std::vector<Program> programs{p};
  Shard shard(0, programs, &fraud);
  const int64_t t0 = days_from_civil(2026, 1, 1) * kMsPerDay;
  auto start = Clock::now();
  {
    std::vector<Event> batch(kBatchEvents);
    ApplyOutput out;
    Rng rng(42);
    for (uint64_t a = 1; a <= n;) {
      size_t k = 0;
      for (; k < kBatchEvents && a <= n; ++k, ++a) {
        Event& e = batch[k];
        e = {};
        e.kind = EventKind::kEnroll;
        e.program = kProgramId;
        e.account = a;
        e.ref = rng.reference();
      }
      out.clear();
      shard.apply_batch({batch.data(), k}, t0, &out);
    }
  }
  std::printf("enrolled in %.1f s (each with a %lld-point lot expiring on %s)\n", seconds_since(start),
              static_cast<long long>(p.signup_bonus_points), format_day(t0 / kMsPerDay + 30).c_str());
  auto pass = [&](int64_t at, uint64_t* effects) {
    ApplyOutput out;
    Event tick{};
    tick.kind = EventKind::kTick;
    auto t = Clock::now();
    shard.apply(tick, at, &out);  // moves the clock; sweeps its share
    while (shard.sweep(1 << 20, &out) > 0) {
      *effects += out.effects.size();
      out.clear();
    }
    *effects += out.effects.size();
    return seconds_since(t);
  };
  uint64_t expired = 0, none = 0;
  double s1 = pass(t0 + 31 * kMsPerDay, &expired);
  double s2 = pass(t0 + 32 * kMsPerDay, &none);
  std::printf("pass expiring every member: %.2f s, %llu expire effects (%.1f M members/s)\n", s1,
              static_cast<unsigned long long>(expired), static_cast<double>(n) / s1 / 1e6);
  std::printf("pass with nothing due:      %.2f s (%.1f M members/s)\n\n", s2, static_cast<double>(n) / s2 / 1e6);
  const ProgramStats& st = *shard.stats(kProgramId);
  if (expired != n || none != 0 || st.expired != static_cast<int64_t>(n) * p.signup_bonus_points) {
    std::printf("FAILED: expected %llu expiries on the first pass and none on the second\n",
                static_cast<unsigned long long>(n));
    return 1;
  }
  return 0;
}

int main_impl(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* what) -> uint64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", what);
        std::exit(2);
      }
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (a == "--smoke") {
      o.smoke = true;
      o.accounts = 20'000;
      o.events_per_round = 200'000;
      o.sweep_accounts = 100'000;
    } else if (a == "--accounts") {
      o.accounts = value("--accounts");
    } else if (a == "--events") {
      o.events_per_round = value("--events");
    } else if (a == "--rounds") {
      o.rounds = static_cast<int>(value("--rounds"));
    } else if (a == "--sweep-accounts") {
      o.sweep_accounts = value("--sweep-accounts");
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "Usage: tally_lots_bench [--smoke] [--accounts N] [--events N] [--rounds N] [--sweep-accounts N]\n"
          "The loyalty mix on one shard with and without point lots (same events, same stamps, a month\n"
          "of simulated time per round, after one untimed month), then one expiry sweep over --sweep-accounts members\n"
          "(default 10000000; 0 skips it). docs/benchmarks.md, \"Lots and expiry\".\n");
      return 0;
    } else {
      std::fprintf(stderr, "tally_lots_bench: unknown argument %s (--help)\n", a.c_str());
      return 2;
    }
  }
  if (o.rounds < 1 || o.accounts < 1 || o.events_per_round < kBatchEvents) {
    std::fprintf(stderr, "tally_lots_bench: --rounds, --accounts and --events (>= %zu) must be positive\n", kBatchEvents);
    return 2;
  }
  int rc = apply_rates(o);
  if (rc == 0 && o.sweep_accounts > 0) rc = sweep_time(o);
  return rc;
}

}  // namespace
}  // namespace tally::bench

int main(int argc, char** argv) { return tally::bench::main_impl(argc, argv); }
