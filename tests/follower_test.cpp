// Followers over 127.0.0.1 (tools/follower.h): after a load the follower's log is the primary's
// byte for byte and its state digest equals the primary's (replayed from its directory); a
// follower stopped mid-stream and started again resumes with no gap and no duplicate; through the
// protocol it answers balances like the primary, writes with not_primary, and `info` names the
// primary; a primary of an older epoch than the follower has seen is refused.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/digest.h"
#include "engine/program.h"
#include "net/client.h"
#include "net/tcp_server.h"
#include "storage/ledger.h"
#include "storage/recovery.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/follower.h"

using namespace tally;
using namespace tally::net;
using namespace tally::testing::two_programs;

namespace {




// The state digest of a stopped ledger's directory, by replaying it (as recovery does).
uint64_t digest_of(const std::string& dir, uint16_t shards) {
  storage::Store store({.dir = dir, .read_only = true});
  std::vector<Program> ps = tally::testing::stack_programs(programs());
  FraudSet fraud(1 << 20, shards);
  std::vector<std::unique_ptr<Shard>> owned;
  std::vector<Shard*> ptrs;
  for (uint16_t s = 0; s < shards; ++s) {
    owned.push_back(std::make_unique<Shard>(s, ps, &fraud));
    ptrs.push_back(owned.back().get());
  }
  storage::replay_log(store, ptrs);
  std::vector<const Shard*> cptrs(ptrs.begin(), ptrs.end());
  return state_digest(cptrs, ps);
}

// A mix with redeems, refusals, duplicates and transfers, so the state is more than credits.
void load(tally::testing::ServerStack& s, uint32_t key, uint32_t program, int frames, const std::string& tag) {
  Client c(s.client(key));
  std::vector<Event> events;
  std::vector<WireResult> results;
  for (int a = 1; a <= 100; ++a)
    events.push_back(tally::testing::event(EventKind::kEnroll, a, 0, "enroll-" + std::to_string(a), program));
  ASSERT_FALSE(c.submit(events, &results));
  for (int f = 0; f < frames; ++f) {
    events.clear();
    for (int a = 1; a <= 100; ++a) {
      std::string ref = tag + "-" + std::to_string(f) + "-" + std::to_string(a);
      switch ((a + f) % 5) {
        case 0: events.push_back(tally::testing::event(EventKind::kRedeem, a, 30, ref, program)); break;
        case 1: events.push_back(tally::testing::event(EventKind::kEarn, a, 100, tag + "-dup", program)); break;
        case 2: {
          Event t = tally::testing::event(EventKind::kTransfer, a, 5, ref, program);
          t.counterparty = 1 + (a * 7) % 100;
          if (t.counterparty == static_cast<uint64_t>(a)) t.counterparty = 1 + a % 100;
          events.push_back(t);
          break;
        }
        default: events.push_back(tally::testing::event(EventKind::kEarn, a, 250 + f, ref, program)); break;
      }
    }
    ClientError e = c.submit(events, &results);
    ASSERT_FALSE(e) << e.message;
  }
}

class FollowerTest : public ::testing::Test {
 protected:
  std::unique_ptr<tally::testing::ServerStack> primary() {
    tally::testing::StackOptions o;
    o.keys = keys();
    o.programs = programs();
    return std::make_unique<tally::testing::ServerStack>(dir_.sub("primary"), std::move(o));
  }
  FollowerOptions follower_options(const tally::testing::ServerStack& p) {
    FollowerOptions o;
    o.store.dir = dir_.sub("follower");
    o.shard_count = 2;  // the stack's
    o.programs = tally::testing::stack_programs(programs());
    o.primary = p.client(kReplicaKey);
    o.retry_ms = 50;
    o.log = [this](const std::string& line) {
      std::lock_guard lk(log_mu_);
      log_.push_back(line);
    };
    return o;
  }
  bool logged(const std::string& what) {
    std::lock_guard lk(log_mu_);
    for (const std::string& l : log_)
      if (l.find(what) != std::string::npos) return true;
    return false;
  }
  // Every batch of the follower's log is the primary's, and the follower has them all.
  void expect_same_log(tally::testing::ServerStack& p, FollowerService& f) {
    uint64_t end = p.service->log_range().durable_lsn;
    ASSERT_EQ(f.store().last_lsn(), end);
    for (uint64_t lsn = 1; lsn <= end; ++lsn)
      ASSERT_EQ(f.store().batch(lsn), p.service->ledger().store().batch(lsn)) << "LSN " << lsn;
  }
  tally::testing::TempDir dir_{"tally-follower-test"};
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

}  // namespace

TEST_F(FollowerTest, AfterALoadTheFollowersLogAndStateAreThePrimarys) {
  auto p = primary();
  load(*p, kPosKey, kProgram, 10, "before");  // the follower catches up on this
  FollowerService f(follower_options(*p));
  load(*p, kOtherPosKey, kOtherProgram, 10, "live");  // and follows this live
  uint64_t end = p->service->log_range().durable_lsn;
  ASSERT_TRUE(f.wait_applied(end, 30'000)) << f.status().failure;
  expect_same_log(*p, f);
  uint64_t follower_digest = f.digest();
  f.stop();
  p->stop();
  EXPECT_EQ(follower_digest, digest_of(dir_.sub("primary"), 2));
  EXPECT_TRUE(logged("following 127.0.0.1:")) << "the follower says whom it follows";
}

TEST_F(FollowerTest, StoppedMidStreamAndStartedAgainItResumesWithoutGapOrDuplicate) {
  auto p = primary();
  std::atomic<bool> loading{true};
  std::thread writer([&] {
    load(*p, kPosKey, kProgram, 60, "x");
    loading = false;
  });
  int restarts = 0;
  while (loading || restarts == 0) {
    FollowerService f(follower_options(*p));
    // Stopped as soon as it has applied something new: in the middle of the stream.
    uint64_t at = f.status().applied_lsn;
    f.wait_applied(at + 1, 30'000);
    ++restarts;
  }
  writer.join();
  FollowerService f(follower_options(*p));
  uint64_t end = p->service->log_range().durable_lsn;
  ASSERT_TRUE(f.wait_applied(end, 30'000)) << f.status().failure;
  EXPECT_GE(restarts, 2);
  expect_same_log(*p, f);
  uint64_t follower_digest = f.digest();
  f.stop();
  p->stop();
  EXPECT_EQ(follower_digest, digest_of(dir_.sub("primary"), 2));
}

TEST_F(FollowerTest, ThroughTheProtocolItReadsLikeThePrimaryAndRefusesWrites) {
  auto p = primary();
  load(*p, kPosKey, kProgram, 5, "x");
  FollowerService f(follower_options(*p));
  ASSERT_TRUE(f.wait_applied(p->service->log_range().durable_lsn, 30'000)) << f.status().failure;
  ServerConfig sc;
  sc.port = 0;
  sc.keys = keys();
  Server server(sc, &f);
  f.attach(&server.listener());
  server.start();
  ClientOptions fo = p->client(kPosKey);
  fo.port = server.port();
  Client on_follower(fo), on_primary(p->client(kPosKey));
  for (uint64_t a : {1, 7, 42, 100, 101}) {
    WireResult here = tally::testing::submit_one(on_follower, tally::testing::event(EventKind::kBalance, a, 0, ""));
    WireResult there = tally::testing::submit_one(on_primary, tally::testing::event(EventKind::kBalance, a, 0, ""));
    EXPECT_EQ(here.result, there.result) << "account " << a;
    EXPECT_EQ(here.available, there.available) << "account " << a;
    EXPECT_EQ(here.lifetime_earned, there.lifetime_earned) << "account " << a;
  }
  WireResult w = tally::testing::submit_one(on_follower, tally::testing::event(EventKind::kEarn, 1, 100, "on-follower"));
  EXPECT_EQ(w.result, Result::kNotPrimary);
  std::string info;
  ASSERT_FALSE(on_follower.info(&info));
  EXPECT_NE(info.find("role=follower\nprimary=127.0.0.1:" + std::to_string(p->server->port())), std::string::npos)
      << info;
  std::vector<HistoryEntry> mine, theirs;
  ASSERT_FALSE(on_follower.history(kProgram, 7, 100, LogPos{UINT64_MAX, UINT32_MAX}, &mine));
  ASSERT_FALSE(on_primary.history(kProgram, 7, 100, LogPos{UINT64_MAX, UINT32_MAX}, &theirs));
  ASSERT_EQ(mine.size(), theirs.size());
  EXPECT_GT(mine.size(), 3u);
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_EQ(mine[i].at, theirs[i].at);
  server.shutdown(5'000);
  f.attach(nullptr);
}

TEST_F(FollowerTest, APrimaryOfAnOlderEpochIsRefused) {
  auto p = primary();
  load(*p, kPosKey, kProgram, 2, "x");
  {
    // This follower has seen epoch 2 (it followed a promoted primary): epoch 1 is the past.
    storage::Store s({.dir = dir_.sub("follower")});
    std::vector<Program> ps = tally::testing::stack_programs(programs());
    std::vector<std::pair<std::string, std::string>> meta = storage::ledger_meta(2, ps);
    meta.emplace_back("epoch", "2");
    s.commit({}, meta);
  }
  FollowerService f(follower_options(*p));
  ASSERT_FALSE(f.wait_applied(1, 30'000));
  EXPECT_NE(f.status().failure.find("older than epoch 2"), std::string::npos) << f.status().failure;
  EXPECT_EQ(f.store().last_lsn(), 0u) << "nothing of the old epoch was stored";
}

// Semi-synchronous: a pipelined load (many frames in flight on one connection) gets every reply,
// each only after the follower has its batch; the primary's replicated LSN covers the log.
TEST_F(FollowerTest, SemiSynchronousRepliesAllArriveUnderAPipelinedLoad) {
  tally::testing::StackOptions o;
  o.keys = keys();
  o.programs = programs();
  o.replication.sync_followers = 1;
  auto p = std::make_unique<tally::testing::ServerStack>(dir_.sub("primary"), std::move(o));
  FollowerService f(follower_options(*p));
  AsyncClient::Options ao;
  ao.client = p->client(kPosKey);
  ao.batch_events_max = 200;
  ao.frames_in_flight_max = 32;
  std::atomic<uint64_t> ok{0}, answered{0};
  {
    AsyncClient c(ao);
    for (uint64_t a = 1; a <= 8'000; ++a) {  // the stack's programs hold 10,000 members
      Event e = tally::testing::event(EventKind::kEnroll, a, 0, "enroll-" + std::to_string(a));
      c.submit(e, [&](const WireResult& r, const ClientError& err) {
        answered.fetch_add(1);
        if (!err && r.result == Result::kOk) ok.fetch_add(1);
      });
    }
    auto flushed = std::async(std::launch::async, [&] { c.flush(); });
    ASSERT_EQ(flushed.wait_for(std::chrono::seconds(60)), std::future_status::ready)
        << "replies held for the follower never came (" << answered.load() << " of 8000)";
  }
  EXPECT_EQ(ok.load(), 8'000u);
  EXPECT_GE(p->service->replicated_lsn(), p->service->log_range().durable_lsn);
  EXPECT_GE(f.status().applied_lsn, p->service->log_range().durable_lsn);
}

// A follower pointed at a primary whose log is not the continuation of its own (another ledger,
// or an old primary's divergent tail) stops, naming it, and stores nothing of it.
TEST_F(FollowerTest, APrimaryWhoseLogDoesNotContinueThisOneIsRefused) {
  uint64_t held = 0;
  {
    auto p = primary();
    load(*p, kPosKey, kProgram, 2, "x");
    FollowerService f(follower_options(*p));
    ASSERT_TRUE(f.wait_applied(p->service->log_range().durable_lsn, 30'000)) << f.status().failure;
    held = f.status().applied_lsn;
  }
  tally::testing::StackOptions o;
  o.keys = keys();
  o.programs = programs();
  tally::testing::ServerStack other(dir_.sub("another-primary"), std::move(o));
  load(other, kPosKey, kProgram, 8, "y");  // a longer log of its own
  ASSERT_GT(other.service->log_range().durable_lsn, held);
  FollowerService f(follower_options(other));
  ASSERT_FALSE(f.wait_applied(held + 1, 30'000));
  EXPECT_NE(f.status().failure.find("does not continue this follower's log"), std::string::npos) << f.status().failure;
  EXPECT_EQ(f.store().last_lsn(), held);
}

// A semi-synchronous primary without its follower: by default the reply waits (nothing is
// acknowledged that a failover could lose) and comes once a follower has the batch; with
// degrade_after it comes anyway after that long, and the primary says so.
TEST_F(FollowerTest, WithoutItsFollowerASemiSynchronousPrimaryBlocksOrDegradesLoudly) {
  {
    tally::testing::StackOptions o;
    o.keys = keys();
    o.programs = programs();
    o.replication.sync_followers = 1;
    tally::testing::ServerStack p(dir_.sub("primary"), std::move(o));
    ClientError e;
    std::optional<Connection> c = Connection::open(p.client(kPosKey), &e);
    ASSERT_TRUE(c) << e.message;
    Event en = tally::testing::event(EventKind::kEnroll, 1, 0, "enroll-1");
    uint64_t id = 0;
    ASSERT_FALSE(c->send_events(std::span(&en, 1), &id));
    Reply r;
    e = c->receive(&r, 500);
    ASSERT_EQ(e.kind, ClientError::Kind::kTimeout) << "answered with no follower: " << e.message;
    FollowerService f(follower_options(p));
    e = c->receive(&r, 20'000);
    ASSERT_FALSE(e) << e.message;
    ASSERT_EQ(r.results.size(), 1u);
    EXPECT_EQ(r.results[0].result, Result::kOk);
    EXPECT_GE(f.status().applied_lsn, 1u) << "released before the follower had it";
  }
  std::vector<std::string> lines;
  std::mutex mu;
  tally::testing::StackOptions o;
  o.keys = keys();
  o.programs = programs();
  o.replication.sync_followers = 1;
  o.replication.degrade_after_ms = 200;
  o.replication.log = [&](const std::string& l) {
    std::lock_guard lk(mu);
    lines.push_back(l);
  };
  tally::testing::ServerStack p(dir_.sub("degrading"), std::move(o));
  Client c(p.client(kPosKey));
  WireResult w = tally::testing::submit_one(c, tally::testing::event(EventKind::kEnroll, 1, 0, "enroll-1"));
  EXPECT_EQ(w.result, Result::kOk);
  std::lock_guard lk(mu);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("REPLICATION DEGRADED to asynchronous"), std::string::npos) << lines[0];
}
