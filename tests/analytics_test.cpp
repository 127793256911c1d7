// tally-analytics against a server on 127.0.0.1: its figures equal the engine's own totals
// exactly (issued, redeemed, clawed back, adjusted, in transit, outstanding, members) at the end
// of the stream and at each month end in business time, where the snapshot is what the server's
// totals were when the month closed; members per tier add up to the members; late records (dated
// in a closed month) are counted in the open one and said so; the money figure follows the
// point value; a trimmed log is refused rather than summed incompletely.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/program.h"
#include "tests/run_binary.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/program_analytics.h"

using namespace tally;
using namespace tally::net;

namespace {

constexpr uint32_t kProgram = 1;
constexpr uint32_t kPosKey = 11, kOperatorKey = 12, kReplicaKey = 14;

// The integer after "key": in a JSON line (the test's own reading, not the tool's code).
int64_t field(const std::string& line, const std::string& key) {
  size_t at = line.find("\"" + key + "\":");
  EXPECT_NE(at, std::string::npos) << key << " missing in " << line;
  if (at == std::string::npos) return INT64_MIN;
  return std::stoll(line.substr(at + key.size() + 3));
}

class AnalyticsTest : public ::testing::Test {
 protected:
  void SetUp() override { start(true); }
  void start(bool history_index) {
    stack_.reset();
    tally::testing::StackOptions o;
    o.keys = {tally::testing::test_key(kPosKey, kProgram, Role::kPos),
              tally::testing::test_key(kOperatorKey, kProgram, Role::kOperator),
              tally::testing::test_key(kReplicaKey, kProgram, Role::kReplica)};
    o.configure = [history_index](storage::LedgerOptions& lo) { lo.history.enabled = history_index; };
    stack_ = std::make_unique<tally::testing::ServerStack>(dir_.sub("data"), std::move(o));
  }
  void submit(uint32_t key, std::vector<Event> events) {
    Client c(stack_->client(key));
    std::vector<WireResult> r;
    ClientError e = c.submit(events, &r);
    ASSERT_FALSE(e) << e.message;
  }
  ProgramStats stats() {
    Client c(stack_->client(kPosKey));
    StatsRecord st;
    EXPECT_FALSE(c.stats(&st));
    return st.program;
  }
  static Event at(Event e, int64_t business_ms) {
    e.business_time_ms = business_ms;
    return e;
  }
  void expect_figures(const std::string& line, const ProgramStats& s) {
    EXPECT_EQ(field(line, "issued"), s.issued) << line;
    EXPECT_EQ(field(line, "redeemed"), s.redeemed) << line;
    EXPECT_EQ(field(line, "clawed_back"), s.clawed_back) << line;
    EXPECT_EQ(field(line, "adjusted"), s.adjusted) << line;
    EXPECT_EQ(field(line, "in_transit"), s.in_transit()) << line;
    EXPECT_EQ(field(line, "outstanding_points"), s.expected_balances()) << line;
    EXPECT_EQ(field(line, "members"), static_cast<int64_t>(s.members)) << line;
  }
  tally::testing::TempDir dir_{"tally-analytics-test"};
  std::unique_ptr<tally::testing::ServerStack> stack_;
};

}  // namespace

TEST_F(AnalyticsTest, FiguresEqualTheEnginesTotalsAtTheEndAndAtEachMonthEnd) {
  const int64_t now = stack_->server->clock_ms();
  const int64_t m0 = month_of(now);
  const int64_t two_ago = month_start_ms(m0 - 2) + kMsPerDay, last = month_start_ms(m0 - 1) + kMsPerDay;
  using tally::testing::event;
  // Two months ago: members join, earn and redeem.
  std::vector<Event> a;
  for (int m = 1; m <= 60; ++m) a.push_back(at(event(EventKind::kEnroll, m, 0, "enroll-" + std::to_string(m)), two_ago));
  for (int m = 1; m <= 60; ++m) a.push_back(at(event(EventKind::kEarn, m, 1000 + 250 * m, "a-" + std::to_string(m)), two_ago));
  for (int m = 1; m <= 60; m += 3) a.push_back(at(event(EventKind::kRedeem, m, 10, "ra-" + std::to_string(m)), two_ago));
  a.push_back(at(event(EventKind::kEarn, 1, 1250, "a-1"), two_ago));  // a retry: a replay, counted once
  submit(kPosKey, a);
  const ProgramStats end_of_two_ago = stats();
  // Last month: more of everything, refunds of older orders, adjustments, transfers, and a few
  // purchases an offline till dated two months ago (late records).
  std::vector<Event> b;
  for (int m = 1; m <= 60; ++m) b.push_back(at(event(EventKind::kEarn, m, 5000, "b-" + std::to_string(m)), last));
  for (int m = 2; m <= 60; m += 5) {
    Event rv = at(event(EventKind::kReverse, m, 0, "rev-" + std::to_string(m)), last);  // all that is left
    rv.target = reference_from_string("a-" + std::to_string(m));
    b.push_back(rv);
  }
  for (int m = 1; m <= 5; ++m) b.push_back(at(event(EventKind::kEarn, m, 700, "late-" + std::to_string(m)), two_ago));
  for (int m = 3; m <= 60; m += 7) {
    Event t = at(event(EventKind::kTransfer, m, 5, "t-" + std::to_string(m)), last);
    t.counterparty = m + 1;
    b.push_back(t);
  }
  submit(kPosKey, b);
  std::vector<Event> adj;
  for (int m = 1; m <= 4; ++m) {
    Event e = at(event(EventKind::kAdjust, m, m % 2 ? 25 : -5, "adj-" + std::to_string(m)), last);
    e.code = 1;
    adj.push_back(e);
  }
  submit(kOperatorKey, adj);
  const ProgramStats end_of_last = stats();
  // This month.
  std::vector<Event> c;
  for (int m = 1; m <= 60; m += 2) c.push_back(event(EventKind::kEarn, m, 999, "c-" + std::to_string(m)));
  submit(kPosKey, c);
  const ProgramStats now_stats = stats();
  ASSERT_GT(end_of_last.clawed_back, 0);
  ASSERT_GT(end_of_last.adjusted, 0);
  ASSERT_GT(now_stats.replays, 0u);

  std::string month_ends = dir_.sub("month-ends.jsonl");
  tally::testing::BinaryRun r = tally::testing::run_binary(
      TALLY_ANALYTICS,
      {"--port", std::to_string(stack_->server->port()), "--month-ends", month_ends, "--point-value", "1=0.5",
       "--active-days", "400"},
      {"TALLY_KEY=" + std::to_string(kReplicaKey), "TALLY_SECRET=" + tally::testing::test_secret(kReplicaKey)});
  ASSERT_EQ(r.status, 0) << r.err;
  // Now: the current figures.
  std::string current = r.out.substr(0, r.out.find('\n'));
  EXPECT_NE(current.find("\"period\":\"current\""), std::string::npos) << current;
  expect_figures(current, now_stats);
  EXPECT_EQ(field(current, "outstanding_money_minor"), now_stats.expected_balances() / 2);
  EXPECT_EQ(field(current, "active_members"), 60);
  int64_t tiers = 0;
  std::string per_tier = current.substr(current.find("\"members_per_tier\":{") + 20);
  for (size_t p = per_tier.find("\":"); p != std::string::npos && p < per_tier.find('}'); p = per_tier.find("\":", p + 1))
    tiers += std::stoll(per_tier.substr(p + 2));
  EXPECT_EQ(tiers, 60);
  // The month ends: as the server's totals were when each month closed.
  std::ifstream in(month_ends);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 2u) << r.err;
  EXPECT_NE(lines[0].find("\"period\":\"" + month_name(m0 - 2) + "\""), std::string::npos) << lines[0];
  expect_figures(lines[0], end_of_two_ago);
  EXPECT_EQ(field(lines[0], "as_of_ms"), month_start_ms(m0 - 1) - 1);
  EXPECT_NE(lines[1].find("\"period\":\"" + month_name(m0 - 1) + "\""), std::string::npos) << lines[1];
  expect_figures(lines[1], end_of_last);
  EXPECT_EQ(field(lines[1], "late_records"), 5) << "the offline till's purchases, dated in the closed month";
}

TEST_F(AnalyticsTest, ATrimmedLogIsRefusedNotSummedIncompletely) {
  start(/*history_index=*/false);
  std::vector<Event> e;
  for (int m = 1; m <= 200; ++m) e.push_back(tally::testing::event(EventKind::kEnroll, m, 0, "e-" + std::to_string(m)));
  submit(kPosKey, e);
  stack_->service->ledger().committer().request_checkpoint();
  ASSERT_TRUE(stack_->service->ledger().committer().wait_checkpoint(1));
  submit(kPosKey, {tally::testing::event(EventKind::kEarn, 1, 100, "after-trim")});
  ASSERT_GT(stack_->service->log_range().oldest_lsn, 1u);
  tally::testing::BinaryRun r = tally::testing::run_binary(
      TALLY_ANALYTICS, {"--port", std::to_string(stack_->server->port())},
      {"TALLY_KEY=" + std::to_string(kReplicaKey), "TALLY_SECRET=" + tally::testing::test_secret(kReplicaKey)});
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.err.find("incomplete"), std::string::npos) << r.err;
}

TEST(MonthTest, MonthsOfUtcTimes) {
  EXPECT_EQ(month_name(month_of(0)), "1970-01");
  const int64_t jan31_2027_end = 1801439999999;  // 2027-01-31T23:59:59.999Z
  EXPECT_EQ(month_name(month_of(jan31_2027_end)), "2027-01");
  EXPECT_EQ(month_name(month_of(jan31_2027_end + 1)), "2027-02");
  EXPECT_EQ(month_start_ms(month_of(jan31_2027_end + 1)), jan31_2027_end + 1);
  EXPECT_EQ(month_name(month_of(951782400000)), "2000-02");  // 2000-02-29T00:00Z, a leap day
}
