// The multi-threaded runtime: rings, shard threads, transfer lanes and the ordered output.
// Threads start together on a latch; nothing here waits on time.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "engine/runtime/pipeline.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

Program plain_program() {
  Program p;
  p.id = 1;
  p.currency = 978;
  p.signup_bonus_points = 1000;
  p.accounts_max = 100'000;
  p.orders_max = 1'000'000;
  return p;
}

// `count` account ids owned by `shard`.
std::vector<uint64_t> accounts_on(const Pipeline& p, uint16_t shard, size_t count, uint64_t from = 1) {
  std::vector<uint64_t> ids;
  for (uint64_t id = from; ids.size() < count; ++id)
    if (p.shard_for(1, id) == shard) ids.push_back(id);
  return ids;
}

Event make(EventKind kind, uint64_t account, const std::string& ref, int64_t amount = 0) {
  Event e{};
  e.kind = kind;
  e.program = 1;
  e.account = account;
  e.ref = reference_from_string(ref);
  e.amount = amount;
  return e;
}

void enroll_all(Pipeline& p, const std::vector<uint64_t>& ids) {
  std::vector<Event> batch;
  for (uint64_t id : ids) batch.push_back(make(EventKind::kEnroll, id, "enroll-" + std::to_string(id)));
  p.submit(0, batch, kT0);
  p.drain();
}

struct Recorder {
  std::vector<Effect> effects;
  EffectSink sink() {
    return [this](std::span<const Effect> b) { effects.insert(effects.end(), b.begin(), b.end()); };
  }
};

TEST(RuntimeTest, SameReferenceOnTwoShardsAtOnceHasExactlyOneWinnerEveryTime) {
  Recorder rec;
  PipelineConfig c;
  c.shard_count = 2;
  c.producer_count = 2;
  c.programs = {plain_program()};
  c.references_max = 1'000'000;
  Pipeline p(c, rec.sink());
  const size_t kAccounts = 64;
  std::vector<uint64_t> mine[2] = {accounts_on(p, 0, kAccounts), accounts_on(p, 1, kAccounts)};
  enroll_all(p, mine[0]);
  enroll_all(p, mine[1]);
  rec.effects.clear();

  const int kRounds = 40;
  const int kRefsPerRound = 2000;
  for (int round = 0; round < kRounds; ++round) {
    std::latch start(2);
    auto producer = [&](uint16_t who) {
      std::vector<Event> batch;
      for (int i = 0; i < kRefsPerRound; ++i) {
        // The same order reference, a different account (and shard) per producer.
        batch.push_back(make(EventKind::kEarn, mine[who][static_cast<size_t>(i) % kAccounts],
                             "order-" + std::to_string(round) + "-" + std::to_string(i), 10'000 + who));
      }
      start.arrive_and_wait();
      for (size_t at = 0; at < batch.size(); at += 100)
        p.submit(who, std::span(batch).subspan(at, 100), kT0 + round);
    };
    std::thread a(producer, 0), b(producer, 1);
    a.join();
    b.join();
  }
  p.drain();

  // Exactly one ok and one duplicate per reference; the sink sees the winner's claim first.
  std::map<std::pair<uint64_t, uint64_t>, std::pair<int, int>> verdicts;  // ref -> (ok, duplicate)
  std::map<std::pair<uint64_t, uint64_t>, size_t> claimed_at;
  std::map<uint64_t, int64_t> credited;
  int64_t dependent = 0;
  for (size_t i = 0; i < rec.effects.size(); ++i) {
    const Effect& e = rec.effects[i];
    ASSERT_EQ(e.event.kind, EventKind::kEarn);
    auto key = std::make_pair(e.event.ref.lo, e.event.ref.hi);
    if (e.result == Result::kOk) {
      ++verdicts[key].first;
      claimed_at[key] = i;
      credited[e.event.account] += e.points;
      EXPECT_TRUE(e.flags & kEffectClaimed);
    } else {
      ASSERT_EQ(e.result, Result::kDuplicateOrder);
      ++verdicts[key].second;
      ASSERT_TRUE(claimed_at.count(key)) << "a duplicate verdict reached the sink before its winner";
      EXPECT_NE(e.depends_shard, e.shard);
      dependent += e.depends_seq != 0;
    }
  }
  ASSERT_EQ(verdicts.size(), static_cast<size_t>(kRounds * kRefsPerRound));
  for (const auto& [ref, v] : verdicts) {
    ASSERT_EQ(v.first, 1);
    ASSERT_EQ(v.second, 1);
  }
  EXPECT_EQ(dependent, kRounds * kRefsPerRound);
  // Every account holds its bonus plus exactly the points of the orders it won.
  for (uint16_t s = 0; s < 2; ++s) {
    for (uint64_t id : mine[s]) {
      AccountState st;
      ASSERT_TRUE(p.shard(s).account(1, id, &st));
      EXPECT_EQ(st.available, 1000 + credited[id]);
    }
  }
}

TEST(RuntimeTest, TransfersBetweenShardsThroughFullLanesLoseNoPoint) {
  Recorder rec;
  PipelineConfig c;
  c.shard_count = 2;
  c.producer_count = 2;
  c.programs = {plain_program()};
  c.lane_ring_events = 2;  // legs wait on each other constantly
  c.producer_ring_events = 16;
  c.output_ring_effects = 8;
  Pipeline p(c, rec.sink());
  std::vector<uint64_t> mine[2] = {accounts_on(p, 0, 50), accounts_on(p, 1, 50)};
  enroll_all(p, mine[0]);
  enroll_all(p, mine[1]);
  const int64_t kIssued = 1000 * 100;

  std::latch start(2);
  auto producer = [&](uint16_t who) {
    std::mt19937_64 rng(who + 1);
    std::vector<Event> batch;
    for (int i = 0; i < 20'000; ++i) {
      uint64_t from = mine[who][rng() % 50];
      // Mostly to the other shard, some to accounts that do not exist (they bounce).
      uint64_t to = rng() % 10 == 0 ? 1'000'000 + rng() % 1000 : mine[1 - who][rng() % 50];
      Event e = make(EventKind::kTransfer, from, "t-" + std::to_string(who) + "-" + std::to_string(i),
                     static_cast<int64_t>(1 + rng() % 30));
      e.counterparty = to;
      batch.push_back(e);
    }
    start.arrive_and_wait();
    for (size_t at = 0; at < batch.size(); at += 64) p.submit(who, std::span(batch).subspan(at, 64), kT0);
  };
  std::thread a(producer, 0), b(producer, 1);
  a.join();
  b.join();
  p.drain();

  int64_t balances = 0, out = 0, in = 0, bounced = 0;
  for (uint16_t s = 0; s < 2; ++s) {
    p.shard(s).for_each_account(1, [&](uint64_t, const AccountState& st) {
      EXPECT_GE(st.available, 0);
      balances += st.available + st.held;
    });
    const ProgramStats* ps = p.shard(s).stats(1);
    out += ps->transfer_out;
    in += ps->transfer_in;
    bounced += ps->transfer_bounced;
  }
  EXPECT_GT(bounced, 0);
  EXPECT_GT(in, 0);
  EXPECT_EQ(out, in + bounced) << "points left in transit after drain";
  EXPECT_EQ(balances, kIssued);
  // Per shard, the sink saw sequences 1, 2, 3... with no gap and no repeat.
  uint64_t last[2] = {0, 0};
  for (const Effect& e : rec.effects) {
    ASSERT_EQ(e.seq, last[e.shard] + 1);
    last[e.shard] = e.seq;
  }
}

TEST(RuntimeTest, TinyRingsApplyBackpressureAndLoseNothing) {
  Recorder rec;
  PipelineConfig c;
  c.shard_count = 3;
  c.producer_count = 2;
  c.programs = {plain_program()};
  c.producer_ring_events = 2;
  c.output_ring_effects = 2;
  c.sink_batch_effects_max = 3;
  Pipeline p(c, rec.sink());
  std::latch start(2);
  const int kEach = 30'000;
  auto producer = [&](uint16_t who) {
    std::vector<Event> batch;
    for (int i = 0; i < kEach; ++i) {  // balance reads of unknown accounts: one effect each
      Event e = make(EventKind::kBalance, 1 + static_cast<uint64_t>(i) * 2 + who, "");
      e.ref = {};
      batch.push_back(e);
    }
    start.arrive_and_wait();
    for (size_t at = 0; at < batch.size(); at += 7)
      p.submit(who, std::span(batch).subspan(at, std::min<size_t>(7, batch.size() - at)), kT0);
  };
  std::thread a(producer, 0), b(producer, 1);
  a.join();
  b.join();
  p.drain();
  ASSERT_EQ(rec.effects.size(), static_cast<size_t>(2 * kEach));
  std::vector<bool> seen(2 * kEach + 2, false);
  for (const Effect& e : rec.effects) {
    EXPECT_EQ(e.result, Result::kAccountNotFound);
    ASSERT_FALSE(seen[e.event.account]) << "effect delivered twice";
    seen[e.event.account] = true;
  }
}

TEST(RuntimeTest, IdleShardsExpireHoldsOnATick) {
  Recorder rec;
  Program prog = plain_program();
  prog.hold_timeout_ms = 60'000;
  PipelineConfig c;
  c.shard_count = 2;
  c.programs = {prog};
  Pipeline p(c, rec.sink());
  uint64_t id = accounts_on(p, 1, 1)[0];
  enroll_all(p, {id});
  std::vector<Event> hold = {make(EventKind::kHold, id, "hold-1", 300)};
  p.submit(0, hold, kT0 + 1000);
  p.drain();
  AccountState st;
  ASSERT_TRUE(p.shard(1).account(1, id, &st));
  EXPECT_EQ(st.held, 300);
  rec.effects.clear();
  p.tick(0, kT0 + 1000 + 60'000);  // no event for that shard: only the tick moves its clock
  p.drain();
  ASSERT_EQ(rec.effects.size(), 1u);
  EXPECT_EQ(rec.effects[0].event.kind, EventKind::kHoldExpire);
  ASSERT_TRUE(p.shard(1).account(1, id, &st));
  EXPECT_EQ(st.held, 0);
  EXPECT_EQ(st.available, 1000);
}

// Statements are read on the shard threads while they apply events: each one must be a consistent
// view (its lots add up to its balances), and a statement asked while the pipeline stops returns.
TEST(RuntimeTest, StatementsReadWhileShardsApplyAreConsistent) {
  Recorder rec;
  Program prog = plain_program();
  prog.lots.expiry = ExpiryKind::kDays;
  prog.lots.expiry_days = 3;
  prog.lots.pending_days = 1;
  PipelineConfig c;
  c.shard_count = 2;
  c.programs = {prog};
  auto p = std::make_unique<Pipeline>(c, rec.sink());
  std::vector<uint64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  enroll_all(*p, ids);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, bad{0};
  std::thread reader([&] {
    while (!done.load()) {
      for (uint64_t id : ids) {
        Statement st;
        if (!p->statement(1, id, &st)) continue;
        int64_t spendable = 0, pending = 0;
        for (const LotLine& l : st.lots) (l.mature_day != 0 ? pending : spendable) += l.points;
        if (spendable != std::max<int64_t>(st.state.available, 0) || pending != st.state.pending) ++bad;
        ++reads;
      }
    }
  });
  for (int i = 0; i < 400; ++i) {
    std::vector<Event> batch;
    for (uint64_t id : ids) {
      batch.push_back(make(EventKind::kEarn, id, "e" + std::to_string(i) + "-" + std::to_string(id), 1000));
      if (i % 3 == 0) batch.push_back(make(EventKind::kRedeem, id, "r" + std::to_string(i) + "-" + std::to_string(id), 5));
    }
    p->submit(0, batch, kT0 + i * 3'600'000);  // an hour per batch: lots mature and expire
  }
  p->drain();
  done.store(true);
  reader.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(bad.load(), 0);
  // One asked as the pipeline stops gets an answer (found or not), never a hang.
  std::thread late([&] {
    Statement st;
    (void)p->statement(1, 1, &st);
  });
  p->stop();
  late.join();
}

TEST(RuntimeTest, ABadProgramIsRefusedAtConstruction) {
  Program bad = plain_program();
  bad.earn_per_minor = 0;
  PipelineConfig c;
  c.programs = {bad};
  EXPECT_THROW(Pipeline(c, [](std::span<const Effect>) {}), std::invalid_argument);
}

TEST(RuntimeTest, SlotMapSpreadsAccountsOverShards) {
  SlotMap map(4);
  int per_shard[4] = {};
  for (uint64_t id = 1; id <= 40'000; ++id) ++per_shard[map.shard_for(1, id)];
  for (int n : per_shard) {  // 10,000 expected each; a broken hash puts them all in one
    EXPECT_GT(n, 9'000);
    EXPECT_LT(n, 11'000);
  }
  EXPECT_EQ(map.shard_for(1, 42), SlotMap(4).shard_for(1, 42));  // same answer everywhere
}

}  // namespace
}  // namespace tally
