// The TCP server end to end over 127.0.0.1, on both back ends: every operation through the client
// library, authentication and roles, every malformed frame, limits and timeouts, retries that
// come back as replays (also across a restart of the server), ordered pipelined replies.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <thread>

#include "engine/program.h"
#include "net/backend.h"
#include "net/client.h"
#include "net/scram.h"
#include "net/tcp_server.h"
#include "tests/temp_dir.h"
#include "storage/log_codec.h"
#include "tests/test_server.h"
#include "tools/ledger_service.h"

using namespace tally;
using namespace tally::net;

namespace {

constexpr uint32_t kProgram = 1;
constexpr uint32_t kOtherProgram = 2;
constexpr uint32_t kPosKey = 11, kOperatorKey = 12, kReaderKey = 13, kOtherPosKey = 21;
ApiKey key(uint32_t id, uint32_t program, Role role) { return tally::testing::test_key(id, program, role); }

Program other_program() {
  Program p = default_program();
  p.id = kOtherProgram;
  p.name = "other";
  return p;
}

using tally::testing::event;
using tally::testing::raw_connect;
using tally::testing::ServerStack;
using tally::testing::submit_one;

// Reads frames until an error frame or the end of the stream (at most `timeout_ms`). Returns the
// error code (kNone if none came) and whether the server closed the connection.
std::pair<ErrorCode, bool> read_error(int fd, int64_t timeout_ms = 10'000) {
  FrameReader r(check_server_frame, {});
  uint8_t buf[4096];
  ErrorCode code = ErrorCode::kNone;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    FrameHeader h;
    std::span<const uint8_t> body;
    while (r.next(&h, &body) == FrameReader::Status::kFrame) {
      if (h.type == MsgType::kError) {
        std::string m;
        EXPECT_TRUE(decode_error(body, &code, &m));
      }
    }
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return {code, false};
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) return {code, false};
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return {code, true};
    r.feed({buf, static_cast<size_t>(n)});
  }
}

class ServerTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kUring) {
      std::string why;
      if (!uring_available(&why)) GTEST_SKIP() << "io_uring back end cannot run here: " << why;
    }
  }
  std::unique_ptr<ServerStack> start(ServerLimits limits = {}) {
    tally::testing::StackOptions o;
    o.backend = GetParam();
    o.limits = limits;
    o.keys = {key(kPosKey, kProgram, Role::kPos), key(kOperatorKey, kProgram, Role::kOperator),
              key(kReaderKey, kProgram, Role::kReader), key(kOtherPosKey, kOtherProgram, Role::kPos)};
    o.programs = {default_program(), other_program()};
    auto s = std::make_unique<ServerStack>(dir_.sub("data"), std::move(o));
    EXPECT_EQ(s->server->backend(), GetParam()) << s->server->backend_note();
    return s;
  }
  tally::testing::TempDir dir_{"tally-server-test"};
};

std::string backend_name(const ::testing::TestParamInfo<BackendKind>& info) {
  return info.param == BackendKind::kAsio ? "Asio" : "IoUring";
}

}  // namespace

TEST_P(ServerTest, EveryOperationThroughTheClient) {
  auto s = start();
  Client pos(s->client(kPosKey));
  Client op(s->client(kOperatorKey));
  ASSERT_FALSE(pos.connect());
  ASSERT_EQ(pos.session()->program, kProgram);
  ASSERT_EQ(pos.session()->role, Role::kPos);

  Program p = default_program();
  WireResult r = submit_one(pos, event(EventKind::kEnroll, 1, 0, "enroll-1"));
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.available, p.signup_bonus_points);
  ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 2, 0, "enroll-2")).result, Result::kOk);

  r = submit_one(pos, event(EventKind::kEarn, 1, 12'345, "order-1"));  // 123.45 EUR at 1 point per EUR
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 123);
  int64_t balance = p.signup_bonus_points + 123;
  EXPECT_EQ(r.available, balance);

  Event award = event(EventKind::kAward, 1, 0, "review-1");
  award.code = static_cast<uint16_t>(ActionKind::kReview);
  r = submit_one(pos, award);
  ASSERT_EQ(r.result, Result::kOk);
  balance += p.actions[static_cast<size_t>(ActionKind::kReview)].points;
  EXPECT_EQ(r.available, balance);

  r = submit_one(pos, event(EventKind::kRedeem, 1, 20, "redeem-1"));
  ASSERT_EQ(r.result, Result::kOk);
  balance -= 20;
  EXPECT_EQ(r.available, balance);

  r = submit_one(pos, event(EventKind::kHold, 1, 30, "hold-1"));
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.held, 30);
  EXPECT_EQ(r.available, balance - 30);
  Event capture = event(EventKind::kCapture, 1, 0, "capture-1");
  capture.target = reference_from_string("hold-1");
  r = submit_one(pos, capture);
  ASSERT_EQ(r.result, Result::kOk);
  balance -= 30;
  EXPECT_EQ(r.held, 0);
  EXPECT_EQ(r.available, balance);

  ASSERT_EQ(submit_one(pos, event(EventKind::kHold, 1, 10, "hold-2")).result, Result::kOk);
  Event vd = event(EventKind::kVoid, 1, 0, "void-2");
  vd.target = reference_from_string("hold-2");
  r = submit_one(pos, vd);
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.available, balance);

  Event rev = event(EventKind::kReverse, 1, 0, "refund-1");
  rev.target = reference_from_string("order-1");
  r = submit_one(pos, rev);
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 123);  // points clawed back (docs/engine.md)
  balance -= 123;
  EXPECT_EQ(r.available, balance);

  Event adj = event(EventKind::kAdjust, 1, 7, "adjust-1");
  adj.code = 1;
  EXPECT_EQ(submit_one(pos, adj).result, Result::kForbidden);  // a pos key may not adjust
  r = submit_one(op, adj);
  ASSERT_EQ(r.result, Result::kOk);
  balance += 7;

  Event tr = event(EventKind::kTransfer, 1, 5, "gift-1");
  tr.counterparty = 2;
  r = submit_one(pos, tr);
  ASSERT_EQ(r.result, Result::kOk);
  balance -= 5;
  EXPECT_EQ(r.available, balance);

  r = submit_one(pos, event(EventKind::kBalance, 1, 0, ""));
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.available, balance);

  // The statement, newest first, and the story of order-1 (the earn, then its refund).
  std::vector<HistoryEntry> h;
  ASSERT_FALSE(pos.history(0, 1, 100, LogPos{UINT64_MAX, UINT32_MAX}, &h));
  ASSERT_GE(h.size(), 10u);
  EXPECT_EQ(h.front().kind, EventKind::kTransfer);
  EXPECT_EQ(h.back().kind, EventKind::kEnroll);
  std::vector<HistoryEntry> two;
  ASSERT_FALSE(pos.history(0, 1, 2, LogPos{UINT64_MAX, UINT32_MAX}, &two));
  ASSERT_EQ(two.size(), 2u);
  std::vector<HistoryEntry> next;
  ASSERT_FALSE(pos.history(0, 1, 2, two.back().at, &next));
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0].at, h[2].at);  // paging continues where the last page ended

  std::vector<HistoryEntry> story;
  ASSERT_FALSE(pos.lookup(0, reference_from_string("order-1"), &story));
  ASSERT_EQ(story.size(), 2u);
  EXPECT_EQ(story[0].kind, EventKind::kEarn);
  EXPECT_EQ(story[1].kind, EventKind::kReverse);
  EXPECT_EQ(story[1].points, 123);

  // The audit trail: every logged effect names the key that sent it, the adjustment its reason.
  int adjusts = 0, earns = 0;
  s->service->ledger().store().scan(1, [&](uint64_t, std::span<const uint8_t> bytes) {
    std::vector<Effect> records;
    storage::BatchHeader bh;
    EXPECT_EQ(storage::decode_batch(bytes, &bh, &records), storage::DecodeError::kOk);
    for (const Effect& f : records) {
      if (f.event.kind == EventKind::kAdjust && f.result == Result::kOk) {
        ++adjusts;
        EXPECT_EQ(f.event.key_id, kOperatorKey);
        EXPECT_EQ(f.event.code, 1);
      }
      if (f.event.kind == EventKind::kEarn) {
        ++earns;
        EXPECT_EQ(f.event.key_id, kPosKey);
      }
    }
    return true;
  });
  EXPECT_EQ(adjusts, 1);
  EXPECT_EQ(earns, 1);
}

// The statement over the wire: what the member's shard holds, lot by lot, with their days.
TEST_P(ServerTest, AStatementListsPendingAndSpendableLotsWithTheirDays) {
  tally::testing::StackOptions o;
  o.backend = GetParam();
  o.keys = {key(kPosKey, kProgram, Role::kPos)};
  Program p = default_program();
  p.lots.expiry = ExpiryKind::kDays;
  p.lots.expiry_days = 365;
  p.lots.pending_days = 30;
  p.membership_days = 30;
  o.programs = {p};
  ServerStack s(dir_.sub("data"), std::move(o));
  Client pos(s.client(kPosKey));
  ASSERT_FALSE(pos.connect());
  WireResult en = submit_one(pos, event(EventKind::kEnroll, 7, 0, "enroll-7"));
  ASSERT_EQ(en.result, Result::kOk);
  WireResult earn = submit_one(pos, event(EventKind::kEarn, 7, 10'000, "order-7"));  // 100 points, pending
  ASSERT_EQ(earn.result, Result::kOk);
  EXPECT_EQ(earn.available, p.signup_bonus_points);

  StatementReply st;
  ASSERT_FALSE(pos.statement(0, 7, &st));
  ASSERT_EQ(st.result, Result::kOk);
  EXPECT_EQ(st.statement.state.available, p.signup_bonus_points);
  EXPECT_EQ(st.statement.state.pending, 100);
  EXPECT_GE(st.statement.as_of_ms, earn.time_ms);
  ASSERT_EQ(st.statement.lots.size(), 2u);
  const int64_t earn_day = local_day(p, earn.time_ms), enroll_day = local_day(p, en.time_ms);
  EXPECT_EQ(st.statement.lots[0].points, 100);
  EXPECT_EQ(st.statement.lots[0].mature_day, earn_day + 30);
  EXPECT_EQ(st.statement.lots[0].expiry_day, earn_day + 365);
  EXPECT_EQ(st.statement.lots[1].points, p.signup_bonus_points);
  EXPECT_EQ(st.statement.lots[1].mature_day, 0);
  EXPECT_EQ(st.statement.lots[1].expiry_day, enroll_day + 365);

  EXPECT_EQ(st.statement.state.member_until, 0);

  WireResult sub = submit_one(pos, event(EventKind::kMembership, 7, 0, "sub-7"));
  ASSERT_EQ(sub.result, Result::kOk);
  ASSERT_FALSE(pos.statement(0, 7, &st));
  EXPECT_EQ(st.statement.state.member_until, local_day(p, sub.time_ms) + 29);
  EXPECT_TRUE(st.statement.state.flags & kAccountPaidMember);

  ASSERT_FALSE(pos.statement(0, 8, &st));
  EXPECT_EQ(st.result, Result::kAccountNotFound);
  EXPECT_TRUE(st.statement.lots.empty());
}

// Tiers over a calendar year over the wire: the purchase reaching silver upgrades at once and the
// bonus is credited; the statement says how long the tier lasts without more qualifying points,
// and the stamps the purchase put on the program's card.
TEST_P(ServerTest, AnUpgradeCreditsItsBonusAndTheStatementSaysHowLongTheTierLasts) {
  tally::testing::StackOptions o;
  o.backend = GetParam();
  o.keys = {key(kPosKey, kProgram, Role::kPos)};
  Program p = default_program();
  p.tiers[1].bonus_points = 100;  // silver at 1000 points
  p.tier_policy.period = TierPeriod::kCalendarYear;
  p.tier_policy.grace_days = 10;
  p.stamp_card_count = 1;
  p.stamp_cards[0] = {"visits", 3, 0, 30};
  o.programs = {p};
  ServerStack s(dir_.sub("data"), std::move(o));
  Client pos(s.client(kPosKey));
  ASSERT_FALSE(pos.connect());
  ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 7, 0, "enroll-7")).result, Result::kOk);
  WireResult earn = submit_one(pos, event(EventKind::kEarn, 7, 100'000, "order-7"));  // 1000 points at x1
  ASSERT_EQ(earn.result, Result::kOk);
  EXPECT_EQ(earn.tier, 1);
  StatementReply st;
  ASSERT_FALSE(pos.statement(0, 7, &st));
  ASSERT_EQ(st.result, Result::kOk);
  EXPECT_EQ(st.statement.state.tier, 1);
  EXPECT_EQ(st.statement.state.qualifying, 1000);
  EXPECT_EQ(st.statement.state.available, p.signup_bonus_points + 1000 + 100) << "the bonus is credited";
  // Reached this year: kept through next year and the grace days of the year after.
  const CivilDate today = civil_from_days(local_day(p, earn.time_ms));
  EXPECT_EQ(st.statement.tier_until_day, days_from_civil(today.year + 2, 1, 1) + 10 - 1);
  EXPECT_EQ(st.statement.stamps[0], 1) << "the purchase stamped the card";
  EXPECT_TRUE(earn.flags & kEffectStamped);
}

TEST_P(ServerTest, RetryIsAReplayAndAReusedOrderIdIsADuplicate) {
  auto s = start();
  Client pos(s->client(kPosKey));
  ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 5, 0, "e5")).result, Result::kOk);
  WireResult first = submit_one(pos, event(EventKind::kEarn, 5, 10'000, "order-77"));
  ASSERT_EQ(first.result, Result::kOk);
  WireResult again = submit_one(pos, event(EventKind::kEarn, 5, 10'000, "order-77"));
  EXPECT_EQ(again.result, Result::kOk);
  EXPECT_TRUE(again.flags & kEffectReplay);
  EXPECT_EQ(again.points, first.points);
  WireResult other = submit_one(pos, event(EventKind::kEarn, 5, 99'999, "order-77"));
  EXPECT_EQ(other.result, Result::kDuplicateOrder);
  EXPECT_EQ(submit_one(pos, event(EventKind::kBalance, 5, 0, "")).available, first.available);
}

TEST_P(ServerTest, StatsCountWhatTheRepliesSaidAndSurviveARestart) {
  auto s = start();
  Client pos(s->client(kPosKey));
  Client reader(s->client(kReaderKey));
  StatsRecord before;
  ASSERT_FALSE(reader.stats(&before));
  int64_t issued = 0, redeemed = 0;
  uint64_t events = 0, duplicates = 0, replays = 0;
  auto tally_reply = [&](const WireResult& r, EventKind kind) {
    ++events;
    if (r.result == Result::kDuplicateOrder) ++duplicates;
    if (r.flags & kEffectReplay) ++replays;
    if (r.result != Result::kOk || (r.flags & kEffectReplay)) return;
    if (kind == EventKind::kRedeem) redeemed += r.points;  // what it moved, unsigned per kind
    else issued += r.points;
  };
  for (uint64_t a = 21; a <= 23; ++a) tally_reply(submit_one(pos, event(EventKind::kEnroll, a, 0, "enroll-" + std::to_string(a))), EventKind::kEnroll);
  tally_reply(submit_one(pos, event(EventKind::kEarn, 21, 12'345, "s-1")), EventKind::kEarn);
  tally_reply(submit_one(pos, event(EventKind::kEarn, 22, 777, "s-2")), EventKind::kEarn);
  tally_reply(submit_one(pos, event(EventKind::kEarn, 22, 777, "s-2")), EventKind::kEarn);     // a retry
  tally_reply(submit_one(pos, event(EventKind::kEarn, 23, 5'000, "s-2")), EventKind::kEarn);   // a reused order ID
  tally_reply(submit_one(pos, event(EventKind::kRedeem, 21, 40, "s-3")), EventKind::kRedeem);
  tally_reply(submit_one(pos, event(EventKind::kRedeem, 23, 1'000'000, "s-4")), EventKind::kRedeem);  // too many
  ASSERT_EQ(duplicates, 1u);
  ASSERT_EQ(replays, 1u);
  int64_t balances = 0;
  for (uint64_t a = 21; a <= 23; ++a) balances += submit_one(pos, event(EventKind::kBalance, a, 0, "")).available;

  StatsRecord after;
  ASSERT_FALSE(reader.stats(&after));  // another connection: every reply above was sent first
  EXPECT_EQ(after.program.members - before.program.members, 3u);
  EXPECT_EQ(after.program.issued - before.program.issued, issued);
  EXPECT_EQ(after.program.redeemed - before.program.redeemed, redeemed);
  EXPECT_EQ(after.program.duplicates - before.program.duplicates, duplicates);
  EXPECT_EQ(after.program.replays - before.program.replays, replays);
  EXPECT_EQ(after.program.events - before.program.events, events);  // balance reads not counted
  EXPECT_EQ(after.program.expected_balances(), balances);
  EXPECT_GE(after.log.records - before.log.records, events);
  EXPECT_GT(after.log.commits, before.log.commits);
  EXPECT_GT(after.log.durable_lsn, before.log.durable_lsn);
  EXPECT_GE(after.log.records_per_commit_max, 1u);
  // Another program's key sees its own program only.
  Client other(s->client(kOtherPosKey));
  StatsRecord theirs;
  ASSERT_FALSE(other.stats(&theirs));
  EXPECT_EQ(theirs.program.members, 0u);
  EXPECT_EQ(theirs.program.issued, 0);

  // The totals are the ledger's: a restart keeps them (the log figures start again).
  s->stop();
  s = start();
  Client again(s->client(kReaderKey));
  StatsRecord restarted;
  ASSERT_FALSE(again.stats(&restarted));
  EXPECT_EQ(restarted.program.issued, after.program.issued);
  EXPECT_EQ(restarted.program.redeemed, after.program.redeemed);
  EXPECT_EQ(restarted.program.members, after.program.members);
  EXPECT_EQ(restarted.log.commits, 0u);
}

TEST_P(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto s = start();
  ClientError e;
  std::optional<Connection> c = Connection::open(s->client(kPosKey), &e);
  ASSERT_TRUE(c) << e.message;
  std::vector<uint64_t> ids;
  for (uint64_t a = 1; a <= 200; ++a) {
    uint64_t id;
    std::vector<Event> batch = {event(EventKind::kEnroll, a, 0, "pe" + std::to_string(a)),
                                event(EventKind::kEarn, a, 100 * static_cast<int64_t>(a), "po" + std::to_string(a))};
    ASSERT_FALSE(c->send_events(batch, &id));
    ids.push_back(id);
    if (a % 50 == 0) {
      Query q;
      q.account = a;
      q.limit = 10;
      ASSERT_FALSE(c->send_history(q, &id));
      ids.push_back(id);
    }
  }
  for (uint64_t want : ids) {
    Reply r;
    ASSERT_FALSE(c->receive(&r, 20'000));
    ASSERT_EQ(r.request_id, want);
    if (r.type == MsgType::kEntries) {
      // Run after the earlier requests of this connection were durable: it sees them.
      ASSERT_EQ(r.entries.size(), 2u);
      EXPECT_EQ(r.entries[0].kind, EventKind::kEarn);
    } else {
      ASSERT_EQ(r.results.size(), 2u);
      EXPECT_EQ(r.results[0].result, Result::kOk);
      EXPECT_EQ(r.results[1].result, Result::kOk);
    }
  }
}

TEST_P(ServerTest, AuthenticationFailuresAreRefusedLoggedAndRateLimited) {
  ServerLimits limits;
  limits.auth_failures_per_minute_max = 3;
  auto s = start(limits);
  ClientOptions wrong = s->client(kPosKey);
  wrong.secret = "not-the-secret";
  ClientError e;
  EXPECT_FALSE(Connection::open(wrong, &e));
  EXPECT_EQ(e.kind, ClientError::Kind::kAuth);
  EXPECT_EQ(e.server_code, ErrorCode::kAuthFailed);
  ClientOptions unknown = s->client(999);
  EXPECT_FALSE(Connection::open(unknown, &e));
  EXPECT_EQ(e.server_code, ErrorCode::kAuthFailed);
  EXPECT_FALSE(Connection::open(wrong, &e));
  // The fourth attempt from this address within the minute is refused before any handshake,
  // even with the right secret.
  EXPECT_FALSE(Connection::open(s->client(kPosKey), &e));
  EXPECT_EQ(e.server_code, ErrorCode::kTooManyFailures);
  EXPECT_EQ(s->server->stats().auth_failures, 3u);
  EXPECT_EQ(s->logged("failed handshake from 127.0.0.1"), 3);
}

TEST_P(ServerTest, EventsOutsideTheKeysProgramOrRoleAreForbidden) {
  auto s = start();
  Client pos(s->client(kPosKey));
  Client reader(s->client(kReaderKey));
  Client other(s->client(kOtherPosKey));
  ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 9, 0, "e9")).result, Result::kOk);
  // In one frame: an event of program 2 beside one of program 1: only the first is refused.
  std::vector<Event> mixed = {event(EventKind::kEarn, 9, 500, "x-1", kOtherProgram), event(EventKind::kEarn, 9, 500, "x-2")};
  std::vector<WireResult> r;
  ASSERT_FALSE(pos.submit(mixed, &r));
  EXPECT_EQ(r[0].result, Result::kForbidden);
  EXPECT_EQ(r[0].seq, 0u);  // decided by the server, never reached the engine
  EXPECT_EQ(r[1].result, Result::kOk);
  EXPECT_EQ(submit_one(reader, event(EventKind::kEarn, 9, 500, "x-3")).result, Result::kForbidden);
  EXPECT_EQ(submit_one(reader, event(EventKind::kBalance, 9, 0, "")).result, Result::kOk);
  EXPECT_EQ(submit_one(other, event(EventKind::kBalance, 9, 0, "", kProgram)).result, Result::kForbidden);
  Event internal = event(EventKind::kTransferIn, 9, 500, "x-4");
  EXPECT_EQ(submit_one(pos, internal).result, Result::kInvalidKind);
  // A query into another program is refused and the connection closed.
  std::vector<HistoryEntry> h;
  ClientError e = other.history(kProgram, 9, 10, LogPos{UINT64_MAX, UINT32_MAX}, &h);
  EXPECT_EQ(e.server_code, ErrorCode::kForbidden);
}

TEST_P(ServerTest, AProgramOverItsQuotaIsAnsweredBusy) {
  ServerLimits limits;
  limits.program_inflight_events_max = 2;
  auto s = start(limits);
  Client pos(s->client(kPosKey));
  // Three events for the engine in one frame exceed the two the program may have in flight; the
  // forbidden one is decided by the server and takes no quota.
  std::vector<Event> three = {event(EventKind::kEnroll, 20, 0, "q1"), event(EventKind::kEnroll, 21, 0, "q2"),
                              event(EventKind::kEnroll, 22, 0, "q3"), event(EventKind::kEnroll, 23, 0, "q4", kOtherProgram)};
  std::vector<WireResult> r;
  ASSERT_FALSE(pos.submit(three, &r));
  EXPECT_EQ(r[0].result, Result::kBusy);
  EXPECT_EQ(r[1].result, Result::kBusy);
  EXPECT_EQ(r[2].result, Result::kBusy);
  EXPECT_EQ(r[3].result, Result::kForbidden);
  EXPECT_EQ(s->server->stats().busy_events, 3u);
  // Within the quota the same events go through (nothing of the busy frame was applied).
  std::vector<Event> two(three.begin(), three.begin() + 2);
  ASSERT_FALSE(pos.submit(two, &r));
  EXPECT_EQ(r[0].result, Result::kOk);
  EXPECT_EQ(r[1].result, Result::kOk);
  EXPECT_FALSE(r[0].flags & kEffectReplay);
}

TEST_P(ServerTest, RevokedKeyStopsWorkingAtOnce) {
  auto s = start();
  Client pos(s->client(kPosKey));
  ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 3, 0, "e3")).result, Result::kOk);
  s->server->set_keys({key(kOperatorKey, kProgram, Role::kOperator)});
  std::vector<WireResult> r;
  Event e = event(EventKind::kBalance, 3, 0, "");
  ClientError err = pos.submit(std::span(&e, 1), &r);
  EXPECT_TRUE(err);
  EXPECT_EQ(err.server_code, ErrorCode::kAuthFailed);
}

// Every malformed frame: an error naming the problem, the connection closed, nothing applied,
// and another client served as before.
TEST_P(ServerTest, MalformedFramesAreNamedAndOthersAreUnaffected) {
  auto s = start();
  Client bystander(s->client(kPosKey));
  ASSERT_EQ(submit_one(bystander, event(EventKind::kEnroll, 4, 0, "e4")).result, Result::kOk);

  std::vector<uint8_t> ev_body(kEventRecordBytes);
  encode_event(ev_body.data(), event(EventKind::kEarn, 4, 100'000, "evil-1"));
  std::vector<uint8_t> good;
  append_frame(good, MsgType::kEvents, 1, ev_body, 1);

  struct Case {
    const char* name;
    std::function<std::vector<uint8_t>()> bytes;
    ErrorCode want;
    bool authenticate;
  };
  auto patch = [&](size_t off, uint8_t v, bool rehash) {
    return [&good, off, v, rehash] {
      std::vector<uint8_t> b = good;
      b[off] = v;
      if (rehash) {
        FrameHeader h;
        h.type = static_cast<MsgType>(b[5]);
        h.version = b[4];
        h.request_id = 1;
        h.body_bytes = static_cast<uint32_t>(b[16] | b[17] << 8 | b[18] << 16 | b[19] << 24);
        h.record_count = static_cast<uint32_t>(b[20] | b[21] << 8 | b[22] << 16 | b[23] << 24);
        h.body_hash = body_hash(std::span(b).subspan(kHeaderBytes));
        encode_header(b.data(), h);
      }
      return b;
    };
  };
  std::vector<Case> cases = {
      {"bad magic", patch(0, 'X', false), ErrorCode::kBadMagic, true},
      {"bad header checksum", patch(9, 0x77, false), ErrorCode::kBadHeaderChecksum, true},
      {"other version", patch(4, 2, true), ErrorCode::kUnsupportedVersion, true},
      {"bad body checksum", patch(kHeaderBytes + 40, 0x55, false), ErrorCode::kBadBodyChecksum, true},
      {"wrong record count", patch(20, 2, true), ErrorCode::kBadRecordCount, true},
      {"unknown type", patch(5, 0x66, true), ErrorCode::kUnknownType, true},
      {"oversized", [] {
         std::vector<uint8_t> b(kHeaderBytes);
         FrameHeader h;
         h.type = MsgType::kEvents;
         h.body_bytes = 96u * 100'000;
         h.record_count = 100'000;
         encode_header(b.data(), h);
         return b;
       }, ErrorCode::kFrameTooLarge, true},
      {"reserved field set", patch(kHeaderBytes + 90, 1, true), ErrorCode::kBadRecord, true},
      {"events before the handshake", [&] { return good; }, ErrorCode::kUnexpectedMessage, false},
      // Before the handshake only small frames are read: no unauthenticated peer makes the
      // server buffer a large one.
      {"a large frame before the handshake", [] {
         std::vector<uint8_t> b(kHeaderBytes);
         FrameHeader h;
         h.type = MsgType::kEvents;
         h.body_bytes = 96u * 1000;
         h.record_count = 1000;
         encode_header(b.data(), h);
         return b;
       }, ErrorCode::kFrameTooLarge, false},
      {"truncated", [&] {
         return std::vector<uint8_t>(good.begin(), good.begin() + 70);
       }, ErrorCode::kTruncated, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int fd;
    std::optional<Connection> conn;
    if (c.authenticate) {
      ClientError e;
      conn = Connection::open(s->client(kPosKey), &e);
      ASSERT_TRUE(conn) << e.message;
      fd = conn->fd();
    } else {
      fd = raw_connect(s->server->port());
      ASSERT_GE(fd, 0);
    }
    std::vector<uint8_t> b = c.bytes();
    ASSERT_EQ(send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
    if (c.want == ErrorCode::kTruncated) shutdown(fd, SHUT_WR);
    auto [code, closed] = read_error(fd);
    EXPECT_EQ(code, c.want) << to_string(code);
    EXPECT_TRUE(closed);
    if (!c.authenticate) close(fd);
  }
  // Nothing of it reached the engine: the evil order was never credited, and the bystander's
  // connection still works.
  WireResult b = submit_one(bystander, event(EventKind::kBalance, 4, 0, ""));
  EXPECT_EQ(b.available, default_program().signup_bonus_points);
  std::vector<HistoryEntry> story;
  ASSERT_FALSE(bystander.lookup(0, reference_from_string("evil-1"), &story));
  EXPECT_TRUE(story.empty());
}

TEST_P(ServerTest, SlowClientsAreDroppedByTheirTimeouts) {
  ServerLimits limits;
  limits.handshake_timeout_ms = 300;
  limits.frame_timeout_ms = 300;
  auto s = start(limits);
  // Connects and says nothing: the handshake timeout.
  int quiet = raw_connect(s->server->port());
  EXPECT_EQ(read_error(quiet).first, ErrorCode::kTimeout);
  close(quiet);
  // Authenticates, then sends half a header and stalls (slow loris).
  ClientError e;
  std::optional<Connection> c = Connection::open(s->client(kPosKey), &e);
  ASSERT_TRUE(c) << e.message;
  std::vector<uint8_t> half(20, 0);
  ASSERT_FALSE(c->send_raw(half));
  auto [code, closed] = read_error(c->fd());
  EXPECT_EQ(code, ErrorCode::kTimeout);
  EXPECT_TRUE(closed);
}

TEST_P(ServerTest, AnIdleConnectionIsClosedButABusyOneIsNot) {
  ServerLimits limits;
  limits.idle_timeout_ms = 400;
  auto s = start(limits);
  ClientError e;
  std::optional<Connection> idle = Connection::open(s->client(kPosKey), &e);
  ASSERT_TRUE(idle) << e.message;
  EXPECT_EQ(read_error(idle->fd()).first, ErrorCode::kTimeout);
  // A connection that keeps sending is never idle, however long it lives.
  Client busy(s->client(kPosKey));
  ASSERT_FALSE(busy.connect());
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1'200);
  uint64_t n = 0;
  while (std::chrono::steady_clock::now() < until) {
    EXPECT_EQ(submit_one(busy, event(EventKind::kBalance, 1, 0, "")).result, Result::kAccountNotFound);
    ++n;
  }
  EXPECT_EQ(busy.reconnects(), 0u) << "after " << n << " requests";
}

TEST_P(ServerTest, ConnectionLimitRefusesTheNextOne) {
  ServerLimits limits;
  limits.connections_max = 2;
  auto s = start(limits);
  ClientError e;
  std::optional<Connection> a = Connection::open(s->client(kPosKey), &e);
  std::optional<Connection> b = Connection::open(s->client(kPosKey), &e);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(Connection::open(s->client(kPosKey), &e));
  EXPECT_EQ(e.server_code, ErrorCode::kTooManyConnections);
  a->close();
  // Once the server has seen that one close, there is room again.
  ASSERT_TRUE(s->server->wait_open_at_most(1, 10'000));
  std::optional<Connection> c = Connection::open(s->client(kPosKey), &e);
  EXPECT_TRUE(c) << e.message;
}

// A client that sends and never reads: the server stops reading it (TCP backpressure) instead of
// buffering without bound.
TEST_P(ServerTest, AClientThatDoesNotReadIsNotBufferedWithoutBound) {
  ServerLimits limits;
  limits.connection_inflight_bytes_max = 256u << 10;
  auto s = start(limits);
  ClientError e;
  std::optional<Connection> c = Connection::open(s->client(kPosKey), &e);
  ASSERT_TRUE(c) << e.message;
  int fd = c->fd();
  int small = 64 << 10;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::vector<Event> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(event(EventKind::kBalance, 1 + i % 10, 0, ""));
  std::vector<uint8_t> body(batch.size() * kEventRecordBytes);
  for (size_t i = 0; i < batch.size(); ++i) encode_event(body.data() + i * kEventRecordBytes, batch[i]);
  std::vector<uint8_t> frame;
  append_frame(frame, MsgType::kEvents, 1, body, static_cast<uint32_t>(batch.size()));
  // Send until the kernel's buffers are full on both sides (a non-blocking send refuses).
  size_t sent_frames = 0;
  size_t off = 0;
  for (int spins = 0; spins < 2000 && sent_frames < 10'000; ++spins) {
    ssize_t n = send(fd, frame.data() + off, frame.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      if (off == frame.size()) off = 0, ++sent_frames;
      spins = 0;
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 200) == 0) break;  // 200 ms without room: the server has stopped reading
  }
  EXPECT_LT(sent_frames, 10'000u) << "the server kept reading a client that reads nothing";
  int64_t held = s->server->memory_used();
  // At most the limit, plus one frame being read and one read chunk.
  EXPECT_LE(held, static_cast<int64_t>(limits.connection_inflight_bytes_max + frame.size() + kReadChunkBytes));
}

TEST_P(ServerTest, ARetryAcrossAServerRestartIsAReplayNotASecondCredit) {
  auto s = start();
  ClientOptions o = s->client(kPosKey);
  uint16_t port = s->server->port();
  {
    Client pos(o);
    ASSERT_EQ(submit_one(pos, event(EventKind::kEnroll, 8, 0, "e8")).result, Result::kOk);
    ASSERT_EQ(submit_one(pos, event(EventKind::kEarn, 8, 5'000, "order-restart")).result, Result::kOk);
  }
  s->stop();
  // The same data directory, a new server (its port is new too: the client is told).
  s = start();
  o.port = s->server->port();
  (void)port;
  Client again(o);
  WireResult r = submit_one(again, event(EventKind::kEarn, 8, 5'000, "order-restart"));
  EXPECT_EQ(r.result, Result::kOk);
  EXPECT_TRUE(r.flags & kEffectReplay);
  EXPECT_EQ(r.available, default_program().signup_bonus_points + 50);
}

TEST_P(ServerTest, AsyncClientBatchesAndDeliversEveryResult) {
  auto s = start();
  AsyncClient::Options o;
  o.client = s->client(kPosKey);
  o.batch_events_max = 100;
  std::atomic<uint64_t> ok{0}, bad{0};
  {
    AsyncClient c(o);
    for (uint64_t a = 1; a <= 2'000; ++a)
      c.submit(event(EventKind::kEnroll, a, 0, "ae" + std::to_string(a)), [&](const WireResult& r, const ClientError& e) {
        (!e && r.result == Result::kOk ? ok : bad).fetch_add(1);
      });
    c.flush();
    EXPECT_EQ(ok.load(), 2'000u);
    EXPECT_EQ(bad.load(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ServerTest, ::testing::Values(BackendKind::kAsio, BackendKind::kUring),
                         backend_name);
