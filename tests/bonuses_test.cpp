// Purchase bonuses and campaigns on one shard (docs/programs.md "Purchase bonuses", "Campaigns"):
// the first purchase's bonus once, the comeback bonus after the program's days away (on the
// boundary), a campaign's multiplier on the days it covers and on refunds, replay.
//
// Expected values are worked out by hand (1 point per 100 cents, 50 points at sign-up).
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

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

Program bonus_program() {
  Program p = tally::testing::small_program();
  p.first_purchase_bonus_points = 100;
  p.comeback_bonus_points = 200;
  p.comeback_days = 90;
  return p;
}

class BonusesTest : public ::testing::Test {
 protected:
  BonusesTest() { now_ = kT0; }
  void SetUp() override { h_.use(bonus_program()); }
  void TearDown() override { h_.expect_invariant(); }
  std::vector<Effect> apply_all(EventKind kind, uint64_t a, std::string_view id, int64_t amount = 0, uint16_t code = 0) {
    Event e = tally::testing::ShardHarness::make(kind, a, id, amount);
    e.code = code;
    return h_.apply(e);
  }
  std::vector<Effect> buy(uint64_t a, std::string_view id, int64_t cents) { return apply_all(EventKind::kEarn, a, id, cents); }
  static std::vector<std::pair<int, int64_t>> bonuses(const std::vector<Effect>& effects) {
    std::vector<std::pair<int, int64_t>> b;
    for (const Effect& f : effects)
      if (f.event.kind == EventKind::kBonus) b.emplace_back(f.event.code, f.points);
    return b;
  }
  void at_day(int64_t d) { now_ = kT0 + d * kMsPerDay + 3'600'000; }

  tally::testing::ShardHarness h_;
  int64_t& now_ = h_.now();
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

// "Double points this weekend": purchases dated on 2026-01-10 and 2026-01-11 (local days) earn x2,
// and on 2026-01-11 a second campaign at x3 overlaps: the higher one applies.
Program campaign_program() {
  Program p = tally::testing::small_program();
  p.campaign_count = 2;
  p.campaigns[0] = {"weekend", days_from_civil(2026, 1, 10), days_from_civil(2026, 1, 11), 2000};
  p.campaigns[1] = {"sunday special", days_from_civil(2026, 1, 11), days_from_civil(2026, 1, 11), 3000};
  return p;
}

TEST_F(BonusesTest, ACampaignMultipliesPurchasesOnItsDaysOnly) {
  h_.use(campaign_program());
  apply_all(EventKind::kEnroll, 1, "enroll-1");
  auto earned = [&](std::string_view id, int64_t cents) {
    std::vector<Effect> r = buy(1, id, cents);
    return std::make_pair(r[0].points, (r[0].flags & kEffectCampaign) != 0);
  };
  at_day(8);  // 2026-01-09: the day before
  EXPECT_EQ(earned("fri", 1000), std::make_pair(int64_t{10}, false));
  now_ = days_from_civil(2026, 1, 10) * kMsPerDay;  // its first millisecond
  EXPECT_EQ(earned("sat", 1000), std::make_pair(int64_t{20}, true));
  now_ = days_from_civil(2026, 1, 12) * kMsPerDay - 1;  // the last millisecond of Sunday
  EXPECT_EQ(earned("sun", 1000), std::make_pair(int64_t{30}, true)) << "the higher of two campaigns";
  now_ += 1;  // Monday
  EXPECT_EQ(earned("mon", 1000), std::make_pair(int64_t{10}, false));
  // A till's late upload on Monday of a Saturday sale is dated by its purchase (date_by).
  Event late = tally::testing::ShardHarness::make(EventKind::kEarn, 1, "sat-offline", 1010);
  late.business_time_ms = days_from_civil(2026, 1, 10) * kMsPerDay + 3'600'000;
  std::vector<Effect> r = h_.apply(late);
  EXPECT_EQ(r[0].points, 20) << "floor(1010 x 2 / 100)";
  EXPECT_TRUE(r[0].flags & kEffectCampaign);
  // A refund claws back what the purchase earned, campaign included, pro rata.
  Event refund = tally::testing::ShardHarness::make(EventKind::kReverse, 1, "x-sat", 500);
  refund.target = reference_from_string("sat");
  EXPECT_EQ(h_.apply(refund)[0].points, 10);
}

// The largest purchase at the largest rate under every multiplier: the product needs more than
// 128 bits unless computed by parts; the answer must be an overflow refusal, not a wrapped figure.
TEST_F(BonusesTest, TheLargestPurchaseUnderEveryMultiplierIsRefusedNotWrapped) {
  Program p = campaign_program();
  p.earn_points = 1'000'000;
  p.earn_per_minor = 1;
  p.tiers[0].multiplier_permille = 100'000;
  p.membership_days = 30;
  p.membership_multiplier_permille = 100'000;
  p.campaigns[1].multiplier_permille = 100'000;
  h_.use(p);
  now_ = days_from_civil(2026, 1, 11) * kMsPerDay;
  apply_all(EventKind::kEnroll, 1, "enroll-1");
  apply_all(EventKind::kMembership, 1, "sub-1");
  std::vector<Effect> r = buy(1, "huge", kPointsMax);
  EXPECT_EQ(r[0].result, Result::kOverflow);
  r = buy(1, "small", 1);  // 1 minor unit x 10^6 x 100 x 100 x 100 = 10^12 points, exactly
  ASSERT_EQ(r[0].result, Result::kOk);
  EXPECT_EQ(r[0].points, 1'000'000'000'000);
}

TEST_F(BonusesTest, ReplayReproducesEveryBonus) {
  for (int d = 0; d < 400; d += 7) {
    at_day(d);
    for (uint64_t a = 1; a <= 5; ++a) {
      if (d == 0) apply_all(EventKind::kEnroll, a, "enroll-" + std::to_string(a));
      if ((a * 3 + static_cast<uint64_t>(d)) % (11 * a) < 3) buy(a, std::to_string(a) + "-" + std::to_string(d), 500 * a);
    }
  }
  const std::vector<Effect>& log = h_.log();
  size_t n = 0;
  for (const Effect& f : log) n += f.event.kind == EventKind::kBonus;
  ASSERT_GT(n, 7u);
  h_.expect_replay_matches();
}

}  // namespace
}  // namespace tally
