// Behaviour of each operation on one shard: what a POS, an operator or a member relies on.
//
// Map of this file:
//   1. fixture, event builders and the ledger invariant (checked after every test in TearDown)
//   2. enroll, earn (rate, rounding, tiers, caps), award
//   3. redeem, holds (capture, void, expiry), reverse, adjust, transfer, balance
//   4. limits, time, validation of the event itself
//   5. dedup on one shard, then across two shards sharing one FraudSet
//
// Expected values are written from the rules of make_program() (default_program(): 1 point per
// 100 cents, 50 points sign-up bonus, bronze x1.0 and silver x1.25 from 1'000 qualifying points,
// floor once at the end), never copied from a run of the engine.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/shard.h"

namespace tally {

// Results and kinds print by name in failure messages (found by argument-dependent lookup).
void PrintTo(Result r, std::ostream* os) { *os << to_string(r); }
void PrintTo(EventKind k, std::ostream* os) { *os << to_string(k); }

namespace {

// ---- 1. fixture -------------------------------------------------------------------------------
constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr int64_t kMsPerSecond = 1'000;
constexpr uint64_t kReferencesMax = 4'096;  // fraud set: at least one 1024-claim chunk per shard
constexpr uint16_t kReason = 1;             // any non-zero adjustment reason

Ref128 ref(std::string_view id) { return reference_from_string(id); }

// A client event; fields not named stay zero (program: the fixture's, time: the server's).
Event make_event(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
  Event e;
  e.kind = kind;
  e.account = account;
  e.amount = amount;
  if (!id.empty()) e.ref = ref(id);
  return e;
}

bool has_flag(const Effect& e, EffectFlag f) { return (e.flags & f) != 0; }

// The per-program invariant, summed over `shards`: what the counters say is outstanding,
//   issued - redeemed - expired - clawed_back + adjusted - (transfer_out - transfer_in - bounced),
// against what a scan of every account holds (available + held).
::testing::AssertionResult ledger_balances(std::initializer_list<const Shard*> shards,
                                           uint32_t program) {
  int64_t counted = 0;
  int64_t scanned = 0;
  for (const Shard* s : shards) {
    const ProgramStats* st = s->stats(program);
    if (st == nullptr) return ::testing::AssertionFailure() << "program unknown on shard " << s->index();
    int64_t in_transit = st->transfer_out - st->transfer_in - st->transfer_bounced;
    counted += st->issued - st->redeemed - st->expired - st->clawed_back + st->adjusted - in_transit;
    s->for_each_account(program,
                        [&](uint64_t, const AccountState& a) { scanned += a.available + a.held + a.pending; });
  }
  if (counted == scanned) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "counters say " << counted << " points outstanding, accounts hold " << scanned;
}

class ShardTest : public ::testing::Test {
 protected:
  ShardTest() { use(make_program()); }
  void TearDown() override { EXPECT_TRUE(ledger_balances({shard_.get()}, program_.id)); }

  static Program make_program() {
    Program p = default_program();
    p.accounts_max = 100;
    p.orders_max = 1000;
    p.holds_open_max = 10;
    p.events_per_minute_max = 0;
    return p;
  }

  // Starts over with rules `p`: a fresh fraud set and shard 0, clock back at kT0.
  void use(const Program& p) {
    shard_.reset();
    program_ = p;
    EXPECT_EQ(validate(program_), "");
    fraud_ = std::make_unique<FraudSet>(kReferencesMax, 2);
    shard_ = std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), fraud_.get());
    now_ = kT0;
  }

  // Applies `e` at `now_` on `shard` (the fixture's by default); the program is the fixture's
  // unless set. Returns the event's own effect: the last one (hold expiries come before it).
  Effect apply(Event e, Shard* shard = nullptr) {
    if (e.program == 0) e.program = program_.id;
    out_.clear();
    (shard != nullptr ? shard : shard_.get())->apply(e, now_, &out_);
    EXPECT_FALSE(out_.effects.empty()) << "no effect for " << to_string(e.kind);
    return out_.effects.empty() ? Effect{} : out_.effects.back();
  }

  Effect enroll(uint64_t account, std::string_view id) {
    return apply(make_event(EventKind::kEnroll, account, id));
  }
  Effect earn(uint64_t account, std::string_view id, int64_t cents) {
    return apply(make_event(EventKind::kEarn, account, id, cents));
  }
  Effect award(uint64_t account, std::string_view id, uint16_t code) {
    Event e = make_event(EventKind::kAward, account, id);
    e.code = code;
    return apply(e);
  }
  Effect award(uint64_t account, std::string_view id, ActionKind action) {
    return award(account, id, static_cast<uint16_t>(action));
  }
  Effect redeem(uint64_t account, std::string_view id, int64_t points) {
    return apply(make_event(EventKind::kRedeem, account, id, points));
  }
  Effect hold(uint64_t account, std::string_view id, int64_t points) {
    return apply(make_event(EventKind::kHold, account, id, points));
  }
  Effect capture(uint64_t account, std::string_view id, std::string_view hold_id, int64_t points = 0) {
    Event e = make_event(EventKind::kCapture, account, id, points);
    e.target = ref(hold_id);
    return apply(e);
  }
  Effect void_hold(uint64_t account, std::string_view id, std::string_view hold_id) {
    Event e = make_event(EventKind::kVoid, account, id);
    e.target = ref(hold_id);
    return apply(e);
  }
  Effect reverse(uint64_t account, std::string_view id, std::string_view order_id, int64_t cents = 0) {
    Event e = make_event(EventKind::kReverse, account, id, cents);
    e.target = ref(order_id);
    return apply(e);
  }
  Effect adjust(uint64_t account, std::string_view id, int64_t points, uint16_t reason = kReason) {
    Event e = make_event(EventKind::kAdjust, account, id, points);
    e.code = reason;
    return apply(e);
  }
  Effect transfer(uint64_t from, std::string_view id, uint64_t to, int64_t points) {
    Event e = make_event(EventKind::kTransfer, from, id, points);
    e.counterparty = to;
    return apply(e);
  }
  Effect balance(uint64_t account) { return apply(make_event(EventKind::kBalance, account, "")); }

  // Enrolls `account` and corrects its balance to `points` available (adjust: no qualifying).
  void member_with(uint64_t account, int64_t points) {
    ASSERT_EQ(enroll(account, "enroll-" + std::to_string(account)).result, Result::kOk);
    int64_t delta = points - program_.signup_bonus_points;
    if (delta != 0) {
      ASSERT_EQ(adjust(account, "setup-" + std::to_string(account), delta).result, Result::kOk);
    }
  }

  AccountState state(uint64_t account) const {
    AccountState s;
    EXPECT_TRUE(shard_->account(program_.id, account, &s)) << "account " << account;
    return s;
  }
  int64_t available(uint64_t account) const { return state(account).available; }
  const ProgramStats& stats() const { return *shard_->stats(program_.id); }
  int64_t bonus() const { return program_.signup_bonus_points; }
  int64_t action_points(ActionKind a) const { return program_.actions[static_cast<size_t>(a)].points; }

  Program program_;
  std::unique_ptr<FraudSet> fraud_;
  std::unique_ptr<Shard> shard_;
  ApplyOutput out_;
  int64_t now_ = kT0;  // the server time the next event is stamped with
};

// ---- 2. enroll ----------------------------------------------------------------------------------
TEST_F(ShardTest, EnrollCreditsSignUpBonusAndEarnFloorsToWholeUnits) {
  Effect en = enroll(7, "enroll-7");
  ASSERT_EQ(en.result, Result::kOk);
  EXPECT_EQ(en.points, bonus());
  EXPECT_EQ(en.state.available, bonus());
  EXPECT_EQ(en.state.lifetime_earned, bonus());
  EXPECT_EQ(en.state.qualifying, 0);  // a bonus does not count towards tiers
  EXPECT_TRUE(has_flag(en, kEffectClaimed));
  EXPECT_EQ(stats().members, 1u);
  Effect ea = earn(7, "order-1", 12'399);  // 123.99 EUR at 1 point per EUR
  ASSERT_EQ(ea.result, Result::kOk);
  EXPECT_EQ(ea.points, 12'399 * 1000 / 100 / 1000);
  EXPECT_EQ(ea.state.available, bonus() + 12'399 * 1000 / 100 / 1000);
}

TEST_F(ShardTest, EnrollOfAnExistingAccountIsAccountExistsAndConsumesNoReference) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect again = enroll(7, "enroll-7-again");
  EXPECT_EQ(again.result, Result::kAccountExists);
  EXPECT_EQ(again.state.available, bonus());  // no second bonus
  EXPECT_FALSE(has_flag(again, kEffectClaimed));
  EXPECT_EQ(stats().members, 1u);
  EXPECT_EQ(earn(7, "enroll-7-again", 1'000).result, Result::kOk);  // the reference is still free
}

TEST_F(ShardTest, EnrollRetryIsAReplayNotAccountExists) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect retry = enroll(7, "enroll-7");
  EXPECT_EQ(retry.result, Result::kOk);
  EXPECT_TRUE(has_flag(retry, kEffectReplay));
  EXPECT_EQ(retry.points, bonus());
  EXPECT_EQ(retry.state.available, bonus());
  EXPECT_EQ(stats().members, 1u);
  EXPECT_EQ(stats().issued, bonus());
}

TEST_F(ShardTest, EnrollWithAnAmountIsInvalidAmount) {
  Event e = make_event(EventKind::kEnroll, 7, "enroll-7", 100);
  EXPECT_EQ(apply(e).result, Result::kInvalidAmount);
  AccountState s;
  EXPECT_FALSE(shard_->account(program_.id, 7, &s));
}

TEST_F(ShardTest, EnrollBeyondAccountsMaxIsCapacityExhausted) {
  Program p = make_program();
  p.accounts_max = 2;
  use(p);
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(enroll(2, "enroll-2").result, Result::kOk);
  Effect third = enroll(3, "enroll-3");
  EXPECT_EQ(third.result, Result::kCapacityExhausted);
  EXPECT_TRUE(has_flag(third, kEffectNoAccount));
  EXPECT_EQ(stats().members, 2u);
}

TEST_F(ShardTest, EarnOnAnUnknownAccountIsAccountNotFound) {
  Effect e = earn(7, "order-1", 1'000);
  EXPECT_EQ(e.result, Result::kAccountNotFound);
  EXPECT_TRUE(has_flag(e, kEffectNoAccount));
  EXPECT_EQ(stats().issued, 0);
}

// ---- 2. earn ------------------------------------------------------------------------------------
TEST_F(ShardTest, EarnUnderOnePointIsAcceptedForZeroPoints) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect e = earn(7, "order-1", 99);  // 0.99 EUR: floor(0.99) = 0
  EXPECT_EQ(e.result, Result::kOk);
  EXPECT_EQ(e.points, 0);
  EXPECT_EQ(e.state.available, bonus());
}

TEST_F(ShardTest, TierUpgradesAtTheExactThresholdAndNotOneBelow) {
  ASSERT_EQ(program_.tiers[1].threshold_points, 1'000);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect below = earn(7, "order-1", 99'900);  // 999 points
  EXPECT_EQ(below.state.qualifying, 999);
  EXPECT_EQ(below.state.tier, 0);
  Effect at = earn(7, "order-2", 100);  // 1 point: qualifying = 1'000
  EXPECT_EQ(at.state.qualifying, 1'000);
  EXPECT_EQ(at.state.tier, 1);
}

TEST_F(ShardTest, TierMultiplierAppliesToEarnsAfterTheUpgradeNotToTheEarnThatCrossesIt) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 99'900).points, 999);
  Effect crossing = earn(7, "order-2", 10'000);  // still bronze (x1.0) when computed
  EXPECT_EQ(crossing.points, 10'000 * 1000 / 100 / 1000);
  EXPECT_EQ(crossing.state.tier, 1);
  Effect silver = earn(7, "order-3", 12'399);  // silver: x1.25, one floor at the end
  EXPECT_EQ(silver.points, 12'399 * 1250 / 100 / 1000);
  EXPECT_EQ(silver.state.available, bonus() + 999 + 100 + 12'399 * 1250 / 100 / 1000);
}

TEST_F(ShardTest, EarnAboveEarnPointsMaxIsCutToItAndFlaggedCapped) {
  Program p = make_program();
  p.earn_points_max = 500;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect cut = earn(7, "order-1", 100'000);  // 1'000 points, cut to 500
  EXPECT_EQ(cut.result, Result::kOk);
  EXPECT_EQ(cut.points, 500);
  EXPECT_TRUE(has_flag(cut, kEffectCapped));
  Effect exact = earn(7, "order-2", 50'000);  // 500 points: at the limit, not cut
  EXPECT_EQ(exact.points, 500);
  EXPECT_FALSE(has_flag(exact, kEffectCapped));
  Effect retry = earn(7, "order-1", 100'000);  // a replay reports the cut as it was
  EXPECT_EQ(retry.points, 500);
  EXPECT_TRUE(has_flag(retry, kEffectCapped));
  EXPECT_TRUE(has_flag(retry, kEffectReplay));
  EXPECT_EQ(available(7), bonus() + 500 + 500);
}

class DayCapTest : public ShardTest {
 protected:
  void use_day_cap(int32_t utc_offset_minutes) {
    Program p = make_program();
    p.points_per_day_max = 300;
    p.utc_offset_minutes = utc_offset_minutes;
    use(p);
  }
};

TEST_F(DayCapTest, EarnThatCrossesTheDayCapIsCutAndFlaggedCapped) {
  use_day_cap(0);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);  // the bonus is not an earned point
  ASSERT_EQ(earn(7, "order-1", 25'000).points, 250);
  Effect cut = earn(7, "order-2", 10'000);  // 100 points, 50 left today
  EXPECT_EQ(cut.result, Result::kOk);
  EXPECT_EQ(cut.points, 300 - 250);
  EXPECT_TRUE(has_flag(cut, kEffectCapped));
  EXPECT_EQ(available(7), bonus() + 300);
}

TEST_F(DayCapTest, EarnAfterTheDayCapIsReachedExactlyIsCapExceeded) {
  use_day_cap(0);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 20'000).points, 200);
  Effect exact = earn(7, "order-2", 10'000);  // 100 points: exactly the 100 left
  EXPECT_EQ(exact.points, 100);
  EXPECT_FALSE(has_flag(exact, kEffectCapped));
  Effect over = earn(7, "order-3", 100);
  EXPECT_EQ(over.result, Result::kCapExceeded);
  EXPECT_EQ(over.state.available, bonus() + 300);
  now_ = kT0 + kMsPerDay;  // next day: the refused order's reference was not consumed
  EXPECT_EQ(earn(7, "order-3", 100).result, Result::kOk);
}

TEST_F(DayCapTest, AwardedPointsCountTowardsTheDayCap) {
  use_day_cap(0);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 25'000).points, 250);
  Effect cut = award(7, "referral-1", ActionKind::kReferral);  // 200 points, 50 left
  EXPECT_EQ(cut.points, 300 - 250);
  EXPECT_TRUE(has_flag(cut, kEffectCapped));
}

TEST_F(DayCapTest, DayResetsAtTheProgramsLocalMidnight) {
  use_day_cap(120);  // UTC+2: local midnight is 22:00 UTC
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  now_ = kT0 + 21 * kMsPerHour;  // 23:00 local on 1 January
  ASSERT_EQ(earn(7, "order-1", 30'000).points, 300);
  now_ = kT0 + 22 * kMsPerHour - 1;  // 23:59:59.999 local
  EXPECT_EQ(earn(7, "order-2", 100).result, Result::kCapExceeded);
  now_ = kT0 + 22 * kMsPerHour;  // 00:00 local on 2 January, still 1 January in UTC
  Effect next_day = earn(7, "order-2", 100);
  EXPECT_EQ(next_day.result, Result::kOk);
  EXPECT_EQ(next_day.points, 1);
}

TEST_F(DayCapTest, DayDoesNotResetAtUtcMidnightWhenTheProgramIsElsewhere) {
  use_day_cap(120);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  now_ = kT0 + 23 * kMsPerHour;  // 23:00 UTC = 01:00 local on 2 January
  ASSERT_EQ(earn(7, "order-1", 30'000).points, 300);
  now_ = kT0 + 25 * kMsPerHour;  // a new UTC day, the same local day
  EXPECT_EQ(earn(7, "order-2", 100).result, Result::kCapExceeded);
}

TEST_F(ShardTest, EarnInAnotherCurrencyIsCurrencyMismatch) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event usd = make_event(EventKind::kEarn, 7, "order-1", 1'000);
  usd.currency = 840;
  EXPECT_EQ(apply(usd).result, Result::kCurrencyMismatch);
  Event eur = make_event(EventKind::kEarn, 7, "order-1", 1'000);
  eur.currency = program_.currency;  // naming the program's own currency is fine
  EXPECT_EQ(apply(eur).result, Result::kOk);
  EXPECT_EQ(available(7), bonus() + 10);
}

TEST_F(ShardTest, EarnOfZeroOrNegativeAmountIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(earn(7, "order-1", 0).result, Result::kInvalidAmount);
  EXPECT_EQ(earn(7, "order-2", -1'000).result, Result::kInvalidAmount);
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, EarnAmountOutsideTheBalanceRangeIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(earn(7, "order-1", kPointsMax + 1).result, Result::kInvalidAmount);
  EXPECT_EQ(earn(7, "order-2", std::numeric_limits<int64_t>::max()).result, Result::kInvalidAmount);
  EXPECT_EQ(earn(7, "order-3", std::numeric_limits<int64_t>::min()).result, Result::kInvalidAmount);
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, EarnWhosePointsWouldExceedThePointsRangeIsOverflow) {
  Program p = make_program();
  p.earn_points = 1'000;  // 1'000 points per cent: kPointsMax cents is 1'000 x kPointsMax points
  p.earn_per_minor = 1;
  p.points_per_day_max = 0;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect e = earn(7, "order-1", kPointsMax);
  EXPECT_EQ(e.result, Result::kOverflow);
  EXPECT_EQ(e.state.available, bonus());
}

TEST_F(ShardTest, EarnThatWouldPushTheBalanceBeyondThePointsRangeIsOverflow) {
  member_with(7, kPointsMax);
  Effect e = earn(7, "order-1", 100);  // 1 point too many
  EXPECT_EQ(e.result, Result::kOverflow);
  EXPECT_EQ(e.state.available, kPointsMax);
  EXPECT_EQ(adjust(7, "adjust-1", 1).result, Result::kOverflow);
}

// docs/engine.md: points are cut to earn_points_max; overflow is about what would be credited.
TEST_F(ShardTest, EarnWhoseUncutPointsExceedThePointsRangeIsCutToEarnPointsMaxNotOverflow) {
  Program p = make_program();
  p.earn_points = 1'000;
  p.earn_per_minor = 1;
  p.earn_points_max = 500;
  p.points_per_day_max = 0;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect e = earn(7, "order-1", kPointsMax);
  EXPECT_EQ(e.result, Result::kOk);
  EXPECT_EQ(e.points, 500);
  EXPECT_TRUE(has_flag(e, kEffectCapped));
}

// docs/engine.md, earn state checks: rate_limited, then cap_exceeded, then overflow.
TEST_F(ShardTest, EarnAfterTheDayCapIsCapExceededBeforeOverflow) {
  Program p = make_program();
  p.earn_points = 1'000;
  p.earn_per_minor = 1;
  p.points_per_day_max = 300;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 1).points, 300);  // 1'000 points cut to the day's 300
  EXPECT_EQ(earn(7, "order-2", kPointsMax).result, Result::kCapExceeded);
}

// ---- 2. award -----------------------------------------------------------------------------------
TEST_F(ShardTest, AwardCreditsEachActionsPoints) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  int64_t expected = bonus();
  for (ActionKind a : {ActionKind::kReview, ActionKind::kReferral, ActionKind::kBirthday,
                       ActionKind::kSocial}) {
    Effect e = award(7, "award-" + std::to_string(static_cast<int>(a)), a);
    ASSERT_EQ(e.result, Result::kOk) << static_cast<int>(a);
    EXPECT_EQ(e.points, action_points(a));
    expected += action_points(a);
    EXPECT_EQ(e.state.available, expected);
    EXPECT_EQ(e.state.qualifying, 0);  // actions do not count towards tiers
  }
  EXPECT_EQ(expected, bonus() + 25 + 200 + 100 + 10);
}

TEST_F(ShardTest, AwardOfAnUnknownOrUnconfiguredActionIsInvalidCode) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(award(7, "award-1", uint16_t{0}).result, Result::kInvalidCode);
  EXPECT_EQ(award(7, "award-2", ActionKind::kCustom).result, Result::kInvalidCode);  // 0 points here
  EXPECT_EQ(award(7, "award-3", kActionKindCount).result, Result::kInvalidCode);
  EXPECT_EQ(award(7, "award-4", uint16_t{0xffff}).result, Result::kInvalidCode);
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, AwardWithAnAmountIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event e = make_event(EventKind::kAward, 7, "award-1", 1'000);
  e.code = static_cast<uint16_t>(ActionKind::kReview);
  EXPECT_EQ(apply(e).result, Result::kInvalidAmount);
}

TEST_F(ShardTest, BirthdayIsAwardedOncePer365DaysAndAgainAfterTheWindow) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(award(7, "birthday-2026", ActionKind::kBirthday).result, Result::kOk);
  now_ = kT0 + 364 * kMsPerDay + 23 * kMsPerHour;  // the window's last day
  Effect again = award(7, "birthday-2026b", ActionKind::kBirthday);
  EXPECT_EQ(again.result, Result::kActionLimitReached);
  EXPECT_EQ(again.state.available, bonus() + 100);
  now_ = kT0 + 365 * kMsPerDay;  // the window has closed
  EXPECT_EQ(award(7, "birthday-2027", ActionKind::kBirthday).result, Result::kOk);
  EXPECT_EQ(available(7), bonus() + 100 + 100);
}

TEST_F(ShardTest, SocialIsAwardedThreeTimesInSevenDays) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  for (int i = 0; i < 3; ++i) {
    now_ = kT0 + i * kMsPerDay;
    ASSERT_EQ(award(7, "social-" + std::to_string(i), ActionKind::kSocial).result, Result::kOk);
  }
  now_ = kT0 + 6 * kMsPerDay;
  EXPECT_EQ(award(7, "social-3", ActionKind::kSocial).result, Result::kActionLimitReached);
  now_ = kT0 + 7 * kMsPerDay;
  EXPECT_EQ(award(7, "social-3", ActionKind::kSocial).result, Result::kOk);
  EXPECT_EQ(available(7), bonus() + 4 * 10);
}

// ---- 3. redeem ----------------------------------------------------------------------------------
TEST_F(ShardTest, RedeemMoreThanAvailableIsRejectedAndConsumesNoReference) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect short_by_one = redeem(7, "redeem-1", bonus() + 1);
  EXPECT_EQ(short_by_one.result, Result::kInsufficientPoints);
  EXPECT_EQ(short_by_one.points, 0);
  EXPECT_EQ(short_by_one.state.available, bonus());
  EXPECT_FALSE(has_flag(short_by_one, kEffectClaimed));
  ASSERT_EQ(earn(7, "order-1", 100).result, Result::kOk);  // +1 point
  Effect later = redeem(7, "redeem-1", bonus() + 1);       // the very same event, now affordable
  EXPECT_EQ(later.result, Result::kOk);
  EXPECT_FALSE(has_flag(later, kEffectReplay));
  EXPECT_EQ(later.state.available, 0);
}

TEST_F(ShardTest, RedeemOfTheExactBalanceLeavesZero) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect e = redeem(7, "redeem-1", bonus());
  EXPECT_EQ(e.result, Result::kOk);
  EXPECT_EQ(e.points, bonus());
  EXPECT_EQ(e.state.available, 0);
  EXPECT_EQ(e.state.lifetime_redeemed, bonus());
  EXPECT_EQ(stats().redeemed, bonus());
}

TEST_F(ShardTest, RedeemUnderTheProgramsMinimumIsBelowMinimumBeforeInsufficient) {
  Program p = make_program();
  p.redeem_points_min = 100;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(redeem(7, "redeem-1", 99).result, Result::kBelowMinimum);  // also more than 50 held
  ASSERT_EQ(adjust(7, "adjust-1", 500).result, Result::kOk);
  EXPECT_EQ(redeem(7, "redeem-1", 99).result, Result::kBelowMinimum);
  EXPECT_EQ(redeem(7, "redeem-1", 100).result, Result::kOk);
  EXPECT_EQ(available(7), bonus() + 500 - 100);
}

TEST_F(ShardTest, RedeemOfZeroOrNegativePointsIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(redeem(7, "redeem-1", 0).result, Result::kInvalidAmount);
  EXPECT_EQ(redeem(7, "redeem-2", -10).result, Result::kInvalidAmount);
  EXPECT_EQ(available(7), bonus());
}

// ---- 3. hold, capture, void ---------------------------------------------------------------------
TEST_F(ShardTest, HoldMovesPointsFromAvailableToHeld) {
  member_with(7, 500);
  Effect h = hold(7, "hold-1", 200);
  EXPECT_EQ(h.result, Result::kOk);
  EXPECT_EQ(h.points, 200);
  EXPECT_EQ(h.state.available, 300);
  EXPECT_EQ(h.state.held, 200);
  EXPECT_EQ(h.state.lifetime_redeemed, 0);
}

TEST_F(ShardTest, HoldOfMoreThanAvailableIsInsufficientPoints) {
  member_with(7, 500);
  EXPECT_EQ(hold(7, "hold-1", 501).result, Result::kInsufficientPoints);
  EXPECT_EQ(state(7).held, 0);
}

TEST_F(ShardTest, CaptureWithoutAmountSettlesTheWholeHold) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  Effect c = capture(7, "capture-1", "hold-1");
  EXPECT_EQ(c.result, Result::kOk);
  EXPECT_EQ(c.points, 200);
  EXPECT_EQ(c.state.held, 0);
  EXPECT_EQ(c.state.available, 300);
  EXPECT_EQ(c.state.lifetime_redeemed, 200);
  EXPECT_EQ(stats().redeemed, 200);
}

TEST_F(ShardTest, PartialCaptureReturnsTheRestOfTheHoldToAvailable) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  Effect c = capture(7, "capture-1", "hold-1", 150);
  EXPECT_EQ(c.result, Result::kOk);
  EXPECT_EQ(c.points, 150);
  EXPECT_EQ(c.state.held, 0);
  EXPECT_EQ(c.state.available, 500 - 150);
  EXPECT_EQ(c.state.lifetime_redeemed, 150);
  EXPECT_EQ(capture(7, "capture-2", "hold-1", 50).result, Result::kHoldClosed);  // settled once
}

TEST_F(ShardTest, CaptureOfMoreThanHeldIsInvalidAmountAndKeepsTheHoldOpen) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  EXPECT_EQ(capture(7, "capture-1", "hold-1", 201).result, Result::kInvalidAmount);
  EXPECT_EQ(capture(7, "capture-2", "hold-1", -1).result, Result::kInvalidAmount);
  EXPECT_EQ(state(7).held, 200);
  EXPECT_EQ(capture(7, "capture-1", "hold-1", 200).result, Result::kOk);
}

TEST_F(ShardTest, CaptureJustBeforeTheHoldTimeoutSucceeds) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  now_ = kT0 + program_.hold_timeout_ms - 1;
  EXPECT_EQ(capture(7, "capture-1", "hold-1").result, Result::kOk);
  EXPECT_EQ(out_.effects.size(), 1u);  // no expiry before it
}

TEST_F(ShardTest, CaptureAtTheHoldTimeoutIsHoldExpiredAfterTheExpiryEffect) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  now_ = kT0 + program_.hold_timeout_ms;
  Effect c = capture(7, "capture-1", "hold-1");
  EXPECT_EQ(c.result, Result::kHoldExpired);
  ASSERT_EQ(out_.effects.size(), 2u);
  EXPECT_EQ(out_.effects[0].event.kind, EventKind::kHoldExpire);
  EXPECT_EQ(c.state.available, 500);
  EXPECT_EQ(c.state.held, 0);
  EXPECT_EQ(c.state.lifetime_redeemed, 0);
}

TEST_F(ShardTest, HoldExpiryEmitsHoldExpireBeforeTheNextEventsEffectAndReturnsThePoints) {
  member_with(7, 500);
  member_with(8, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  now_ = kT0 + program_.hold_timeout_ms + kMsPerMinute;
  Effect other = earn(8, "order-1", 1'000);  // any event of the program, here another member's
  ASSERT_EQ(out_.effects.size(), 2u);
  const Effect& expiry = out_.effects[0];
  EXPECT_EQ(expiry.event.kind, EventKind::kHoldExpire);
  EXPECT_EQ(expiry.event.ref, ref("hold-1"));
  EXPECT_EQ(expiry.event.account, 7u);
  EXPECT_EQ(expiry.result, Result::kOk);
  EXPECT_EQ(expiry.points, 200);
  EXPECT_EQ(expiry.state.available, 500);
  EXPECT_EQ(expiry.state.held, 0);
  EXPECT_EQ(expiry.seq + 1, other.seq);
  EXPECT_EQ(other.event.kind, EventKind::kEarn);
  EXPECT_EQ(void_hold(7, "void-1", "hold-1").result, Result::kHoldExpired);
}

TEST_F(ShardTest, TickExpiresDueHoldsWithoutAnEffectOfItsOwn) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  uint64_t seq = shard_->last_seq();
  Event tick;
  tick.kind = EventKind::kTick;
  out_.clear();
  shard_->apply(tick, kT0 + program_.hold_timeout_ms, &out_);
  ASSERT_EQ(out_.effects.size(), 1u);
  EXPECT_EQ(out_.effects[0].event.kind, EventKind::kHoldExpire);
  EXPECT_EQ(out_.effects[0].seq, seq + 1);
  EXPECT_EQ(state(7).available, 500);
  out_.clear();
  shard_->apply(tick, kT0 + 2 * program_.hold_timeout_ms, &out_);  // nothing left to expire
  EXPECT_TRUE(out_.effects.empty());
}

TEST_F(ShardTest, VoidReturnsTheHeldPoints) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  Effect v = void_hold(7, "void-1", "hold-1");
  EXPECT_EQ(v.result, Result::kOk);
  EXPECT_EQ(v.points, 200);
  EXPECT_EQ(v.state.available, 500);
  EXPECT_EQ(v.state.held, 0);
  EXPECT_EQ(v.state.lifetime_redeemed, 0);
  EXPECT_EQ(stats().redeemed, 0);
}

TEST_F(ShardTest, CaptureAfterVoidAndVoidAfterCaptureAreHoldClosed) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  ASSERT_EQ(void_hold(7, "void-1", "hold-1").result, Result::kOk);
  EXPECT_EQ(capture(7, "capture-1", "hold-1").result, Result::kHoldClosed);
  ASSERT_EQ(hold(7, "hold-2", 100).result, Result::kOk);
  ASSERT_EQ(capture(7, "capture-2", "hold-2").result, Result::kOk);
  EXPECT_EQ(void_hold(7, "void-2", "hold-2").result, Result::kHoldClosed);
  EXPECT_EQ(available(7), 500 - 100);
}

TEST_F(ShardTest, VoidWithAnAmountIsInvalidAmount) {
  member_with(7, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  Event e = make_event(EventKind::kVoid, 7, "void-1", 200);
  e.target = ref("hold-1");
  EXPECT_EQ(apply(e).result, Result::kInvalidAmount);
  EXPECT_EQ(state(7).held, 200);
}

TEST_F(ShardTest, HoldsBeyondHoldsOpenMaxAreCapacityExhausted) {
  member_with(7, 500);
  for (uint64_t i = 0; i < program_.holds_open_max; ++i) {
    ASSERT_EQ(hold(7, "hold-" + std::to_string(i), 1).result, Result::kOk) << i;
  }
  Effect full = hold(7, "hold-x", 1);
  EXPECT_EQ(full.result, Result::kCapacityExhausted);
  EXPECT_EQ(full.state.held, static_cast<int64_t>(program_.holds_open_max));
  now_ = kT0 + program_.hold_timeout_ms;  // they expire: room again
  EXPECT_EQ(hold(7, "hold-x", 1).result, Result::kOk);
}

// holds_open_max is documented as "open holds at once": a captured or voided hold is not open.
// holds_open_max bounds the holds placed within the last hold timeout (docs/engine.md): a closed
// hold keeps its place in the expiry queue until its timeout passes.
TEST_F(ShardTest, HoldsOpenMaxCountsHoldsPlacedWithinTheHoldTimeout) {
  member_with(7, 500);
  for (uint64_t i = 0; i < program_.holds_open_max; ++i) {
    std::string id = "hold-" + std::to_string(i);
    ASSERT_EQ(hold(7, id, 1).result, Result::kOk) << i;
    ASSERT_EQ(void_hold(7, "void-" + std::to_string(i), id).result, Result::kOk) << i;
  }
  EXPECT_EQ(state(7).held, 0);
  EXPECT_EQ(hold(7, "hold-x", 1).result, Result::kCapacityExhausted);
  now_ += program_.hold_timeout_ms;
  EXPECT_EQ(hold(7, "hold-y", 1).result, Result::kOk);
}

TEST_F(ShardTest, CaptureOfAnotherAccountsHoldOrOfNoHoldIsHoldNotFound) {
  member_with(7, 500);
  member_with(8, 500);
  ASSERT_EQ(hold(7, "hold-1", 200).result, Result::kOk);
  ASSERT_EQ(earn(8, "order-1", 1'000).result, Result::kOk);
  EXPECT_EQ(capture(8, "capture-1", "hold-1").result, Result::kHoldNotFound);
  EXPECT_EQ(void_hold(8, "void-1", "hold-1").result, Result::kHoldNotFound);
  EXPECT_EQ(capture(8, "capture-2", "order-1").result, Result::kHoldNotFound);  // an earn
  EXPECT_EQ(capture(8, "capture-3", "no-such-hold").result, Result::kHoldNotFound);
  EXPECT_EQ(state(7).held, 200);
  EXPECT_EQ(available(8), 510);
}

// ---- 3. reverse ---------------------------------------------------------------------------------
TEST_F(ShardTest, FullReverseClawsBackAllPointsOfTheOrder) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).points, 100);
  Effect r = reverse(7, "refund-1", "order-1");
  EXPECT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 100);
  EXPECT_EQ(r.state.available, bonus());
  EXPECT_EQ(r.state.qualifying, 0);
  EXPECT_EQ(stats().clawed_back, 100);
}

TEST_F(ShardTest, PartialReversesClawBackProRataWithFloorAndSumToTheOrdersPoints) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).points, 100);
  // Each refund takes floor(points x refunded so far / amount) minus what earlier ones took, so
  // three thirds take 33 + 33 + 34 (a floor per refund would take 33 + 33 + 33 and leave 1).
  Effect r1 = reverse(7, "refund-1", "order-1", 3'333);
  EXPECT_EQ(r1.points, 100 * 3'333 / 10'000);
  Effect r2 = reverse(7, "refund-2", "order-1", 3'333);
  EXPECT_EQ(r2.points, 100 * 6'666 / 10'000 - 100 * 3'333 / 10'000);
  Effect r3 = reverse(7, "refund-3", "order-1");  // 0 = all that is left: 3'334 cents
  EXPECT_EQ(r3.points, 100 - 100 * 6'666 / 10'000);
  EXPECT_EQ(r1.points + r2.points + r3.points, 100);
  EXPECT_EQ(r3.state.available, bonus());
  EXPECT_EQ(reverse(7, "refund-4", "order-1", 1).result, Result::kAlreadyReversed);
}

TEST_F(ShardTest, ReverseOfMoreThanIsLeftOfTheOrderIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  ASSERT_EQ(reverse(7, "refund-1", "order-1", 6'000).result, Result::kOk);
  EXPECT_EQ(reverse(7, "refund-2", "order-1", 4'001).result, Result::kInvalidAmount);
  EXPECT_EQ(reverse(7, "refund-3", "order-1", -1).result, Result::kInvalidAmount);
  EXPECT_EQ(reverse(7, "refund-2", "order-1", 4'000).result, Result::kOk);
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, ReverseAfterThePointsWereSpentDrivesAvailableBelowZero) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).points, 100);
  ASSERT_EQ(redeem(7, "redeem-1", bonus() + 100).result, Result::kOk);
  Effect r = reverse(7, "refund-1", "order-1");
  EXPECT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 100);
  EXPECT_EQ(r.state.available, -100);
  EXPECT_EQ(redeem(7, "redeem-2", 1).result, Result::kInsufficientPoints);
}

TEST_F(ShardTest, ReverseOfAFullyRefundedOrderIsAlreadyReversed) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  ASSERT_EQ(reverse(7, "refund-1", "order-1").result, Result::kOk);
  Effect again = reverse(7, "refund-2", "order-1");
  EXPECT_EQ(again.result, Result::kAlreadyReversed);
  EXPECT_EQ(again.state.available, bonus());
}

TEST_F(ShardTest, ReverseOfARedeemOrHoldOrEnrollIsNotReversible) {
  member_with(7, 500);
  ASSERT_EQ(redeem(7, "redeem-1", 100).result, Result::kOk);
  ASSERT_EQ(hold(7, "hold-1", 100).result, Result::kOk);
  EXPECT_EQ(reverse(7, "refund-1", "redeem-1").result, Result::kNotReversible);
  EXPECT_EQ(reverse(7, "refund-2", "hold-1").result, Result::kNotReversible);
  EXPECT_EQ(reverse(7, "refund-3", "enroll-7").result, Result::kNotReversible);
  EXPECT_EQ(available(7), 300);
}

TEST_F(ShardTest, ReverseOfAnUnknownOrAnotherAccountsOrderIsOrderNotFound) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(enroll(8, "enroll-8").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  EXPECT_EQ(reverse(8, "refund-1", "order-1").result, Result::kOrderNotFound);
  EXPECT_EQ(reverse(7, "refund-2", "no-such-order").result, Result::kOrderNotFound);
  EXPECT_EQ(available(7), bonus() + 100);
}

TEST_F(ShardTest, ReverseInAnotherCurrencyIsCurrencyMismatch) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  Event e = make_event(EventKind::kReverse, 7, "refund-1");
  e.target = ref("order-1");
  e.currency = 840;
  EXPECT_EQ(apply(e).result, Result::kCurrencyMismatch);
}

TEST_F(ShardTest, ReverseAfterTheRefundWindowIsRefundWindowPassed) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  now_ = kT0 + program_.refund_window_ms;  // the window's last second (windows count whole seconds)
  EXPECT_EQ(reverse(7, "refund-1", "order-1", 5'000).result, Result::kOk);
  now_ = kT0 + program_.refund_window_ms + 1000;
  Effect late = reverse(7, "refund-2", "order-1");
  EXPECT_EQ(late.result, Result::kRefundWindowPassed);
  EXPECT_EQ(late.state.available, bonus() + 100 - 50);
}

// The window is program.refund_window_ms from the order's own time, counted in whole seconds.
TEST_F(ShardTest, ReverseAtTheLastMillisecondOfTheWindowOfAnOrderOffTheSecondIsAccepted) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  now_ = kT0 + 500;
  ASSERT_EQ(earn(7, "order-1", 10'000).result, Result::kOk);
  now_ = kT0 + 500 + program_.refund_window_ms;
  EXPECT_EQ(reverse(7, "refund-1", "order-1").result, Result::kOk);
}

// ---- 3. adjust ----------------------------------------------------------------------------------
TEST_F(ShardTest, AdjustCreditsOrDebitsTheSignedAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect up = adjust(7, "adjust-1", 100);
  EXPECT_EQ(up.result, Result::kOk);
  EXPECT_EQ(up.points, 100);
  EXPECT_EQ(up.state.available, bonus() + 100);
  EXPECT_EQ(up.state.lifetime_earned, bonus());  // a correction is not earned
  Effect down = adjust(7, "adjust-2", -30);
  EXPECT_EQ(down.result, Result::kOk);
  EXPECT_EQ(down.points, -30);
  EXPECT_EQ(down.state.available, bonus() + 100 - 30);
  EXPECT_EQ(stats().adjusted, 100 - 30);
}

TEST_F(ShardTest, AdjustBelowZeroIsInsufficientPoints) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(adjust(7, "adjust-1", -(bonus() + 1)).result, Result::kInsufficientPoints);
  EXPECT_EQ(adjust(7, "adjust-1", -bonus()).result, Result::kOk);  // to exactly zero is fine
  EXPECT_EQ(available(7), 0);
}

TEST_F(ShardTest, AdjustWithoutAReasonCodeIsInvalidCode) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(adjust(7, "adjust-1", 100, 0).result, Result::kInvalidCode);
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, AdjustOfZeroOrBeyondThePointsRangeIsInvalidAmount) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  EXPECT_EQ(adjust(7, "adjust-1", 0).result, Result::kInvalidAmount);
  EXPECT_EQ(adjust(7, "adjust-2", kPointsMax + 1).result, Result::kInvalidAmount);
  EXPECT_EQ(adjust(7, "adjust-3", -kPointsMax - 1).result, Result::kInvalidAmount);
}

// ---- 3. transfer --------------------------------------------------------------------------------
TEST_F(ShardTest, TransferDebitsTheSenderAndItsForwardedLegCreditsTheReceiver) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(enroll(2, "enroll-2").result, Result::kOk);
  Effect sent = transfer(1, "gift-1", 2, 30);
  EXPECT_EQ(sent.result, Result::kOk);
  EXPECT_EQ(sent.points, 30);
  EXPECT_EQ(sent.state.available, bonus() - 30);
  ASSERT_EQ(out_.forward.size(), 1u);
  Event leg = out_.forward[0];
  EXPECT_EQ(leg.kind, EventKind::kTransferIn);
  EXPECT_EQ(leg.account, 2u);
  EXPECT_EQ(leg.counterparty, 1u);
  EXPECT_EQ(leg.amount, 30);
  EXPECT_EQ(leg.ref, ref("gift-1"));
  EXPECT_EQ(available(2), bonus());                         // in transit
  EXPECT_TRUE(ledger_balances({shard_.get()}, program_.id));  // counted as in transit

  Effect in = apply(leg);
  EXPECT_EQ(in.result, Result::kOk);
  EXPECT_EQ(in.event.kind, EventKind::kTransferIn);
  EXPECT_EQ(in.points, 30);
  EXPECT_EQ(in.state.available, bonus() + 30);
  EXPECT_TRUE(out_.forward.empty());
  EXPECT_EQ(stats().transfer_out, 30);
  EXPECT_EQ(stats().transfer_in, 30);
}

TEST_F(ShardTest, ResentTransferInLegIsIgnored) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(enroll(2, "enroll-2").result, Result::kOk);
  ASSERT_EQ(transfer(1, "gift-1", 2, 30).result, Result::kOk);
  Event leg = out_.forward.at(0);
  ASSERT_EQ(apply(leg).result, Result::kOk);
  out_.clear();
  shard_->apply(leg, now_, &out_);  // recovery re-sends a leg it cannot tell was applied
  EXPECT_TRUE(out_.effects.empty());
  EXPECT_EQ(available(2), bonus() + 30);
}

TEST_F(ShardTest, TransferToAnUnknownAccountBouncesAndRefundsTheSender) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(transfer(1, "gift-1", 99, 30).result, Result::kOk);
  Event leg = out_.forward.at(0);
  Effect in = apply(leg);
  EXPECT_EQ(in.result, Result::kAccountNotFound);
  EXPECT_TRUE(has_flag(in, kEffectBounced));
  ASSERT_EQ(out_.forward.size(), 1u);
  Event back = out_.forward[0];
  EXPECT_EQ(back.kind, EventKind::kTransferBounce);
  EXPECT_EQ(back.account, 1u);
  EXPECT_EQ(back.counterparty, 99u);
  EXPECT_EQ(back.amount, 30);
  EXPECT_TRUE(ledger_balances({shard_.get()}, program_.id));

  Effect refund = apply(back);
  EXPECT_EQ(refund.result, Result::kOk);
  EXPECT_EQ(refund.event.kind, EventKind::kTransferBounce);
  EXPECT_EQ(refund.points, 30);
  EXPECT_EQ(refund.state.available, bonus());
  EXPECT_EQ(stats().transfer_bounced, 30);
  out_.clear();
  shard_->apply(back, now_, &out_);  // a re-sent bounce refunds nothing more
  EXPECT_TRUE(out_.effects.empty());
  EXPECT_EQ(available(1), bonus());
}

TEST_F(ShardTest, TransferRetryIsAReplayAndForwardsNoSecondLeg) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(enroll(2, "enroll-2").result, Result::kOk);
  ASSERT_EQ(transfer(1, "gift-1", 2, 30).result, Result::kOk);
  Effect retry = transfer(1, "gift-1", 2, 30);
  EXPECT_EQ(retry.result, Result::kOk);
  EXPECT_TRUE(has_flag(retry, kEffectReplay));
  EXPECT_TRUE(out_.forward.empty());
  EXPECT_EQ(retry.state.available, bonus() - 30);
}

TEST_F(ShardTest, TransferToSelfIsSameAccountAndToAccountZeroIsInvalidAccount) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  EXPECT_EQ(transfer(1, "gift-1", 1, 30).result, Result::kSameAccount);
  EXPECT_EQ(transfer(1, "gift-2", 0, 30).result, Result::kInvalidAccount);
  EXPECT_TRUE(out_.forward.empty());
  EXPECT_EQ(available(1), bonus());
}

TEST_F(ShardTest, TransferOfMoreThanAvailableIsInsufficientAndForwardsNothing) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(enroll(2, "enroll-2").result, Result::kOk);
  EXPECT_EQ(transfer(1, "gift-1", 2, bonus() + 1).result, Result::kInsufficientPoints);
  EXPECT_TRUE(out_.forward.empty());
  EXPECT_EQ(transfer(1, "gift-2", 2, 0).result, Result::kInvalidAmount);
  EXPECT_TRUE(out_.forward.empty());
}

// docs/engine.md step 3: counterparty 0 is invalid_account, checked before the references.
TEST_F(ShardTest, TransferToAccountZeroIsInvalidAccountBeforeAMissingReference) {
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  Event e = make_event(EventKind::kTransfer, 1, "", 30);
  EXPECT_EQ(apply(e).result, Result::kInvalidAccount);
}

TEST_F(ShardTest, TransferBetweenTwoShardsIsCountedInTransitUntilTheReceiverIsCredited) {
  Shard other(1, std::span<const Program>(&program_, 1), fraud_.get());
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(apply(make_event(EventKind::kEnroll, 2, "enroll-2"), &other).result, Result::kOk);
  ASSERT_EQ(transfer(1, "gift-1", 2, 30).result, Result::kOk);
  Event leg = out_.forward.at(0);
  EXPECT_TRUE(ledger_balances({shard_.get(), &other}, program_.id));
  Effect in = apply(leg, &other);
  EXPECT_EQ(in.result, Result::kOk);
  EXPECT_EQ(in.shard, 1);
  EXPECT_EQ(in.state.available, bonus() + 30);
  EXPECT_EQ(in.state.lifetime_earned, bonus() + 30);  // received points count as earned
  EXPECT_TRUE(ledger_balances({shard_.get(), &other}, program_.id));
  EXPECT_EQ(stats().transfer_out, 30);
  EXPECT_EQ(other.stats(program_.id)->transfer_in, 30);
}

// ---- 3. balance ---------------------------------------------------------------------------------
TEST_F(ShardTest, BalanceReadTakesNoSequenceNumberAndCountsNoEvent) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 1'000).result, Result::kOk);
  uint64_t seq = shard_->last_seq();
  uint64_t events = stats().events;
  Effect b = balance(7);
  EXPECT_EQ(b.result, Result::kOk);
  EXPECT_EQ(b.seq, seq);  // tagged with the last sequence it observed
  EXPECT_EQ(b.state.available, bonus() + 10);
  EXPECT_EQ(shard_->last_seq(), seq);
  EXPECT_EQ(stats().events, events);
  EXPECT_EQ(earn(7, "order-2", 1'000).seq, seq + 1);
}

TEST_F(ShardTest, BalanceOfAnUnknownAccountIsAccountNotFound) {
  Effect b = balance(7);
  EXPECT_EQ(b.result, Result::kAccountNotFound);
  EXPECT_TRUE(has_flag(b, kEffectNoAccount));
  EXPECT_EQ(balance(0).result, Result::kInvalidAccount);
}

// ---- 4. limits ----------------------------------------------------------------------------------
TEST_F(ShardTest, EventsBeyondEventsPerMinuteMaxAreRateLimitedUntilTheNextMinute) {
  Program p = make_program();
  p.events_per_minute_max = 3;
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  now_ = kT0 + 10 * kMsPerSecond;
  ASSERT_EQ(earn(7, "order-1", 1'000).result, Result::kOk);
  ASSERT_EQ(award(7, "review-1", ActionKind::kReview).result, Result::kOk);
  ASSERT_EQ(redeem(7, "redeem-1", 5).result, Result::kOk);
  now_ = kT0 + kMsPerMinute - 1;
  EXPECT_EQ(earn(7, "order-2", 1'000).result, Result::kRateLimited);
  EXPECT_EQ(hold(7, "hold-1", 5).result, Result::kRateLimited);
  EXPECT_EQ(balance(7).result, Result::kOk);  // reads are not limited
  EXPECT_EQ(available(7), bonus() + 10 + 25 - 5);
  ASSERT_EQ(enroll(8, "enroll-8").result, Result::kOk);  // the cap is per account
  EXPECT_EQ(earn(8, "order-3", 1'000).result, Result::kOk);
  now_ = kT0 + kMsPerMinute;
  EXPECT_EQ(earn(7, "order-2", 1'000).result, Result::kOk);
}

TEST_F(ShardTest, OrdersBeyondOrdersMaxAreCapacityExhaustedAndConsumeNoReference) {
  Program p = make_program();
  p.orders_max = 3;  // per generation: the enroll and two earns
  use(p);
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 1'000).result, Result::kOk);
  ASSERT_EQ(earn(7, "order-2", 1'000).result, Result::kOk);
  Effect full = earn(7, "order-3", 1'000);
  EXPECT_EQ(full.result, Result::kCapacityExhausted);
  EXPECT_FALSE(has_flag(full, kEffectClaimed));
  EXPECT_EQ(available(7), bonus() + 20);
  now_ = kT0 + 2 * program_.refund_window_ms;  // the first generation is dropped: room again
  EXPECT_EQ(earn(7, "order-3", 1'000).result, Result::kOk);
}

TEST_F(ShardTest, FullFraudSetIsCapacityExhausted) {
  FraudSet tiny(2, 1);
  Shard shard(0, std::span<const Program>(&program_, 1), &tiny);
  for (uint64_t account : {1, 2, 3}) {
    Event e = make_event(EventKind::kEnroll, account, "enroll-" + std::to_string(account));
    EXPECT_EQ(apply(e, &shard).result, account <= 2 ? Result::kOk : Result::kCapacityExhausted);
  }
  AccountState s;
  EXPECT_FALSE(shard.account(program_.id, 3, &s));
  EXPECT_TRUE(ledger_balances({&shard}, program_.id));
}

// ---- 4. time ------------------------------------------------------------------------------------
TEST_F(ShardTest, BusinessTimeOlderThanTheDedupWindowIsStaleReference) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event old = make_event(EventKind::kEarn, 7, "order-1", 1'000);
  old.business_time_ms = kT0 - program_.dedup_window_ms - 1;
  EXPECT_EQ(apply(old).result, Result::kStaleReference);
  Event oldest_allowed = make_event(EventKind::kEarn, 7, "order-2", 1'000);
  oldest_allowed.business_time_ms = kT0 - program_.dedup_window_ms;
  EXPECT_EQ(apply(oldest_allowed).result, Result::kOk);
  EXPECT_EQ(available(7), bonus() + 10);
}

TEST_F(ShardTest, BusinessTimeBeyondTheFutureSkewIsInvalidTime) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event ahead = make_event(EventKind::kEarn, 7, "order-1", 1'000);
  ahead.business_time_ms = kT0 + program_.future_skew_ms_max + 1;
  EXPECT_EQ(apply(ahead).result, Result::kInvalidTime);
  Event furthest_allowed = make_event(EventKind::kEarn, 7, "order-2", 1'000);
  furthest_allowed.business_time_ms = kT0 + program_.future_skew_ms_max;
  EXPECT_EQ(apply(furthest_allowed).result, Result::kOk);
}

// ---- 4. validation of the event -----------------------------------------------------------------
TEST_F(ShardTest, EventOfAnUnknownProgramIsProgramNotFound) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event e = make_event(EventKind::kEarn, 7, "order-1", 1'000);
  e.program = program_.id + 1;
  Effect r = apply(e);
  EXPECT_EQ(r.result, Result::kProgramNotFound);
  EXPECT_TRUE(has_flag(r, kEffectNoAccount));
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, InvalidUnknownOrEngineOnlyKindsAreInvalidKind) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  for (EventKind k : {EventKind::kInvalid, EventKind::kHoldExpire, static_cast<EventKind>(12),
                      static_cast<EventKind>(99)}) {
    Effect r = apply(make_event(k, 7, "x-1", 100));
    EXPECT_EQ(r.result, Result::kInvalidKind) << static_cast<int>(k);
    EXPECT_EQ(r.points, 0);
  }
  EXPECT_EQ(available(7), bonus());
}

TEST_F(ShardTest, AccountZeroIsInvalidAccountBeforeAnyOtherCheck) {
  Effect r = apply(make_event(EventKind::kEarn, 0, "", -5));  // no reference, bad amount too
  EXPECT_EQ(r.result, Result::kInvalidAccount);
  EXPECT_TRUE(has_flag(r, kEffectNoAccount));
  EXPECT_EQ(enroll(0, "enroll-0").result, Result::kInvalidAccount);
}

TEST_F(ShardTest, MutatingEventWithoutItsReferenceIsInvalidReference) {
  member_with(7, 500);
  for (EventKind k : {EventKind::kEnroll, EventKind::kEarn, EventKind::kAward, EventKind::kRedeem,
                      EventKind::kHold, EventKind::kCapture, EventKind::kVoid, EventKind::kReverse,
                      EventKind::kAdjust, EventKind::kTransfer}) {
    Event e = make_event(k, 7, "", 100);
    e.target = ref("some-order");
    e.counterparty = 8;  // a transfer names its receiver (a zero one is invalid_account first)
    EXPECT_EQ(apply(e).result, Result::kInvalidReference) << to_string(k);
  }
  EXPECT_EQ(available(7), 500);
}

TEST_F(ShardTest, CaptureVoidOrReverseWithoutTargetIsInvalidReference) {
  member_with(7, 500);
  ASSERT_EQ(earn(7, "order-1", 1'000).result, Result::kOk);
  ASSERT_EQ(hold(7, "hold-1", 100).result, Result::kOk);
  for (EventKind k : {EventKind::kCapture, EventKind::kVoid, EventKind::kReverse}) {
    EXPECT_EQ(apply(make_event(k, 7, "act-1")).result, Result::kInvalidReference) << to_string(k);
  }
  EXPECT_EQ(state(7).held, 100);
}

// ---- 5. dedup on one shard ----------------------------------------------------------------------
TEST_F(ShardTest, IdenticalRetryOfAnEarnReplaysItsOriginalResultAndPoints) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Effect first = earn(7, "order-1", 12'399);
  ASSERT_EQ(first.points, 123);
  ASSERT_EQ(earn(7, "order-2", 100'000).state.tier, 1);  // silver now: a re-decision would differ
  int64_t before = available(7);
  uint64_t seq = shard_->last_seq();
  Effect retry = earn(7, "order-1", 12'399);
  EXPECT_EQ(retry.result, Result::kOk);
  EXPECT_EQ(retry.points, 12'399 * 1000 / 100 / 1000);
  EXPECT_TRUE(has_flag(retry, kEffectReplay));
  EXPECT_FALSE(has_flag(retry, kEffectClaimed));
  EXPECT_EQ(retry.state.available, before);
  EXPECT_EQ(retry.seq, seq + 1);  // a replay is logged like any answer
  EXPECT_EQ(available(7), before);
  EXPECT_EQ(stats().replays, 1u);
  EXPECT_EQ(stats().duplicates, 0u);
}

TEST_F(ShardTest, RetryFromAnotherApiKeyIsStillAReplay) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event e = make_event(EventKind::kEarn, 7, "order-1", 12'399);
  e.key_id = 1;
  ASSERT_EQ(apply(e).result, Result::kOk);
  e.key_id = 2;  // the key is audit data, not part of the fingerprint
  Effect retry = apply(e);
  EXPECT_TRUE(has_flag(retry, kEffectReplay));
  EXPECT_EQ(retry.event.key_id, 2u);
  EXPECT_EQ(available(7), bonus() + 123);
}

// Documented in docs/engine.md: the order table forgets after one to two refund windows, the
// fraud set only after the dedup window; in between a retry cannot be told from a duplicate.
TEST_F(ShardTest, RetryAfterItsOrderWasDroppedIsDuplicateOrderNotReplay) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  Event e = make_event(EventKind::kEarn, 7, "order-1", 12'399);
  e.business_time_ms = kT0;
  ASSERT_EQ(apply(e).result, Result::kOk);
  now_ = kT0 + program_.refund_window_ms;  // a new generation: the order is in the previous one
  EXPECT_TRUE(has_flag(apply(e), kEffectReplay));
  now_ = kT0 + 2 * program_.refund_window_ms;  // another: the order is dropped
  ASSERT_LT(2 * program_.refund_window_ms, program_.dedup_window_ms);
  Effect late = apply(e);
  EXPECT_EQ(late.result, Result::kDuplicateOrder);
  EXPECT_FALSE(has_flag(late, kEffectReplay));
  EXPECT_EQ(available(7), bonus() + 123);
}

TEST_F(ShardTest, DifferentEventReusingAReferenceIsDuplicateOrder) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(enroll(8, "enroll-8").result, Result::kOk);
  ASSERT_EQ(earn(7, "order-1", 12'399).result, Result::kOk);
  Effect other_amount = earn(7, "order-1", 50'000);
  EXPECT_EQ(other_amount.result, Result::kDuplicateOrder);
  EXPECT_EQ(other_amount.points, 0);
  EXPECT_FALSE(has_flag(other_amount, kEffectReplay));
  EXPECT_EQ(other_amount.depends_shard, 0);  // decided by this shard's own order
  EXPECT_EQ(other_amount.depends_seq, 0u);
  Effect other_account = earn(8, "order-1", 12'399);
  EXPECT_EQ(other_account.result, Result::kDuplicateOrder);
  EXPECT_EQ(available(7), bonus() + 123);
  EXPECT_EQ(available(8), bonus());
  EXPECT_EQ(stats().duplicates, 2u);
}

TEST_F(ShardTest, RejectedEventDoesNotConsumeItsReference) {
  ASSERT_EQ(enroll(7, "enroll-7").result, Result::kOk);
  ASSERT_EQ(redeem(7, "ref-1", bonus() + 1).result, Result::kInsufficientPoints);
  Effect later = earn(7, "ref-1", 1'000);  // another event under the same reference
  EXPECT_EQ(later.result, Result::kOk);
  EXPECT_TRUE(has_flag(later, kEffectClaimed));
  EXPECT_EQ(stats().duplicates, 0u);
}

// ---- paid membership --------------------------------------------------------------------------
TEST_F(ShardTest, APaidMemberEarnsTheMembershipMultiplierWhileItCoversTheDay) {
  Program p = make_program();
  p.membership_days = 30;
  p.membership_multiplier_permille = 1500;
  use(p);
  const int64_t day0 = kT0 / kMsPerDay;
  ASSERT_EQ(enroll(1, "e1").result, Result::kOk);
  EXPECT_EQ(earn(1, "o1", 10'000).points, 100);  // not a member: x1
  Effect m = apply(make_event(EventKind::kMembership, 1, "sub-1"));
  ASSERT_EQ(m.result, Result::kOk);
  EXPECT_EQ(m.points, 0);
  EXPECT_EQ(m.state.member_until, day0 + 29);  // 30 days: today and the 29 after
  EXPECT_TRUE(m.state.flags & kAccountPaidMember);
  EXPECT_EQ(earn(1, "o2", 10'000).points, 150);
  now_ = (day0 + 30) * kMsPerDay - 1;  // the last millisecond of its last day
  EXPECT_EQ(earn(1, "o3", 10'000).points, 150);
  now_ = (day0 + 30) * kMsPerDay;
  Effect lapsed = earn(1, "o4", 10'000);
  EXPECT_EQ(lapsed.points, 100);
  EXPECT_FALSE(lapsed.state.flags & kAccountPaidMember);
  EXPECT_EQ(lapsed.state.member_until, day0 + 29) << "the effect still says until when it ran";
}

TEST_F(ShardTest, RenewingAMembershipExtendsItFromItsEndOrFromToday) {
  Program p = make_program();
  p.membership_days = 30;
  use(p);
  const int64_t day0 = kT0 / kMsPerDay;
  ASSERT_EQ(enroll(1, "e1").result, Result::kOk);
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 1, "sub-1")).state.member_until, day0 + 29);
  now_ += 10 * kMsPerDay;
  Event two = make_event(EventKind::kMembership, 1, "sub-2", 2);
  EXPECT_EQ(apply(two).state.member_until, day0 + 89);  // two periods after its end
  EXPECT_TRUE(has_flag(apply(two), kEffectReplay)) << "a retry renews nothing";
  EXPECT_EQ(state(1).member_until, day0 + 89) << "reads report it as effects do";
  now_ = kT0 + 100 * kMsPerDay;  // lapsed 10 days ago
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 1, "sub-3")).state.member_until, day0 + 129);
}

TEST_F(ShardTest, AMembershipIsRefusedWhereTheProgramSellsNone) {
  ASSERT_EQ(enroll(1, "e1").result, Result::kOk);
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 1, "sub-1")).result, Result::kInvalidKind);
  Program p = make_program();
  p.membership_days = 30;
  use(p);
  ASSERT_EQ(enroll(1, "e1").result, Result::kOk);
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 1, "sub-1", 101)).result, Result::kInvalidAmount);
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 2, "sub-2")).result, Result::kAccountNotFound);
  EXPECT_EQ(apply(make_event(EventKind::kMembership, 1, "")).result, Result::kInvalidReference);
}

TEST_F(ShardTest, EarnsAndRedeemsShareOneReferenceSpace) {
  member_with(7, 500);
  ASSERT_EQ(earn(7, "ref-1", 1'000).result, Result::kOk);
  EXPECT_EQ(redeem(7, "ref-1", 10).result, Result::kDuplicateOrder);
  ASSERT_EQ(redeem(7, "ref-2", 10).result, Result::kOk);
  EXPECT_EQ(earn(7, "ref-2", 1'000).result, Result::kDuplicateOrder);
  EXPECT_EQ(hold(7, "ref-2", 10).result, Result::kDuplicateOrder);
  EXPECT_EQ(available(7), 500 + 10 - 10);
}

TEST_F(ShardTest, OrderReferencesAreScopedByProgram) {
  Program programs[2] = {make_program(), make_program()};
  programs[1].id = 2;
  FraudSet fraud(kReferencesMax, 1);
  Shard shard(0, programs, &fraud);
  for (uint32_t program : {1u, 2u}) {
    for (EventKind k : {EventKind::kEnroll, EventKind::kEarn}) {
      Event e = make_event(k, 7, k == EventKind::kEnroll ? "enroll-7" : "order-1",
                           k == EventKind::kEarn ? 1'000 : 0);
      e.program = program;
      out_.clear();
      shard.apply(e, kT0, &out_);
      ASSERT_EQ(out_.effects.size(), 1u);
      EXPECT_EQ(out_.effects[0].result, Result::kOk) << "program " << program;
    }
    EXPECT_TRUE(ledger_balances({&shard}, program));
  }
}

// ---- 5. dedup across two shards -----------------------------------------------------------------
TEST_F(ShardTest, SameOrderOnAnotherShardIsDuplicateOrderDependingOnTheWinnersClaim) {
  Shard other(1, std::span<const Program>(&program_, 1), fraud_.get());
  ASSERT_EQ(enroll(1, "enroll-1").result, Result::kOk);
  ASSERT_EQ(apply(make_event(EventKind::kEnroll, 2, "enroll-2"), &other).result, Result::kOk);
  Effect winner = earn(1, "order-1", 12'399);
  ASSERT_EQ(winner.result, Result::kOk);
  ASSERT_TRUE(has_flag(winner, kEffectClaimed));

  Effect loser = apply(make_event(EventKind::kEarn, 2, "order-1", 12'399), &other);
  EXPECT_EQ(loser.result, Result::kDuplicateOrder);
  EXPECT_EQ(loser.shard, 1);
  EXPECT_EQ(loser.depends_shard, 0);
  EXPECT_GE(loser.depends_seq, winner.seq);
  EXPECT_EQ(loser.points, 0);
  EXPECT_EQ(loser.state.available, bonus());
  EXPECT_EQ(other.stats(program_.id)->duplicates, 1u);
  // The loser's reference stays the winner's: a retry on shard 1 is refused again.
  EXPECT_EQ(apply(make_event(EventKind::kEarn, 2, "order-1", 12'399), &other).result,
            Result::kDuplicateOrder);
  EXPECT_TRUE(ledger_balances({shard_.get(), &other}, program_.id));
}

// Recovery re-enters checkpointed references in bulk: the same set as one by one, owners and
// days included, a reference given twice held once, and it stops where the table is full.
TEST(FraudSetBulkTest, ABulkLoadHoldsWhatALoadOneByOneHoldsAndStopsWhenFull) {
  constexpr uint64_t kCapacity = 1'000;
  std::vector<FraudSet::BulkClaim> claims;
  for (uint64_t i = 0; i < 1'300; ++i) {
    FraudSet::BulkClaim c;
    c.program = 1 + static_cast<uint32_t>(i % 3);
    c.ref = i % 10 == 9 ? claims[i / 2].ref : Ref128{i + 1, 0x5ca1e};  // every tenth: given before
    c.shard = static_cast<uint16_t>(i % 2);
    c.day = static_cast<uint16_t>(20'000 + i % 7);
    claims.push_back(c);
  }
  FraudSet one(kCapacity, 2), bulk(kCapacity, 2);
  for (const FraudSet::BulkClaim& c : claims) one.insert_unsynchronised(c.program, c.ref, c.shard, c.day);
  size_t done = bulk.insert_unsynchronised(std::span<const FraudSet::BulkClaim>(claims).first(500));
  EXPECT_EQ(done, 500u);
  done += bulk.insert_unsynchronised(std::span<const FraudSet::BulkClaim>(claims).subspan(500));
  EXPECT_LT(done, claims.size());  // full before the end
  EXPECT_EQ(bulk.size(), kCapacity);
  EXPECT_EQ(one.size(), bulk.size());
  for (size_t i = 0; i < claims.size(); ++i) {
    FraudSet::Owner a = one.find(claims[i].program, claims[i].ref);
    FraudSet::Owner b = bulk.find(claims[i].program, claims[i].ref);
    ASSERT_EQ(a.found, b.found) << i;
    EXPECT_EQ(a.shard, b.shard) << i;
    if (i < done) {
      EXPECT_TRUE(b.found) << i;
    }
  }
}

}  // namespace
}  // namespace tally
