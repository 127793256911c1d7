#include "bench/workload.h"

#include <cmath>
#include <cstdlib>

namespace tally::bench {

Program loyalty_program(uint64_t accounts, uint64_t orders) {
  Program p;
  p.id = kProgramId;
  p.name = "loyalty-mix";
  p.currency = 978;
  p.earn_points = 1;
  p.earn_per_minor = 100;
  p.signup_bonus_points = kStartPoints;
  p.tier_count = 1;
  p.points_per_day_max = 0;
  p.events_per_minute_max = 0;
  p.redeem_points_min = 0;
  p.accounts_max = accounts;
  p.orders_max = orders;
  if (!validate(p).empty()) std::abort();
  return p;
}

std::string to_string(Mix m) {
  switch (m) {
    case Mix::kEarn: return "earn";
    case Mix::kRedeem: return "redeem";
    case Mix::kLoyalty: return "mix";
  }
  return "?";
}

std::string to_string(Choice c) { return c == Choice::kUniform ? "uniform" : "zipf"; }

AccountChooser::AccountChooser(Choice c, uint64_t n, double s)
    : choice_(c), n_(n), s_(s), b_(std::pow(2.0, s - 1.0)) {}

uint64_t AccountChooser::next(Rng& rng) {
  if (choice_ == Choice::kUniform) return rng.between(1, n_);
  // pgbench getZipfianRand: rejection sampling after Devroye, "Non-Uniform Random Variate
  // Generation", p. 550. About 8 tries per draw for s = 1.01 and n = 10^6.
  double x = 0;
  for (;;) {
    double u = 1.0 - rng.unit();  // (0, 1]
    double v = rng.unit();
    x = std::floor(std::pow(u, -1.0 / (s_ - 1.0)));
    double t = std::pow(1.0 + 1.0 / x, s_ - 1.0);
    if (v * x * (t - 1.0) / (b_ - 1.0) <= t / b_ && x <= static_cast<double>(n_)) break;
  }
  uint64_t rank = static_cast<uint64_t>(x);  // 1..n
  constexpr uint64_t kScatterPrime = 999'983;  // divides neither 10^4 nor 10^6
  return static_cast<uint64_t>((static_cast<uint128>(rank - 1) * kScatterPrime) % n_) + 1;
}

Generator::Generator(Mix mix, Choice choice, uint64_t accounts, uint64_t seed)
    : mix_(mix), accounts_(accounts), seed_(seed), rng_(seed), chooser_(choice, accounts),
      balances_(accounts, kStartPoints) {}

std::vector<Event> Generator::enrolls() const {
  Rng rng(seed_ ^ 0x656e726f6c6cULL);  // "enroll": its own stream
  std::vector<Event> out(accounts_);
  for (uint64_t i = 0; i < accounts_; ++i) {
    Event& e = out[i];
    e.kind = EventKind::kEnroll;
    e.program = kProgramId;
    e.account = i + 1;
    e.ref = rng.reference();
  }
  return out;
}

Event Generator::earn(Plan* plan) {
  Event e{};
  e.kind = EventKind::kEarn;
  e.program = kProgramId;
  e.account = chooser_.next(rng_);
  e.amount = static_cast<int64_t>(rng_.between(1, 100'000));
  // 1% of earns: a different purchase reusing the reference of an earlier accepted earn.
  size_t candidates = settled_only_ ? settled_ : earned_.size();
  if (candidates > 0 && rng_.between(1, 100) == 1) {
    const Earned& prior = earned_[rng_.between(0, candidates - 1)];
    e.ref = prior.ref;
    if (e.account == prior.account && e.amount == prior.amount) e.amount = e.amount % 100'000 + 1;
    ++plan->duplicates;
    return e;
  }
  e.ref = rng_.reference();
  int64_t points = e.amount / 100;
  balances_[e.account - 1] += points;
  plan->issued += points;
  ++plan->accepted;
  earned_.push_back({e.ref, e.account, e.amount});
  return e;
}

Event Generator::redeem(Plan* plan) {
  Event e{};
  e.kind = EventKind::kRedeem;
  e.program = kProgramId;
  e.account = chooser_.next(rng_);
  e.amount = static_cast<int64_t>(rng_.between(1, 1000));
  e.ref = rng_.reference();
  int64_t& balance = balances_[e.account - 1];
  if (balance >= e.amount) {
    balance -= e.amount;
    plan->redeemed += e.amount;
    ++plan->accepted;
  } else {
    ++plan->rejected_redeems;
  }
  return e;
}

Event Generator::balance(Plan* plan) {
  Event e{};
  e.kind = EventKind::kBalance;
  e.program = kProgramId;
  e.account = chooser_.next(rng_);
  ++plan->reads;
  return e;
}

Plan Generator::next(uint64_t count) {
  Plan plan;
  plan.events.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    switch (mix_) {
      case Mix::kEarn: plan.events.push_back(earn(&plan)); break;
      case Mix::kRedeem: plan.events.push_back(redeem(&plan)); break;
      case Mix::kLoyalty: {
        uint64_t pick = rng_.between(1, 100);  // 80% earn, 15% redeem, 5% balance
        if (pick <= 80) plan.events.push_back(earn(&plan));
        else if (pick <= 95) plan.events.push_back(redeem(&plan));
        else plan.events.push_back(balance(&plan));
        break;
      }
    }
  }
  return plan;
}

}  // namespace tally::bench
