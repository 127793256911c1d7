// Behaviour of each operation on one shard: what a POS, an operator or a member relies on.
#include <gtest/gtest.h>

#include "engine/shard.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

class ShardTest : public ::testing::Test {
 protected:
  ShardTest() : program_(make_program()), fraud_(1000, 2), shard_(0, {&program_, 1}, &fraud_) {}

  static Program make_program() {
    Program p = default_program();
    p.accounts_max = 100;
    p.orders_max = 1000;
    p.holds_open_max = 10;
    p.events_per_minute_max = 0;
    return p;
  }

  Effect apply(Event e, int64_t now = kT0) {
    e.program = program_.id;
    out_.clear();
    shard_.apply(e, now, &out_);
    EXPECT_FALSE(out_.effects.empty());
    return out_.effects.back();
  }
  Effect enroll(uint64_t account, const char* ref) {
    Event e;
    e.kind = EventKind::kEnroll;
    e.account = account;
    e.ref = reference_from_string(ref);
    return apply(e);
  }
  Effect earn(uint64_t account, const char* ref, int64_t cents) {
    Event e;
    e.kind = EventKind::kEarn;
    e.account = account;
    e.ref = reference_from_string(ref);
    e.amount = cents;
    return apply(e);
  }

  Program program_;
  FraudSet fraud_;
  Shard shard_;
  ApplyOutput out_;
};

TEST_F(ShardTest, EnrollCreditsSignUpBonusAndEarnFloorsToWholeUnits) {
  Effect en = enroll(7, "enroll-7");
  ASSERT_EQ(en.result, Result::kOk);
  EXPECT_EQ(en.state.available, program_.signup_bonus_points);
  Effect ea = earn(7, "order-1", 12'399);  // 123.99 EUR at 1 point per EUR
  ASSERT_EQ(ea.result, Result::kOk);
  EXPECT_EQ(ea.points, 123);
  EXPECT_EQ(ea.state.available, program_.signup_bonus_points + 123);
}

}  // namespace
}  // namespace tally
