// Lots, pending points and expiry on one shard (docs/programs.md "Lots, pending points and expiry").
//
// Expected values are worked out from the rules as documented (1 point per 100 cents, a sign-up
// bonus, dates computed by hand from 2026-01-01), never copied from a run. Every test ends with
// the ledger invariant and the lot invariant checked (TearDown): the counters' outstanding points
// equal what the accounts hold (available + held + pending), and every account's lots add up to
// its available (when not owed) and pending points.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/shard.h"
#include "storage/log_codec.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z, a Thursday
constexpr int64_t kDay0 = kT0 / kMsPerDay;   // its day number (20454)

Ref128 ref(std::string_view id) { return reference_from_string(id); }

Program lot_program(LotPolicy lots) {
  Program p = default_program();
  p.accounts_max = 1000;
  p.orders_max = 10'000;
  p.holds_open_max = 10;
  p.events_per_minute_max = 0;
  p.points_per_day_max = 0;
  p.signup_bonus_points = 50;
  p.lots = lots;
  return p;
}

LotPolicy after_days(uint32_t days) {
  LotPolicy l;
  l.expiry = ExpiryKind::kDays;
  l.expiry_days = days;
  return l;
}

class LotsTest : public ::testing::Test {
 protected:
  void use(const Program& p) {
    shard_.reset();
    program_ = p;
    ASSERT_EQ(validate(program_), "");
    fraud_ = std::make_unique<FraudSet>(1 << 16, 2);
    shard_ = std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), fraud_.get());
    log_.clear();
  }
  void TearDown() override {
    if (!shard_) return;
    const ProgramStats& st = *shard_->stats(program_.id);
    int64_t held = 0;
    shard_->for_each_account(program_.id, [&](uint64_t id, const AccountState& a) {
      held += a.available + a.held + a.pending;
      if (!program_.lots.has_lots()) return;
      Statement s;
      ASSERT_TRUE(shard_->statement(program_.id, id, &s));
      int64_t spendable = 0, pending = 0;
      for (const LotLine& l : s.lots) (l.mature_day != 0 ? pending : spendable) += l.points;
      EXPECT_EQ(spendable, std::max<int64_t>(s.state.available, 0)) << "account " << id;
      EXPECT_EQ(pending, s.state.pending) << "account " << id;
    });
    EXPECT_EQ(st.expected_balances(), held) << "the counters and the accounts disagree";
  }

  // Applies `e` at `now_`; returns every effect it produced (expiries first, then its own).
  std::vector<Effect> apply_all(Event e) {
    e.program = program_.id;
    out_.clear();
    shard_->apply(e, now_, &out_);
    log_.insert(log_.end(), out_.effects.begin(), out_.effects.end());
    return out_.effects;
  }
  // The event's own effect.
  Effect apply(Event e) {
    std::vector<Effect> all = apply_all(e);
    for (auto it = all.rbegin(); it != all.rend(); ++it)
      if (it->event.kind == e.kind) return *it;
    ADD_FAILURE() << "no effect of kind " << to_string(e.kind);
    return {};
  }
  static Event make(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
    Event e{};
    e.kind = kind;
    e.account = account;
    e.amount = amount;
    if (!id.empty()) e.ref = ref(id);
    return e;
  }
  Effect enroll(uint64_t a) { return apply(make(EventKind::kEnroll, a, "enroll-" + std::to_string(a))); }
  Effect earn(uint64_t a, std::string_view id, int64_t cents, int64_t business_time_ms = 0) {
    Event e = make(EventKind::kEarn, a, id, cents);
    e.business_time_ms = business_time_ms;
    return apply(e);
  }
  Effect redeem(uint64_t a, std::string_view id, int64_t points) { return apply(make(EventKind::kRedeem, a, id, points)); }
  Effect reverse(uint64_t a, std::string_view id, std::string_view order, int64_t cents = 0) {
    Event e = make(EventKind::kReverse, a, id, cents);
    e.target = ref(order);
    return apply(e);
  }
  // Reads the account (which first applies whatever is due); returns every effect.
  std::vector<Effect> read(uint64_t a) { return apply_all(make(EventKind::kBalance, a, "")); }
  Statement statement(uint64_t a) {
    Statement s;
    EXPECT_TRUE(shard_->statement(program_.id, a, &s));
    return s;
  }
  AccountState state(uint64_t a) {
    AccountState s;
    EXPECT_TRUE(shard_->account(program_.id, a, &s));
    return s;
  }
  static int64_t day(int y, unsigned m, unsigned d) { return days_from_civil(y, m, d); }
  static int64_t at_day(int64_t day_number) { return day_number * kMsPerDay; }

  Program program_;
  std::unique_ptr<FraudSet> fraud_;
  std::unique_ptr<Shard> shard_;
  ApplyOutput out_;
  std::vector<Effect> log_;  // every effect, in order: what a durable log would hold
  int64_t now_ = kT0;
};

TEST_F(LotsTest, CivilDatesRoundTripAndKnownDaysAreRight) {
  EXPECT_EQ(days_from_civil(1970, 1, 1), 0);
  EXPECT_EQ(days_from_civil(2026, 1, 1), kDay0);
  EXPECT_EQ(format_day(kDay0), "2026-01-01");
  EXPECT_EQ(format_day(days_from_civil(2028, 2, 29)), "2028-02-29");
  EXPECT_EQ(days_from_civil(2028, 3, 1) - days_from_civil(2028, 2, 28), 2);  // a leap year
  EXPECT_EQ(days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28), 1);  // not one
  for (int64_t d = 0; d < 70'000; d += 13) {
    CivilDate c = civil_from_days(d);
    EXPECT_EQ(days_from_civil(c.year, c.month, c.day), d);
  }
}

TEST_F(LotsTest, ExpiryDaysFollowThePolicy) {
  EXPECT_EQ(expiry_day(after_days(30), kDay0), kDay0 + 30);
  LotPolicy eom;
  eom.expiry = ExpiryKind::kEndOfMonth;
  eom.expiry_months = 12;
  EXPECT_EQ(format_day(expiry_day(eom, day(2026, 1, 15))), "2027-01-31");
  EXPECT_EQ(format_day(expiry_day(eom, day(2026, 1, 31))), "2027-01-31");
  EXPECT_EQ(format_day(expiry_day(eom, day(2026, 2, 1))), "2027-02-28");
  EXPECT_EQ(format_day(expiry_day(eom, day(2027, 2, 10))), "2028-02-29");
  eom.expiry_months = 0;
  EXPECT_EQ(format_day(expiry_day(eom, day(2026, 12, 3))), "2026-12-31");
  EXPECT_EQ(expiry_day(LotPolicy{}, kDay0), kNeverDay);
}

TEST_F(LotsTest, EachCreditIsALotAndTheStatementListsItsExpiryDate) {
  LotPolicy eom;
  eom.expiry = ExpiryKind::kEndOfMonth;
  eom.expiry_months = 12;
  use(lot_program(eom));
  now_ = at_day(day(2026, 1, 15)) + 3'600'000;
  enroll(1);                      // 50 points, expire 2027-01-31
  earn(1, "o1", 12'000);          // 120 points, the same day: the same lot
  now_ = at_day(day(2026, 2, 3));
  earn(1, "o2", 3'000);           // 30 points, expire 2027-02-28
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 2u);
  EXPECT_EQ(format_day(s.lots[0].expiry_day), "2027-01-31");
  EXPECT_EQ(s.lots[0].points, 170);
  EXPECT_EQ(format_day(s.lots[1].expiry_day), "2027-02-28");
  EXPECT_EQ(s.lots[1].points, 30);
  EXPECT_EQ(s.state.available, 200);
}

TEST_F(LotsTest, PointsExpireAtTheEndOfTheirLastDayNotBefore) {
  use(lot_program(after_days(30)));
  enroll(1);
  earn(1, "o1", 1'000);  // 10 points; with the bonus, 60 points spendable through 2026-01-31
  EXPECT_EQ(format_day(statement(1).lots.at(0).expiry_day), "2026-01-31");
  now_ = at_day(kDay0 + 31) - 1;  // 2026-01-31T23:59:59.999Z
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 1u) << "nothing lapses on the last day";
  EXPECT_EQ(r[0].state.available, 60);
  now_ = at_day(kDay0 + 31);  // 2026-02-01T00:00:00Z
  r = read(1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].event.kind, EventKind::kExpire);
  EXPECT_EQ(r[0].event.code, static_cast<uint16_t>(ExpireReason::kLots));
  EXPECT_EQ(r[0].points, 60);
  EXPECT_EQ(r[0].state.available, 0);
  EXPECT_EQ(r[1].event.kind, EventKind::kBalance);
  EXPECT_EQ(shard_->stats(program_.id)->expired, 60);
  EXPECT_EQ(redeem(1, "r1", 1).result, Result::kInsufficientPoints);
}

TEST_F(LotsTest, RedeemingSpendsTheEarliestExpiringLotsFirst) {
  use(lot_program(after_days(30)));
  enroll(1);                // 50, expire day0+30
  now_ += 10 * kMsPerDay;
  earn(1, "o1", 10'000);    // 100, expire day0+40
  EXPECT_EQ(redeem(1, "r1", 70).state.available, 80);  // all 50 of the bonus, 20 of the purchase
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 1u);
  EXPECT_EQ(s.lots[0].expiry_day, kDay0 + 40);
  EXPECT_EQ(s.lots[0].points, 80);
  now_ = at_day(kDay0 + 31);  // the bonus lot's day has passed: nothing of it is left to lapse
  EXPECT_EQ(read(1).size(), 1u);
  now_ = at_day(kDay0 + 41);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].points, 80);
}

TEST_F(LotsTest, PendingPointsAreNotSpendableUntilTheReturnWindowEnds) {
  LotPolicy l = after_days(365);
  l.pending_days = 30;
  use(lot_program(l));
  enroll(1);
  Effect e = earn(1, "o1", 10'000);
  EXPECT_EQ(e.points, 100);
  EXPECT_EQ(e.state.pending, 100);
  EXPECT_EQ(e.state.available, 50);
  EXPECT_EQ(e.state.lifetime_earned, 150);
  EXPECT_EQ(redeem(1, "r1", 51).result, Result::kInsufficientPoints);
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 2u);
  EXPECT_EQ(s.lots[0].mature_day, kDay0 + 30);
  EXPECT_EQ(s.lots[0].expiry_day, kDay0 + 365);  // counted from the purchase, not from maturity
  EXPECT_EQ(s.lots[0].points, 100);
  now_ = at_day(kDay0 + 30) - 1;
  EXPECT_EQ(read(1).size(), 1u);
  now_ = at_day(kDay0 + 30);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].event.kind, EventKind::kMature);
  EXPECT_EQ(r[0].points, 100);
  EXPECT_EQ(r[0].state.available, 150);
  EXPECT_EQ(r[0].state.pending, 0);
  EXPECT_EQ(redeem(1, "r2", 150).result, Result::kOk);
}

TEST_F(LotsTest, ARefundInsideTheReturnWindowCancelsThePendingPoints) {
  LotPolicy l = after_days(365);
  l.pending_days = 30;
  use(lot_program(l));
  enroll(1);
  earn(1, "o1", 10'000);  // 100 pending
  earn(1, "o2", 4'000);   // 40 pending, the same day: the same pending lot
  now_ += 5 * kMsPerDay;
  Effect r = reverse(1, "ref1", "o1", 5'000);  // half the purchase: 50 points back
  EXPECT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 50);
  EXPECT_EQ(r.state.pending, 90);
  EXPECT_EQ(r.state.available, 50);  // the bonus is untouched
  EXPECT_EQ(shard_->stats(program_.id)->clawed_back, 50);
  now_ = at_day(kDay0 + 30);
  std::vector<Effect> m = read(1);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].points, 90);
  EXPECT_EQ(m[0].state.available, 140);
}

TEST_F(LotsTest, ARefundAfterPartOfTheLotWasSpentTakesTheRestAndLeavesTheMemberOwing) {
  use(lot_program(after_days(30)));
  enroll(1);               // bonus 50, expire day0+30
  now_ += 5 * kMsPerDay;
  earn(1, "o1", 10'000);   // 100, expire day0+35
  now_ += kMsPerDay;
  earn(1, "o2", 2'000);    // 20, expire day0+36
  EXPECT_EQ(redeem(1, "r1", 120).result, Result::kOk);  // 50 bonus + 70 of o1: 30 of o1 and 20 of o2 left
  Effect r = reverse(1, "ref1", "o1");
  EXPECT_EQ(r.points, 100);
  // o1's own lot gives its 30, then the earliest others (o2's 20), and 50 are owed.
  EXPECT_EQ(r.state.available, -50);
  EXPECT_TRUE(statement(1).lots.empty());
  Effect e = earn(1, "o3", 8'000);  // 80: pays the 50 owed, 30 left in a lot
  EXPECT_EQ(e.state.available, 30);
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 1u);
  EXPECT_EQ(s.lots[0].points, 30);
}

TEST_F(LotsTest, AHoldsPointsComeBackWithTheExpiryTheyHad) {
  use(lot_program(after_days(30)));
  enroll(1);                // 50, expire day0+30
  now_ += 10 * kMsPerDay;
  earn(1, "o1", 10'000);    // 100, expire day0+40
  EXPECT_EQ(apply(make(EventKind::kHold, 1, "h1", 60)).result, Result::kOk);  // takes the 50 and 10
  Event v = make(EventKind::kVoid, 1, "v1");
  v.target = ref("h1");
  EXPECT_EQ(apply(v).state.available, 150);
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 2u);
  EXPECT_EQ(s.lots[0].expiry_day, kDay0 + 30);  // all 60 back on the earliest day they came from
  EXPECT_EQ(s.lots[0].points, 60);
  EXPECT_EQ(s.lots[1].points, 90);
  // A hold that lapses gives its points back the same way.
  EXPECT_EQ(apply(make(EventKind::kHold, 1, "h2", 100)).result, Result::kOk);
  now_ += program_.hold_timeout_ms;
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r[0].event.kind, EventKind::kHoldExpire);
  EXPECT_EQ(statement(1).lots[0].expiry_day, kDay0 + 30);
  EXPECT_EQ(statement(1).state.available, 150);
}

TEST_F(LotsTest, InactivityLapsesEveryPointAfterThePeriod) {
  LotPolicy l;
  l.inactivity_days = 90;
  use(lot_program(l));  // no lots: inactivity alone
  enroll(1);
  earn(1, "o1", 10'000);
  now_ = at_day(kDay0 + 91) - 1;  // the 90th day after the last activity is still inside
  EXPECT_EQ(read(1).size(), 1u);
  EXPECT_EQ(statement(1).inactivity_lapse_day, kDay0 + 90);
  now_ = at_day(kDay0 + 91);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].event.kind, EventKind::kExpire);
  EXPECT_EQ(r[0].event.code, static_cast<uint16_t>(ExpireReason::kInactivity));
  EXPECT_EQ(r[0].points, 150);
  EXPECT_EQ(r[0].state.available, 0);
  // A read is not activity; an earn is, and starts a new period.
  earn(1, "o2", 1'000);
  now_ += 90 * kMsPerDay;
  EXPECT_EQ(read(1).size(), 1u);
}

TEST_F(LotsTest, InactivityTakesLotsAndPendingPointsAlike) {
  LotPolicy l = after_days(365);
  l.inactivity_days = 60;
  l.pending_days = 14;
  use(lot_program(l));
  enroll(1);
  earn(1, "o1", 10'000);
  now_ = at_day(kDay0 + 61);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 3u);  // the pending lot matured on day 14, then everything lapsed
  EXPECT_EQ(r[0].event.kind, EventKind::kMature);
  EXPECT_EQ(r[1].event.kind, EventKind::kExpire);
  EXPECT_EQ(r[1].points, 150);
  EXPECT_TRUE(statement(1).lots.empty());
}

TEST_F(LotsTest, ALateEventIsDatedByItsPurchaseOrByItsArrivalAsTheProgramSays) {
  use(lot_program(after_days(30)));
  enroll(1);
  now_ = at_day(kDay0 + 40);
  // Bought 35 days ago at an offline till: its points expired 5 days ago. Credited, then lapsed.
  std::vector<Effect> r = apply_all([&] {
    Event e = make(EventKind::kEarn, 1, "late1", 1'000);
    e.business_time_ms = at_day(kDay0 + 5);
    return e;
  }());
  ASSERT_GE(r.size(), 2u);
  EXPECT_EQ(r[r.size() - 2].event.kind, EventKind::kEarn);
  EXPECT_EQ(r.back().event.kind, EventKind::kExpire);
  EXPECT_EQ(r.back().points, 10);

  LotPolicy arrival = after_days(30);
  arrival.date_by_purchase = false;
  use(lot_program(arrival));
  now_ = kT0;
  enroll(1);
  now_ = at_day(kDay0 + 40);
  earn(1, "late1", 1'000, at_day(kDay0 + 5));
  EXPECT_EQ(statement(1).lots.back().expiry_day, kDay0 + 40 + 30);
}

TEST_F(LotsTest, TheSweepExpiresMembersNobodyTouches) {
  use(lot_program(after_days(30)));
  for (uint64_t a = 1; a <= 200; ++a) enroll(a);
  now_ = at_day(kDay0 + 31);
  // The runtime's clock tick: an idle shard's sweep checks kSweepSlotsPerTick account slots.
  std::vector<Effect> swept = apply_all(make(EventKind::kTick, 0, ""));
  ASSERT_EQ(swept.size(), 200u);
  for (const Effect& f : swept) {
    EXPECT_EQ(f.event.kind, EventKind::kExpire);
    EXPECT_EQ(f.points, 50);
    EXPECT_EQ(f.state.available, 0);
  }
  EXPECT_EQ(shard_->stats(program_.id)->expired, 200 * 50);
  now_ += kMsPerMinute;
  EXPECT_TRUE(apply_all(make(EventKind::kTick, 0, "")).empty()) << "one pass per day, and nothing is left";
  ApplyOutput out;
  EXPECT_EQ(shard_->sweep(1'000'000, &out), 0u);
}

// What recovery and followers rely on: re-applying the logged effects (Shard::apply_logged, as
// storage::Replayer does, one logged effect at a time, matching whatever it produces against the
// next logged ones) gives the same effects, whether they were due on a touch or found by the sweep.
TEST_F(LotsTest, ReplayingTheLogReproducesEveryLifecycleEffect) {
  LotPolicy l = after_days(20);
  l.pending_days = 7;
  l.inactivity_days = 45;
  use(lot_program(l));
  for (uint64_t a = 1; a <= 20; ++a) enroll(a);
  for (int d = 0; d < 120; ++d) {
    now_ = kT0 + d * kMsPerDay + 3'600'000;
    for (uint64_t a = 1; a <= 20; ++a) {
      if ((a + d) % 7 == 0) earn(a, "e" + std::to_string(a) + "-" + std::to_string(d), 1'000 + 100 * a);
      if ((a * 3 + d) % 11 == 0) redeem(a, "r" + std::to_string(a) + "-" + std::to_string(d), 5);
      if ((a + d) % 13 == 0 && d > 3)
        reverse(a, "x" + std::to_string(a) + "-" + std::to_string(d), "e" + std::to_string(a) + "-" + std::to_string(d - 3));
    }
    ApplyOutput out;
    shard_->sweep(100, &out);  // a partial sweep: the rest of the members meet it on a touch
    log_.insert(log_.end(), out.effects.begin(), out.effects.end());
  }
  size_t lifecycle = std::count_if(log_.begin(), log_.end(), [](const Effect& f) {
    return f.event.kind == EventKind::kExpire || f.event.kind == EventKind::kMature;
  });
  ASSERT_GT(lifecycle, 50u) << "the workload must exercise maturity and expiry";

  FraudSet fraud(1 << 16, 2);
  Shard replica(0, std::span<const Program>(&program_, 1), &fraud);
  std::vector<Effect> produced;
  size_t next = 0;
  for (const Effect& f : log_) {
    if (f.event.kind == EventKind::kBalance) continue;  // reads are not logged
    if (next == produced.size()) {
      ApplyOutput out;
      replica.apply_logged(f, &out);
      produced.insert(produced.end(), out.effects.begin(), out.effects.end());
    }
    ASSERT_LT(next, produced.size()) << "replay produced nothing for seq " << f.seq;
    ASSERT_TRUE(storage::equal_logged(produced[next], f))
        << "seq " << f.seq << " " << to_string(f.event.kind) << " replayed as " << to_string(produced[next].event.kind);
    ++next;
  }
  EXPECT_EQ(next, produced.size());
}

// A statement shows what is due as applied, without applying it: what the member's next read
// (which does apply it) then shows must be the same, lot for lot.
TEST_F(LotsTest, AStatementShowsWhatIsDueExactlyAsApplyingItDoes) {
  LotPolicy l = after_days(10);
  l.pending_days = 4;
  l.inactivity_days = 25;
  use(lot_program(l));
  for (uint64_t a = 1; a <= 12; ++a) enroll(a);
  int compared_due = 0;
  for (int d = 0; d < 80; ++d) {
    now_ = kT0 + d * kMsPerDay + 7'200'000;
    for (uint64_t a = 1; a <= 12; ++a) {
      const std::string day_id = std::to_string(a) + "-" + std::to_string(d);
      if ((a + d) % 3 == 0 && a != 12) earn(a, "e" + day_id, 500 + 100 * a);
      if ((a * 5 + d) % 7 == 0) redeem(a, "r" + day_id, 15);
      if ((a + d) % 9 == 0 && d > 2) reverse(a, "x" + day_id, "e" + std::to_string(a) + "-" + std::to_string(d - 2));
    }
    now_ += 12 * 3'600'000;
    for (uint64_t a = 1; a <= 12; ++a) {
      Statement view = statement(a);
      std::vector<Effect> r = read(a);  // applies what is due, then reads
      compared_due += r.size() > 1;
      Statement after = statement(a);
      const AccountState& got = r.back().state;
      ASSERT_EQ(view.state.available, got.available) << "account " << a << " day " << d;
      ASSERT_EQ(view.state.pending, got.pending) << "account " << a << " day " << d;
      ASSERT_EQ(view.state.held, got.held);
      ASSERT_EQ(view.lots.size(), after.lots.size()) << "account " << a << " day " << d;
      for (size_t i = 0; i < view.lots.size(); ++i) {
        EXPECT_EQ(view.lots[i].points, after.lots[i].points);
        EXPECT_EQ(view.lots[i].expiry_day, after.lots[i].expiry_day);
        EXPECT_EQ(view.lots[i].mature_day, after.lots[i].mature_day);
      }
    }
  }
  EXPECT_GT(compared_due, 100) << "the workload must leave maturities and expiries due at the reads";
}

TEST_F(LotsTest, ACheckpointKeepsTheLots) {
  LotPolicy l = after_days(30);
  l.pending_days = 5;
  use(lot_program(l));
  for (uint64_t a = 1; a <= 50; ++a) {
    enroll(a);
    earn(a, "o" + std::to_string(a), 100 * a);
  }
  std::vector<uint8_t> state = shard_->begin_checkpoint();
  while (!shard_->checkpoint_step(1000)) {
  }
  std::vector<uint8_t> slices = shard_->checkpoint_out();
  FraudSet fraud(1 << 16, 2);
  Shard restored(0, std::span<const Program>(&program_, 1), &fraud);
  restored.restore_state(state);
  std::span<const uint8_t> in(slices);
  SliceRecord r;
  while (next_slice_record(&in, &r)) restored.restore_slice(r.program, r.table, r.slice, r.bytes);
  restored.finish_restore();
  for (uint64_t a = 1; a <= 50; ++a) {
    Statement x = statement(a), y;
    ASSERT_TRUE(restored.statement(program_.id, a, &y));
    ASSERT_EQ(x.lots.size(), y.lots.size());
    for (size_t i = 0; i < x.lots.size(); ++i) {
      EXPECT_EQ(x.lots[i].points, y.lots[i].points);
      EXPECT_EQ(x.lots[i].expiry_day, y.lots[i].expiry_day);
      EXPECT_EQ(x.lots[i].mature_day, y.lots[i].mature_day);
    }
  }
}

TEST_F(LotsTest, AFullLotTableRefusesNewLotsButNotCreditsToExistingOnes) {
  Program p = lot_program(after_days(30));
  p.lots_max = 3;
  use(p);
  enroll(1);  // lot 1 (today's)
  now_ += kMsPerDay;
  enroll(2);  // lot 2
  now_ += kMsPerDay;
  enroll(3);  // lot 3: the table is full
  EXPECT_EQ(earn(3, "o1", 1'000).result, Result::kOk) << "today's lot of member 3 exists";
  now_ += kMsPerDay;
  EXPECT_EQ(earn(3, "o2", 1'000).result, Result::kCapacityExhausted);
  EXPECT_EQ(enroll(4).result, Result::kCapacityExhausted);
}

TEST_F(LotsTest, AMemberWithTheMostLotsHasNewPointsJoinTheLotBeforeTheirs) {
  use(lot_program(after_days(5000)));
  enroll(1);  // lot 1: the bonus
  for (int d = 1; d <= 905; ++d) {  // 905 more credits, each on its own day
    now_ = kT0 + d * kMsPerDay;
    ASSERT_EQ(earn(1, "o" + std::to_string(d), 100).result, Result::kOk);
  }
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 900u) << "a member holds at most 900 lots";
  EXPECT_EQ(s.state.available, 50 + 905);
  // The credits of days 900 to 905 had no lot of their own: they joined the last one there was,
  // which expires a few days before they would have.
  EXPECT_EQ(s.lots.back().expiry_day, kDay0 + 899 + 5000);
  EXPECT_EQ(s.lots.back().points, 1 + 6);
}

TEST_F(LotsTest, ACreditTooLargeForOneLotIsKeptWhole) {
  use(lot_program(after_days(30)));
  enroll(1);
  Event big = make(EventKind::kAdjust, 1, "big", int64_t{1} << 50);
  big.code = 1;
  ASSERT_EQ(apply(big).result, Result::kOk);
  Statement s = statement(1);
  ASSERT_EQ(s.lots.size(), 1u);  // the bonus and the adjustment: one day, one lot on the statement
  EXPECT_EQ(s.lots[0].points, (int64_t{1} << 50) + 50);
  EXPECT_EQ(redeem(1, "r", (int64_t{1} << 49) + 7).state.available, (int64_t{1} << 49) + 43);
  now_ = at_day(kDay0 + 31);
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].points, (int64_t{1} << 49) + 43);
}

TEST_F(LotsTest, ProgramsWithoutLotsBehaveAsBefore) {
  use(lot_program(LotPolicy{}));
  enroll(1);
  earn(1, "o1", 10'000);
  now_ += 10'000 * kMsPerDay;
  std::vector<Effect> r = read(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state.available, 150);
  ASSERT_EQ(statement(1).lots.size(), 1u) << "one lot that never expires";
  EXPECT_EQ(statement(1).lots[0].expiry_day, kNeverDay);
  EXPECT_EQ(statement(1).lots[0].points, 150);
}

}  // namespace
}  // namespace tally
