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

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

// Card 1: 5 coffees of at least 3.00 complete it for 200 points. Card 2: any 3 purchases, 20 points.
Program stamp_program() {
  Program p = default_program();
  p.accounts_max = 1000;
  p.orders_max = 10'000;
  p.holds_open_max = 10;
  p.events_per_minute_max = 0;
  p.points_per_day_max = 0;
  p.tier_count = 1;
  p.stamp_card_count = 2;
  p.stamp_cards[0] = {"coffee", 5, 300, 200};
  p.stamp_cards[1] = {"visits", 3, 0, 20};
  return p;
}

class StampsTest : public ::testing::Test {
 protected:
  void SetUp() override { use(stamp_program()); }
  void use(const Program& p) {
    program_ = p;
    ASSERT_EQ(validate(program_), "");
    fraud_ = std::make_unique<FraudSet>(1 << 16, 2);
    shard_ = std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), fraud_.get());
    log_.clear();
  }
  void TearDown() override {
    const ProgramStats& st = *shard_->stats(program_.id);
    int64_t held = 0;
    shard_->for_each_account(program_.id, [&](uint64_t, const AccountState& a) { held += a.available + a.held + a.pending; });
    EXPECT_EQ(st.expected_balances(), held) << "the counters and the accounts disagree";
  }
  std::vector<Effect> apply_all(Event e) {
    e.program = program_.id;
    out_.clear();
    now_ += 60'000;
    shard_->apply(e, now_, &out_);
    log_.insert(log_.end(), out_.effects.begin(), out_.effects.end());
    return out_.effects;
  }
  static Event make(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
    Event e{};
    e.kind = kind;
    e.account = account;
    e.amount = amount;
    e.ref = reference_from_string(id);
    return e;
  }
  std::vector<Effect> enroll(uint64_t a) { return apply_all(make(EventKind::kEnroll, a, "enroll-" + std::to_string(a))); }
  std::vector<Effect> buy(uint64_t a, std::string_view id, int64_t cents) { return apply_all(make(EventKind::kEarn, a, id, cents)); }
  std::vector<Effect> refund(uint64_t a, std::string_view id, std::string_view order, int64_t cents = 0) {
    Event e = make(EventKind::kReverse, a, id, cents);
    e.target = reference_from_string(order);
    return apply_all(e);
  }
  std::array<int16_t, kStampCardsMax> stamps(uint64_t a) {
    Statement s;
    EXPECT_TRUE(shard_->statement(program_.id, a, &s));
    return s.stamps;
  }
  static std::vector<int> completed(const std::vector<Effect>& effects) {
    std::vector<int> cards;
    for (const Effect& f : effects)
      if (f.event.kind == EventKind::kStampCard) cards.push_back(f.event.code);
    return cards;
  }

  Program program_;
  std::unique_ptr<FraudSet> fraud_;
  std::unique_ptr<Shard> shard_;
  ApplyOutput out_;
  std::vector<Effect> log_;
  int64_t now_ = kT0;
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
  std::vector<uint8_t> state, slices;
  for (int round = 0; round < 60; ++round) {
    for (uint64_t a = 1; a <= 6; ++a) {
      if (round == 0) enroll(a);
      const std::string id = std::to_string(a) + "-" + std::to_string(round);
      buy(a, "o" + id, 100 * static_cast<int64_t>((a * 7 + round) % 6));  // 0 is refused: no stamp
      if ((a + round) % 7 == 0 && round > 1) refund(a, "x" + id, "o" + std::to_string(a) + "-" + std::to_string(round - 1));
    }
    if (round == 30) {
      state = shard_->begin_checkpoint();
      while (!shard_->checkpoint_step(1000)) {
      }
      slices = shard_->checkpoint_out();
    }
  }
  size_t rewards = 0;
  for (const Effect& f : log_) rewards += f.event.kind == EventKind::kStampCard;
  ASSERT_GT(rewards, 20u);

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
    ASSERT_EQ(replayed[i].flags, log_[i].flags) << i;
  }
  FraudSet fraud2(1 << 16, 2);
  Shard restored(0, std::span<const Program>(&program_, 1), &fraud2);
  restored.restore_state(state);
  std::span<const uint8_t> in(slices);
  SliceRecord r;
  while (next_slice_record(&in, &r)) restored.restore_slice(r.program, r.table, r.slice, r.bytes);
  restored.finish_restore();
  for (const Effect& f : log_) {
    if (f.seq <= restored.last_seq()) continue;
    out.clear();
    restored.apply_logged(f, &out);
  }
  for (uint64_t a = 1; a <= 6; ++a) {
    Statement x, y;
    ASSERT_TRUE(shard_->statement(program_.id, a, &x));
    ASSERT_TRUE(restored.statement(program_.id, a, &y));
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
