// Tiers over time on one shard (docs/programs.md "Tiers over time"): qualification over a calendar
// year or a rolling window of months, upgrade at once with its bonus, downgrade at the review after
// the grace days, refunds, late purchases, replay and checkpoints.
//
// Expected values are worked out by hand from the documented rules (1 point per 100 cents, every
// tier multiplier x1 so points are easy to follow, dates from the civil calendar), never copied
// from a run. Every test ends with the ledger invariant (TearDown).
#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/shard.h"
#include "tests/shard_harness.h"

namespace tally {
namespace {

int64_t day(int y, unsigned m, unsigned d) { return days_from_civil(y, m, d); }
int64_t at(int y, unsigned m, unsigned d, int hour = 12) { return day(y, m, d) * kMsPerDay + hour * 3'600'000LL; }

// bronze 0, silver 1000 (bonus 100), gold 5000 (bonus 500), platinum 20000; all x1.
Program tier_program(TierPeriod period, uint32_t months, uint32_t grace_days) {
  Program p = tally::testing::small_program();
  p.tier_count = default_program().tier_count;
  p.signup_bonus_points = 50;
  for (size_t i = 0; i < p.tier_count; ++i) p.tiers[i].multiplier_permille = 1000;
  p.tiers[1].bonus_points = 100;
  p.tiers[2].bonus_points = 500;
  p.tier_policy.period = period;
  p.tier_policy.window_months = months;
  p.tier_policy.grace_days = grace_days;
  return p;
}

class TiersTest : public ::testing::Test {
 protected:
  TiersTest() { now_ = at(2026, 3, 1); }
  void use(const Program& p) { h_.use(p); }
  void TearDown() override { h_.expect_invariant(); }
  std::vector<Effect> apply_all(Event e) { return h_.apply(e); }
  static Event make(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
    return tally::testing::ShardHarness::make(kind, account, id, amount);
  }
  std::vector<Effect> enroll(uint64_t a) { return apply_all(make(EventKind::kEnroll, a, "enroll-" + std::to_string(a))); }
  // Every effect of a purchase of `points` points (100 cents each).
  std::vector<Effect> earn(uint64_t a, std::string_view id, int64_t points, int64_t business_time_ms = 0) {
    Event e = make(EventKind::kEarn, a, id, points * 100);
    e.business_time_ms = business_time_ms;
    return apply_all(e);
  }
  std::vector<Effect> refund(uint64_t a, std::string_view id, std::string_view order) {
    Event e = make(EventKind::kReverse, a, id);
    e.target = reference_from_string(order);
    return apply_all(e);
  }
  std::vector<Effect> read(uint64_t a) { return apply_all(make(EventKind::kBalance, a, "")); }
  Statement statement(uint64_t a) { return h_.statement(a); }
  // The tier effects among `effects` (upgrades, and reviews that changed the tier or the window's points).
  static std::vector<Effect> tier_changes(const std::vector<Effect>& effects) {
    std::vector<Effect> t;
    for (const Effect& f : effects)
      if (f.event.kind == EventKind::kTier) t.push_back(f);
    return t;
  }
  // Their tiers.
  static std::vector<int> tiers(const std::vector<Effect>& effects) {
    std::vector<int> t;
    for (const Effect& f : tier_changes(effects)) t.push_back(f.event.code);
    return t;
  }

  tally::testing::ShardHarness h_;
  int64_t& now_ = h_.now();
};

TEST_F(TiersTest, AnUpgradeHappensWithThePurchaseThatReachesTheThresholdAndCreditsItsBonus) {
  use(tier_program(TierPeriod::kCalendarYear, 12, 30));
  enroll(1);
  std::vector<Effect> r = earn(1, "o1", 999);
  ASSERT_EQ(r.size(), 1u) << "999 qualifying points: still bronze, no tier effect";
  EXPECT_EQ(r[0].state.tier, 0);
  r = earn(1, "o2", 1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].event.kind, EventKind::kEarn);
  EXPECT_EQ(r[0].state.tier, 1) << "the purchase reaching 1000 is already silver";
  EXPECT_EQ(r[1].event.kind, EventKind::kTier);
  EXPECT_EQ(r[1].event.code, 1);
  EXPECT_EQ(r[1].points, 100);
  EXPECT_EQ(r[1].state.available, 50 + 1000 + 100);
  EXPECT_EQ(r[1].state.qualifying, 1000) << "a bonus does not qualify";
  // Straight from silver past gold: gold's bonus once.
  r = earn(1, "o3", 4000);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].event.code, 2);
  EXPECT_EQ(r[1].points, 500);
  EXPECT_EQ(r[1].state.lifetime_earned, 50 + 5000 + 100 + 500);
}

TEST_F(TiersTest, ATierReachedInAYearIsKeptThroughTheNextAndLostAfterTheGraceDays) {
  use(tier_program(TierPeriod::kCalendarYear, 12, 30));
  enroll(1);
  earn(1, "o1", 5000);  // 2026: gold
  now_ = at(2027, 1, 15);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 2u) << "the review of 2026, then the read";
  EXPECT_EQ(r[0].event.kind, EventKind::kTier);
  EXPECT_EQ(r[0].event.code, 2) << "2026's points keep gold through 2027";
  EXPECT_EQ(r[0].state.qualifying, 0) << "a new year qualifies from zero";
  EXPECT_EQ(r[1].state.tier, 2);
  now_ = at(2027, 6, 1);
  earn(1, "o2", 1500);  // 2027 qualifies for silver only
  EXPECT_EQ(format_day(statement(1).tier_until_day), "2028-01-30") << "gold until the grace days of 2028 end";
  // 2028-01-01 + 30 grace days: gold through 2028-01-30, silver from 2028-01-31.
  now_ = at(2028, 1, 30, 23);
  EXPECT_EQ(tiers(read(1)), std::vector<int>{2}) << "the review of 2027 (qualifying back to 0), still gold";
  EXPECT_EQ(statement(1).state.tier, 2);
  now_ = at(2028, 1, 31, 0);
  r = tier_changes(read(1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.code, 1);
  EXPECT_EQ(r[0].points, 0) << "a downgrade credits nothing";
  EXPECT_EQ(r[0].state.tier, 1);
  // Nothing in 2028: silver (earned by 2027) through 2028, then bronze after 2029's grace days.
  now_ = at(2029, 1, 30);
  EXPECT_TRUE(tier_changes(read(1)).empty()) << "the review of 2028 changes nothing shown: no effect";
  now_ = at(2029, 2, 1);
  r = tier_changes(read(1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.code, 0);
}

TEST_F(TiersTest, ARollingWindowDropsEachMonthAsItLeaves) {
  use(tier_program(TierPeriod::kRollingMonths, 3, 0));
  now_ = at(2026, 1, 10);
  enroll(1);
  earn(1, "jan", 600);
  now_ = at(2026, 2, 10);
  std::vector<Effect> r = earn(1, "feb", 500);
  ASSERT_EQ(tier_changes(r).size(), 1u);
  EXPECT_EQ(r.back().state.tier, 1) << "1100 points over January and February: silver";
  // April: January leaves the window (500 left), but the window that closed with March (1100)
  // keeps silver through April.
  now_ = at(2026, 4, 1, 0);
  r = read(1);
  EXPECT_EQ(tiers(r), std::vector<int>{1});
  EXPECT_EQ(r.back().state.qualifying, 500);
  EXPECT_EQ(r.back().state.tier, 1);
  EXPECT_EQ(format_day(statement(1).tier_until_day), "2026-04-30");
  // May: the window that closed with April (February to April: 500) is bronze; no grace.
  now_ = at(2026, 4, 30, 23);
  EXPECT_TRUE(tier_changes(read(1)).empty());
  now_ = at(2026, 5, 1, 0);
  r = tier_changes(read(1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.code, 0);
  EXPECT_EQ(r[0].state.qualifying, 0);
}

TEST_F(TiersTest, ARefundTakesBackQualificationButTheTierStaysUntilTheReview) {
  use(tier_program(TierPeriod::kCalendarYear, 12, 0));
  enroll(1);
  earn(1, "o1", 1200);  // silver
  std::vector<Effect> r = refund(1, "x1", "o1");
  ASSERT_EQ(r.back().result, Result::kOk);
  EXPECT_EQ(r.back().state.qualifying, 0);
  EXPECT_EQ(r.back().state.tier, 1) << "no downgrade in the middle of a period";
  EXPECT_TRUE(tier_changes(r).empty());
  // The review at the start of 2027 looks at the points 2026 ended with: none.
  now_ = at(2027, 1, 1, 0);
  r = tier_changes(read(1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.code, 0);
}

TEST_F(TiersTest, ARefundOfAPurchaseWhoseMonthHasLeftTheWindowTakesNoQualification) {
  use(tier_program(TierPeriod::kRollingMonths, 2, 0));
  now_ = at(2026, 1, 5);
  enroll(1);
  earn(1, "jan", 300);
  now_ = at(2026, 2, 5);
  earn(1, "feb", 400);
  now_ = at(2026, 3, 5);  // January has left: 400 qualify
  std::vector<Effect> r = refund(1, "x-jan", "jan");
  ASSERT_EQ(r.back().result, Result::kOk);
  EXPECT_EQ(r.back().points, 300) << "the points are clawed back all the same";
  EXPECT_EQ(r.back().state.qualifying, 400);
  r = refund(1, "x-feb", "feb");
  EXPECT_EQ(r.back().state.qualifying, 0);
}

TEST_F(TiersTest, ALatePurchaseQualifiesInTheMonthItIsDatedBy) {
  use(tier_program(TierPeriod::kRollingMonths, 3, 0));
  now_ = at(2026, 1, 5);
  enroll(1);
  now_ = at(2026, 3, 5);
  std::vector<Effect> r = earn(1, "late", 1000, at(2026, 1, 20));  // an offline till's January sale
  EXPECT_EQ(r.back().state.tier, 1);
  // January leaves the window on April 1 (qualifying 0) but the window closed with March keeps
  // silver through April; on May 1 it is gone. Dated by its arrival (March) it would last to June.
  now_ = at(2026, 4, 2);
  r = read(1);
  EXPECT_EQ(r.back().state.qualifying, 0);
  EXPECT_EQ(r.back().state.tier, 1);
  now_ = at(2026, 5, 1);
  ASSERT_EQ(tier_changes(read(1)).size(), 1u);

  Program by_arrival = tier_program(TierPeriod::kRollingMonths, 3, 0);
  by_arrival.lots.date_by_purchase = false;
  use(by_arrival);
  now_ = at(2026, 1, 5);
  enroll(1);
  now_ = at(2026, 3, 5);
  earn(1, "late", 1000, at(2026, 1, 20));
  now_ = at(2026, 6, 1);
  EXPECT_EQ(tiers(read(1)), std::vector<int>{1}) << "March's points leave, but keep silver through June";
  EXPECT_EQ(statement(1).tier_until_day, day(2026, 6, 30));
  now_ = at(2026, 7, 1);
  ASSERT_EQ(tier_changes(read(1)).size(), 1u);
}

TEST_F(TiersTest, AMemberNobodyTouchesIsDowngradedByTheSweep) {
  use(tier_program(TierPeriod::kCalendarYear, 12, 0));
  for (uint64_t a = 1; a <= 20; ++a) {
    enroll(a);
    earn(a, "o" + std::to_string(a), 1000 + 100 * a);
  }
  now_ = at(2028, 1, 2);  // 2027 earned nothing: everyone falls to bronze
  Event tick{};
  tick.kind = EventKind::kTick;
  size_t downgrades = 0;
  for (const Effect& f : apply_all(tick)) downgrades += f.event.kind == EventKind::kTier && f.event.code == 0;
  EXPECT_EQ(downgrades, 20u);
}

TEST_F(TiersTest, AMemberAbsentForYearsIsReviewedAsIfEveryPeriodHadBeenClosed) {
  use(tier_program(TierPeriod::kRollingMonths, 12, 10));
  enroll(1);
  earn(1, "o1", 25'000);  // platinum
  now_ = at(2031, 7, 4);
  std::vector<Effect> r = tier_changes(read(1));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.code, 0);
  EXPECT_EQ(r[0].state.qualifying, 0);
}

TEST_F(TiersTest, ALifetimeProgramWithoutBonusesHasNoTierEffects) {
  Program p = tier_program(TierPeriod::kLifetime, 12, 0);
  p.tiers[1].bonus_points = 0;
  p.tiers[2].bonus_points = 0;
  use(p);
  enroll(1);
  std::vector<Effect> r = earn(1, "o1", 6000);
  ASSERT_EQ(r.size(), 1u) << "as before tier windows: the earn shows the tier";
  EXPECT_EQ(r[0].state.tier, 2);
  now_ = at(2036, 1, 1);
  r = read(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state.tier, 2) << "lifetime tiers are kept";
  EXPECT_EQ(statement(1).tier_until_day, 0);
}

TEST_F(TiersTest, ValidationRefusesWindowsAndGracesThatMakeNoSense) {
  Program p = tier_program(TierPeriod::kRollingMonths, 13, 0);
  EXPECT_NE(validate(p), "");
  p = tier_program(TierPeriod::kRollingMonths, 12, 28);
  EXPECT_NE(validate(p), "");
  p = tier_program(TierPeriod::kCalendarYear, 12, 365);
  EXPECT_NE(validate(p), "");
  p = tier_program(TierPeriod::kLifetime, 12, 5);
  EXPECT_NE(validate(p), "");
  p = tier_program(TierPeriod::kCalendarYear, 12, 0);
  p.tiers[0].bonus_points = 10;
  EXPECT_NE(validate(p), "");
}

// Recovery and followers: the logged effects re-applied (Shard::apply_logged) give the same effects,
// tier reviews and upgrade bonuses included; and a checkpoint carries the tier records.
TEST_F(TiersTest, ReplayAndCheckpointsReproduceEveryTierChange) {
  use(tier_program(TierPeriod::kRollingMonths, 3, 5));
  tally::testing::ShardHarness::Checkpoint cut;
  for (int d = 0; d < 400; d += 3) {
    now_ = at(2026, 1, 1) + d * kMsPerDay;
    for (uint64_t a = 1; a <= 8; ++a) {
      if (d == 0) enroll(a);
      const std::string id = std::to_string(a) + "-" + std::to_string(d);
      if ((a + d) % 5 == 0 && (d < 100 || a % 2 == 0)) earn(a, "e" + id, 300 * a);
      if ((a + d) % 11 == 0 && d > 6) refund(a, "x" + id, "e" + std::to_string(a) + "-" + std::to_string(d - 6));
      if ((a + d) % 4 == 0) read(a);
    }
    if (d == 201) cut = h_.checkpoint();
  }
  const std::vector<Effect> logged = h_.logged();
  size_t changes = 0, bonuses = 0;
  for (const Effect& f : logged) {
    changes += f.event.kind == EventKind::kTier;
    bonuses += f.event.kind == EventKind::kTier && f.points > 0;
  }
  ASSERT_GT(changes, 10u);
  ASSERT_GT(bonuses, 3u);
  ASSERT_LT(bonuses, changes) << "the workload must downgrade as well as upgrade";

  h_.expect_replay_matches();
  // From the cut on, the log replayed onto the checkpoint ends where the full replay does.
  std::unique_ptr<FraudSet> fraud;
  std::unique_ptr<Shard> replica = h_.fresh_shard(&fraud);
  h_.replay_onto(*replica);
  std::unique_ptr<FraudSet> fraud2;
  std::unique_ptr<Shard> restored = h_.restore(cut, &fraud2);
  ASSERT_GT(restored->last_seq(), 0u);
  h_.replay_onto(*restored, restored->last_seq());
  EXPECT_EQ(restored->last_seq(), replica->last_seq());
  for (uint64_t a = 1; a <= 8; ++a) {
    Statement x, y;
    ASSERT_TRUE(replica->statement(h_.program().id, a, &x));
    ASSERT_TRUE(restored->statement(h_.program().id, a, &y));
    EXPECT_EQ(x.state.tier, y.state.tier) << a;
    EXPECT_EQ(x.state.qualifying, y.state.qualifying) << a;
    EXPECT_EQ(x.tier_until_day, y.tier_until_day) << a;
    EXPECT_EQ(x.state.available, y.state.available) << a;
  }
}

}  // namespace
}  // namespace tally
