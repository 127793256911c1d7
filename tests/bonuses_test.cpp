// Purchase bonuses on one shard (docs/programs.md "Purchase bonuses"): the first purchase's bonus
// once, the comeback bonus after the program's days away (on the boundary), replay.
//
// Expected values are worked out by hand (1 point per 100 cents, 50 points at sign-up).
#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/shard.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

Program bonus_program() {
  Program p = default_program();
  p.accounts_max = 1000;
  p.orders_max = 10'000;
  p.holds_open_max = 10;
  p.events_per_minute_max = 0;
  p.points_per_day_max = 0;
  p.tier_count = 1;
  p.first_purchase_bonus_points = 100;
  p.comeback_bonus_points = 200;
  p.comeback_days = 90;
  return p;
}

class BonusesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    program_ = bonus_program();
    ASSERT_EQ(validate(program_), "");
    shard_ = std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), &fraud_);
  }
  void TearDown() override {
    const ProgramStats& st = *shard_->stats(program_.id);
    int64_t held = 0;
    shard_->for_each_account(program_.id, [&](uint64_t, const AccountState& a) { held += a.available + a.held + a.pending; });
    EXPECT_EQ(st.expected_balances(), held) << "the counters and the accounts disagree";
  }
  std::vector<Effect> apply_all(EventKind kind, uint64_t a, std::string_view id, int64_t amount = 0, uint16_t code = 0) {
    Event e{};
    e.kind = kind;
    e.program = program_.id;
    e.account = a;
    e.amount = amount;
    e.code = code;
    e.ref = reference_from_string(id);
    ApplyOutput out;
    shard_->apply(e, now_, &out);
    log_.insert(log_.end(), out.effects.begin(), out.effects.end());
    return out.effects;
  }
  std::vector<Effect> buy(uint64_t a, std::string_view id, int64_t cents) { return apply_all(EventKind::kEarn, a, id, cents); }
  static std::vector<std::pair<int, int64_t>> bonuses(const std::vector<Effect>& effects) {
    std::vector<std::pair<int, int64_t>> b;
    for (const Effect& f : effects)
      if (f.event.kind == EventKind::kBonus) b.emplace_back(f.event.code, f.points);
    return b;
  }
  void at_day(int64_t d) { now_ = kT0 + d * kMsPerDay + 3'600'000; }

  Program program_;
  FraudSet fraud_{1 << 16, 2};
  std::unique_ptr<Shard> shard_;
  std::vector<Effect> log_;
  int64_t now_ = kT0;
};

using Bonus = std::vector<std::pair<int, int64_t>>;

TEST_F(BonusesTest, TheFirstPurchaseEarnsItsBonusOnce) {
  apply_all(EventKind::kEnroll, 1, "enroll-1");
  EXPECT_TRUE(bonuses(apply_all(EventKind::kAward, 1, "review-1", 0, static_cast<uint16_t>(ActionKind::kReview))).empty())
      << "an award is not a purchase";
  EXPECT_TRUE(bonuses(buy(1, "zero", 0)).empty()) << "a refused purchase does not count";
  std::vector<Effect> r = buy(1, "o1", 1000);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].state.flags & kAccountPurchased);
  EXPECT_EQ(bonuses(r), (Bonus{{1, 100}}));
  EXPECT_EQ(r[1].state.available, 50 + 25 + 10 + 100) << "sign-up, review, purchase, bonus";
  EXPECT_EQ(r[1].state.qualifying, 10) << "a bonus does not qualify";
  EXPECT_TRUE(bonuses(buy(1, "o2", 1000)).empty());
  EXPECT_TRUE(bonuses(buy(1, "o1", 1000)).empty()) << "a retry of the first purchase is a replay";
}

TEST_F(BonusesTest, APurchaseAfterTheComebackPeriodEarnsTheComebackBonus) {
  apply_all(EventKind::kEnroll, 1, "enroll-1");
  at_day(10);
  EXPECT_EQ(bonuses(buy(1, "d10", 1000)), (Bonus{{1, 100}})) << "ten days after enrolling: first purchase only";
  at_day(100);  // 90 days without activity: exactly the period
  EXPECT_EQ(bonuses(buy(1, "d100", 1000)), (Bonus{{2, 200}}));
  at_day(189);  // 89 days
  EXPECT_TRUE(bonuses(buy(1, "d189", 1000)).empty());
  at_day(400);
  EXPECT_EQ(bonuses(apply_all(EventKind::kEnroll, 2, "enroll-2")), Bonus{});
  at_day(490);
  EXPECT_EQ(bonuses(buy(2, "late-first", 1000)), (Bonus{{1, 100}, {2, 200}}))
      << "90 days after enrolling, the first purchase is a comeback too";
}

TEST_F(BonusesTest, ReplayReproducesEveryBonus) {
  for (int d = 0; d < 400; d += 7) {
    at_day(d);
    for (uint64_t a = 1; a <= 5; ++a) {
      if (d == 0) apply_all(EventKind::kEnroll, a, "enroll-" + std::to_string(a));
      if ((a * 3 + static_cast<uint64_t>(d)) % (11 * a) < 3) buy(a, std::to_string(a) + "-" + std::to_string(d), 500 * a);
    }
  }
  size_t n = 0;
  for (const Effect& f : log_) n += f.event.kind == EventKind::kBonus;
  ASSERT_GT(n, 7u);
  FraudSet fraud(1 << 16, 2);
  Shard replica(0, std::span<const Program>(&program_, 1), &fraud);
  std::vector<Effect> replayed;
  ApplyOutput out;
  for (const Effect& f : log_) {
    if (!replayed.empty() && replayed.back().seq >= f.seq) continue;  // produced with an earlier one
    out.clear();
    replica.apply_logged(f, &out);
    replayed.insert(replayed.end(), out.effects.begin(), out.effects.end());
  }
  ASSERT_EQ(replayed.size(), log_.size());
  for (size_t i = 0; i < log_.size(); ++i) {
    ASSERT_EQ(replayed[i].event.kind, log_[i].event.kind) << i;
    ASSERT_EQ(replayed[i].event.code, log_[i].event.code) << i;
    ASSERT_EQ(replayed[i].points, log_[i].points) << i;
    ASSERT_EQ(replayed[i].state.flags, log_[i].state.flags) << i;
  }
}

}  // namespace
}  // namespace tally
