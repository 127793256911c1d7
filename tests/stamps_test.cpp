// Stamp cards on one shard (docs/programs.md "Stamp cards"): one stamp per qualifying purchase,
// deduplicated by order like points, the card completing with its reward, refunds taking stamps
// back, replay and checkpoints.
//
// Expected values are worked out by hand from the documented rules (1 point per 100 cents, a
// 50-point sign-up bonus), never copied from a run. Every test ends with the ledger invariant.
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

// Card 1: 5 coffees of at least 3.00 complete it for 200 points. Card 2: any 3 purchases, 20 points.
Program stamp_program() {
  Program p = tally::testing::small_program();
  p.stamp_card_count = 2;
  p.stamp_cards[0] = {"coffee", 5, 300, 200};
  p.stamp_cards[1] = {"visits", 3, 0, 20};
  return p;
}

class StampsTest : public ::testing::Test {
 protected:
  StampsTest() { now_ = kT0; }
  void SetUp() override { h_.use(stamp_program()); }
  void TearDown() override { h_.expect_invariant(); }
  // Each event a minute after the one before.
  std::vector<Effect> apply_all(Event e) {
    now_ += 60'000;
    return h_.apply(e);
  }
  static Event make(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
    return tally::testing::ShardHarness::make(kind, account, id, amount);
  }
  std::vector<Effect> enroll(uint64_t a) { return apply_all(make(EventKind::kEnroll, a, "enroll-" + std::to_string(a))); }
  std::vector<Effect> buy(uint64_t a, std::string_view id, int64_t cents) { return apply_all(make(EventKind::kEarn, a, id, cents)); }
  std::vector<Effect> refund(uint64_t a, std::string_view id, std::string_view order, int64_t cents = 0) {
    Event e = make(EventKind::kReverse, a, id, cents);
    e.target = reference_from_string(order);
    return apply_all(e);
  }
  std::array<int16_t, kStampCardsMax> stamps(uint64_t a) { return h_.statement(a).stamps; }
  static std::vector<int> completed(const std::vector<Effect>& effects) {
    std::vector<int> cards;
    for (const Effect& f : effects)
      if (f.event.kind == EventKind::kStampCard) cards.push_back(f.event.code);
    return cards;
  }

  tally::testing::ShardHarness h_;
  int64_t& now_ = h_.now();
};

TEST_F(StampsTest, EachQualifyingPurchaseStampsOnceAndTheLastStampCompletesTheCard) {
  enroll(1);
  for (int i = 1; i <= 4; ++i) {
    std::vector<Effect> r = buy(1, "c" + std::to_string(i), 350);
    ASSERT_EQ(r.back().result, Result::kOk);
    EXPECT_TRUE(r[0].flags & kEffectStamped);
    EXPECT_EQ(completed(r), (i == 3 ? std::vector<int>{2} : std::vector<int>{})) << "purchase " << i;
  }
  EXPECT_EQ(stamps(1)[0], 4);
  EXPECT_EQ(stamps(1)[1], 1) << "the visits card completed at the third purchase and began again";
  std::vector<Effect> r = buy(1, "c5", 350);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].event.kind, EventKind::kStampCard);
  EXPECT_EQ(r[1].event.code, 1);
  EXPECT_EQ(r[1].points, 200);
  // 50 bonus + 5 x 3 points + 20 (visits card) + 200 (coffee card).
  EXPECT_EQ(r[1].state.available, 50 + 15 + 20 + 200);
  EXPECT_EQ(r[1].state.qualifying, 15) << "card rewards do not qualify for tiers";
  EXPECT_EQ(stamps(1)[0], 0) << "a completed card starts again";
}

TEST_F(StampsTest, APurchaseBelowACardsMinimumDoesNotStampIt) {
  enroll(1);
  std::vector<Effect> r = buy(1, "small", 299);
  EXPECT_TRUE(r[0].flags & kEffectStamped) << "the visits card has no minimum";
  EXPECT_EQ(stamps(1)[0], 0);
  EXPECT_EQ(stamps(1)[1], 1);
  r = buy(1, "exact", 300);
  EXPECT_EQ(stamps(1)[0], 1) << "the minimum itself qualifies";
}

TEST_F(StampsTest, OneReceiptCannotStampTwice) {
  enroll(1);
  buy(1, "receipt-1", 500);
  std::vector<Effect> again = buy(1, "receipt-1", 500);  // the till retries
  EXPECT_TRUE(again[0].flags & kEffectReplay);
  EXPECT_TRUE(again[0].flags & kEffectStamped) << "the retry is answered as the original was";
  std::vector<Effect> reused = buy(1, "receipt-1", 900);  // the same receipt number, another amount
  EXPECT_EQ(reused[0].result, Result::kDuplicateOrder);
  EXPECT_FALSE(reused[0].flags & kEffectStamped);
  EXPECT_EQ(stamps(1)[0], 1);
  EXPECT_EQ(stamps(1)[1], 1);
}

TEST_F(StampsTest, ARefundTakesTheStampBackWhenWhatIsLeftNoLongerQualifies) {
  enroll(1);
  buy(1, "o1", 1000);
  std::vector<Effect> r = refund(1, "x1", "o1", 600);  // 4.00 left: still at least 3.00
  ASSERT_EQ(r.back().result, Result::kOk);
  EXPECT_FALSE(r.back().flags & kEffectStamped);
  EXPECT_EQ(stamps(1)[0], 1);
  r = refund(1, "x2", "o1", 200);  // 2.00 left: no longer a coffee, still a visit
  EXPECT_TRUE(r.back().flags & kEffectStamped);
  EXPECT_EQ(stamps(1)[0], 0);
  EXPECT_EQ(stamps(1)[1], 1);
  r = refund(1, "x3", "o1");  // the rest: no visit either
  EXPECT_EQ(stamps(1)[1], 0);
}

TEST_F(StampsTest, RefundingThePurchaseThatCompletedACardLeavesAStampOwed) {
  enroll(1);
  for (int i = 1; i <= 3; ++i) buy(1, "v" + std::to_string(i), 100);  // the visits card completes: +20
  refund(1, "x3", "v3");
  EXPECT_EQ(stamps(1)[1], -1) << "owed: the reward stays, the next purchase pays the stamp back";
  buy(1, "v4", 100);
  EXPECT_EQ(stamps(1)[1], 0);
  std::vector<Effect> r;
  for (int i = 5; i <= 7; ++i) r = buy(1, "v" + std::to_string(i), 100);
  EXPECT_EQ(completed(r), std::vector<int>{2}) << "three more purchases complete it again";
}

TEST_F(StampsTest, ReplayAndCheckpointsReproduceEveryStampAndReward) {
  tally::testing::ShardHarness::Checkpoint cut;
  for (int round = 0; round < 60; ++round) {
    for (uint64_t a = 1; a <= 6; ++a) {
      if (round == 0) enroll(a);
      const std::string id = std::to_string(a) + "-" + std::to_string(round);
      buy(a, "o" + id, 100 * static_cast<int64_t>((a * 7 + round) % 6));  // 0 is refused: no stamp
      if ((a + round) % 7 == 0 && round > 1) refund(a, "x" + id, "o" + std::to_string(a) + "-" + std::to_string(round - 1));
    }
    if (round == 30) cut = h_.checkpoint();
  }
  const std::vector<Effect>& log = h_.log();
  size_t rewards = 0;
  for (const Effect& f : log) rewards += f.event.kind == EventKind::kStampCard;
  ASSERT_GT(rewards, 20u);

  h_.expect_replay_matches();
  std::unique_ptr<FraudSet> fraud2;
  std::unique_ptr<Shard> restored = h_.restore(cut, &fraud2);
  h_.replay_onto(*restored, restored->last_seq());
  for (uint64_t a = 1; a <= 6; ++a) {
    Statement x = h_.statement(a), y;
    ASSERT_TRUE(restored->statement(h_.program().id, a, &y));
    EXPECT_EQ(x.stamps, y.stamps) << a;
    EXPECT_EQ(x.state.available, y.state.available) << a;
  }
}

TEST_F(StampsTest, ValidationRefusesCardsThatMakeNoSense) {
  Program p = stamp_program();
  p.stamp_cards[0].stamps = 1;
  EXPECT_NE(validate(p), "");
  p = stamp_program();
  p.stamp_cards[1].stamps = 101;
  EXPECT_NE(validate(p), "");
  p = stamp_program();
  p.stamp_cards[0].min_purchase_minor = -1;
  EXPECT_NE(validate(p), "");
  p = stamp_program();
  p.stamp_card_count = 5;
  EXPECT_NE(validate(p), "");
}

}  // namespace
}  // namespace tally
