// Checkpoints and trimming (docs/checkpoints.md):
//   - a shard's checkpoint, saved a few slices at a time while it keeps applying events (copy on
//     write), restores into a shard that equals one that stopped at the cut, and that then decides
//     every later event alike (order tables, holds, caps, generations included);
//   - a ledger checkpointed and trimmed under load reopens with exactly its state, answers retries
//     of trimmed orders as replays and reuse of their order IDs as duplicates;
//   - consumer cursors hold trimming back until the retention limit drops them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <map>
#include <tuple>

#include "storage/history.h"
#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/recovery.h"
#include "tests/ledger_workload.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using namespace testing_support;  // NOLINT
using tally::testing::TempDir;

struct ShardState {
  std::map<uint64_t, AccountState> accounts;
  ProgramStats stats;
  uint64_t seq = 0;
};

ShardState state_of(const Shard& s) {
  ShardState st;
  s.for_each_account(1, [&](uint64_t id, const AccountState& a) { st.accounts[id] = a; });
  st.stats = *s.stats(1);
  st.seq = s.last_seq();
  return st;
}

void expect_equal(const ShardState& a, const ShardState& b) {
  ASSERT_EQ(a.seq, b.seq);
  ASSERT_EQ(a.accounts.size(), b.accounts.size());
  for (const auto& [id, x] : a.accounts) {
    const AccountState& y = b.accounts.at(id);
    EXPECT_EQ(x.available, y.available) << id;
    EXPECT_EQ(x.held, y.held) << id;
    EXPECT_EQ(x.lifetime_earned, y.lifetime_earned) << id;
    EXPECT_EQ(x.qualifying, y.qualifying) << id;
    EXPECT_EQ(x.tier, y.tier) << id;
  }
  EXPECT_EQ(a.stats.issued, b.stats.issued);
  EXPECT_EQ(a.stats.redeemed, b.stats.redeemed);
  EXPECT_EQ(a.stats.events, b.stats.events);
  EXPECT_EQ(a.stats.duplicates, b.stats.duplicates);
  EXPECT_EQ(a.stats.replays, b.stats.replays);
  EXPECT_EQ(a.stats.transfer_out, b.stats.transfer_out);
}

// One shard, with its own fraud set, fed batch by batch.
struct Solo {
  std::vector<Program> programs{program()};
  FraudSet fraud{200'000, 1};
  Shard shard{0, programs, &fraud};
  ApplyOutput out;
  std::vector<Effect> claims;  // effects that claimed a reference, to refill another fraud set
  void apply(const std::vector<Event>& batch, int64_t time_ms) {
    out.clear();
    shard.apply_batch(batch, time_ms, &out);
    for (const Effect& e : out.effects)
      if (e.flags & kEffectClaimed) claims.push_back(e);
  }
};

TEST(ShardCheckpointTest, SlicesSavedWhileTheShardRunsRestoreTheStateAtTheCutAndDecideAlike) {
  Workload w(7, 400);
  std::vector<std::pair<std::vector<Event>, int64_t>> batches;
  batches.emplace_back(w.enrolls(), w.advance());
  auto batch = [&](size_t i) -> const std::pair<std::vector<Event>, int64_t>& {
    while (batches.size() <= i) batches.emplace_back(w.next(100), w.advance());
    return batches[i];
  };

  Solo running;                                      // checkpointed while it runs
  std::vector<std::vector<uint8_t>> states;           // per round: the state at the cut
  std::vector<std::vector<uint8_t>> slices(2);        // per round: the slices saved
  std::vector<size_t> cut_at;                         // per round: batches applied before the cut
  size_t b = 0;
  for (int round = 0; round < 2; ++round) {
    for (size_t stop = b + 60; b < stop; ++b) running.apply(batch(b).first, batch(b).second);
    cut_at.push_back(b);
    states.push_back(running.shard.begin_checkpoint());
    // A few slices per batch while writes continue: most slices are saved by copy on write.
    bool done = false;
    while (!done) {
      running.apply(batch(b).first, batch(b).second);
      ++b;
      done = running.shard.checkpoint_step(40);
    }
    std::vector<uint8_t>& out = running.shard.checkpoint_out();
    slices[round].insert(slices[round].end(), out.begin(), out.end());
    out.clear();
    EXPECT_FALSE(running.shard.checkpoint_active());
  }
  // The second round saved only what changed since the first: fewer slices than the table has.
  size_t n0 = 0, n1 = 0;
  for (int round = 0; round < 2; ++round) {
    std::span<const uint8_t> in(slices[round]);
    SliceRecord r;
    while (next_slice_record(&in, &r)) ++(round == 0 ? n0 : n1);
    EXPECT_TRUE(in.empty());
  }
  EXPECT_GT(n0, 0u);
  EXPECT_GT(n1, 0u);

  for (int round = 0; round < 2; ++round) {
    // The reference: a shard that applied exactly the batches before the cut.
    Solo reference;
    for (size_t i = 0; i < cut_at[round]; ++i) reference.apply(batch(i).first, batch(i).second);
    // The restored shard: state of the round, slices of every round up to it (newest wins).
    Solo restored;
    restored.shard.restore_state(states[round]);
    for (int r = 0; r <= round; ++r) {
      std::span<const uint8_t> in(slices[r]);
      SliceRecord rec;
      while (next_slice_record(&in, &rec)) restored.shard.restore_slice(rec.program, rec.table, rec.slice, rec.bytes);
    }
    restored.shard.finish_restore();
    for (const Effect& e : reference.claims)
      restored.fraud.insert_unsynchronised(e.event.program, e.event.ref, 0, reference_day(e.event, e.time_ms));
    expect_equal(state_of(reference.shard), state_of(restored.shard));
    // Both decide every later event alike: results, points, balances, flags, sequence.
    for (size_t i = cut_at[round]; i < cut_at[round] + 40; ++i) {
      reference.apply(batch(i).first, batch(i).second);
      restored.apply(batch(i).first, batch(i).second);
      ASSERT_EQ(reference.out.effects.size(), restored.out.effects.size()) << "batch " << i;
      for (size_t k = 0; k < reference.out.effects.size(); ++k)
        ASSERT_TRUE(equal_logged(reference.out.effects[k], restored.out.effects[k]))
            << "batch " << i << " effect " << k << ": " << to_string(reference.out.effects[k].event.kind);
    }
  }
}

TEST(ShardCheckpointTest, AStateOfAnotherShapeIsRefusedByName) {
  Solo a;
  a.apply(Workload(1, 10).enrolls(), kT0);
  std::vector<uint8_t> state = a.shard.begin_checkpoint();
  std::vector<Program> bigger{program()};
  bigger[0].accounts_max *= 2;
  FraudSet fraud(1000, 1);
  Shard b(0, bigger, &fraud);
  try {
    b.restore_state(state);
    FAIL() << "restored into a table of another size";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("accounts"), std::string::npos) << e.what();
  }
  Shard other(1, a.programs, &fraud);
  EXPECT_THROW(other.restore_state(state), std::runtime_error);
}

// A checkpoint state of version 2 (written before the tier and stamp card tables: seven table
// shapes per program, not nine) is still read for programs without those tables, and refused,
// naming the table, for a program that has one.
TEST(ShardCheckpointTest, AVersionTwoStateIsStillReadAndRefusedWhereItLacksATable) {
  Solo a;
  a.apply(Workload(1, 10).enrolls(), kT0);
  const std::vector<uint8_t> v3 = a.shard.begin_checkpoint();
  // The layout (Shard::begin_checkpoint): magic, version, shard, sequence, clock and program count
  // (30 bytes); per program its id, 12 counters, generation start and current order table (109
  // bytes), then the shapes, u64 each, in table-id order: tiers is 7, stamps 8.
  constexpr size_t kShapes = 30 + 109;
  std::vector<uint8_t> v2 = v3;
  const uint32_t two = 2;
  std::memcpy(v2.data() + 4, &two, 4);
  ASSERT_TRUE(std::all_of(v2.begin() + kShapes + 7 * 8, v2.begin() + kShapes + 9 * 8, [](uint8_t b) { return b == 0; }))
      << "this program has neither table";
  v2.erase(v2.begin() + kShapes + 7 * 8, v2.begin() + kShapes + 9 * 8);
  FraudSet fraud(1000, 1);
  Shard b(0, a.programs, &fraud);
  b.restore_state(v2);
  EXPECT_EQ(b.last_seq(), a.shard.last_seq());
  EXPECT_EQ(b.clock_ms(), a.shard.clock_ms());
  EXPECT_EQ(b.stats(a.programs[0].id)->members, a.shard.stats(a.programs[0].id)->members);
  std::vector<Program> windowed = a.programs;
  windowed[0].tier_policy.period = TierPeriod::kCalendarYear;
  Shard c(0, windowed, &fraud);
  try {
    c.restore_state(v2);
    FAIL() << "a version 2 state restored into a program with a tier window";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("has no tiers table"), std::string::npos) << e.what();
  }
}

// The committer's side of one round, driven by hand: a shard hands over its whole round at once
// (as copy on write does under a uniform load, within moments of the cut); the checkpointer
// writes it `budget` bytes per transaction. Per transaction: the slice bytes it carried, whether
// its slices were in key order; and which transaction completed the round.
struct RoundWrites {
  std::vector<size_t> slice_bytes;
  bool key_order = true;
  size_t completed_in = SIZE_MAX;
};

RoundWrites write_round(const std::string& dir, Shard& shard, size_t budget) {
  Store store({.dir = dir});
  CheckpointOptions o;
  o.interval_log_bytes = 0;
  o.slice_bytes_per_commit = budget;
  uint64_t requested = 0;
  Checkpointer cp(&store, o, 1, CheckpointStart{}, [&](uint64_t round) { requested = round; });
  cp.request();
  cp.committed();  // the round begins
  EXPECT_EQ(requested, 1u);
  std::vector<CheckpointPiece> pieces(1);
  CheckpointPiece& p = pieces[0];
  p.round = 1;
  p.cut_seq = shard.last_seq();
  p.state = shard.begin_checkpoint();
  while (!shard.checkpoint_step(1u << 20)) {
  }
  p.slices.swap(shard.checkpoint_out());
  p.done = true;
  Effect cut{};  // the effects up to the cut are in the first transaction
  cut.seq = p.cut_seq;
  RoundWrites r;
  for (size_t txn = 0; txn < 100'000 && r.completed_in == SIZE_MAX; ++txn) {
    WriteSet w;
    cp.prepare(pieces, txn == 0 ? std::span<const Effect>(&cut, 1) : std::span<const Effect>(), 0, &w);
    size_t bytes = 0;
    for (size_t i = 0; i < w.slices.size(); ++i) {
      bytes += w.slices[i].bytes.size();
      if (i > 0) {
        const SliceKey &a = w.slices[i - 1].key, &b = w.slices[i].key;
        r.key_order &=
            std::tie(a.shard, a.program, a.table, a.slice) < std::tie(b.shard, b.program, b.table, b.slice);
      }
    }
    r.slice_bytes.push_back(bytes);
    bool completes =
        std::any_of(w.meta.begin(), w.meta.end(), [](const auto& m) { return m.first == "checkpoint_round"; });
    store.write(w);
    cp.committed();
    if (completes) r.completed_in = txn;
  }
  EXPECT_EQ(cp.stats().round, 1u);
  EXPECT_FALSE(cp.has_slices());
  return r;
}

TEST(CheckpointBudgetTest, ARoundHandedOverAtOnceIsWrittenInBoundedTransactionsAndCompletesWithItsLastSlice) {
  Workload w(5, 2000);
  Solo s;
  s.apply(w.enrolls(), w.advance());
  for (int i = 0; i < 30; ++i) s.apply(w.next(200), w.advance());
  ShardState at_cut = state_of(s.shard);
  constexpr size_t kBudget = 16 << 10;
  TempDir dir;
  RoundWrites r = write_round(dir.path(), s.shard, kBudget);
  size_t total = 0, largest = 0;
  for (size_t b : r.slice_bytes) total += b, largest = std::max(largest, b);
  ASSERT_GT(total, 20 * kBudget);  // a round of many transactions' worth
  EXPECT_LE(largest, kBudget + 1024);  // at most one slice over the budget
  EXPECT_GE(r.slice_bytes.size(), total / (kBudget + 1024));
  EXPECT_EQ(r.completed_in, r.slice_bytes.size() - 1);  // not before its last slice is written
  EXPECT_TRUE(r.key_order);  // consecutive puts on neighbouring B-tree leaves
  // What was written in bounded transactions restores the state at the cut.
  Solo restored;
  Store store({.dir = dir.path()});
  Shard* shards[] = {&restored.shard};
  load_checkpoint(store, shards);
  expect_equal(at_cut, state_of(restored.shard));

  // Negative control: without a budget the whole round rides in one transaction (what stalled the
  // log for seconds at a million members).
  Solo again;
  Workload w2(5, 2000);
  again.apply(w2.enrolls(), w2.advance());
  for (int i = 0; i < 30; ++i) again.apply(w2.next(200), w2.advance());
  TempDir dir2;
  RoundWrites unbounded = write_round(dir2.path(), again.shard, 0);
  ASSERT_EQ(unbounded.slice_bytes.size(), 1u);
  EXPECT_EQ(unbounded.slice_bytes[0], total);
}

LedgerOptions checkpointed(const std::string& dir, uint16_t shards) {
  LedgerOptions o = options(dir, shards);
  o.checkpoint.interval_log_bytes = 0;     // rounds only when the test asks
  o.checkpoint.trim_batches_per_commit = 16;  // trimming takes several transactions
  o.history.segment_records = 2000;           // the history index in many segments
  o.history.entries_per_commit = 500;
  return o;
}

class CheckpointLedgerTest : public ::testing::TestWithParam<uint16_t> {};

TEST_P(CheckpointLedgerTest, ATrimmedLedgerReopensExactlyAndStillKnowsEveryOrderId) {
  const uint16_t shards = GetParam();
  TempDir dir;
  Workload w(11 + shards, 300);
  Acks acks;
  Snapshot before;
  uint64_t first_lsn = 0, trimmed = 0;
  {
    Ledger l(checkpointed(dir.path(), shards), acks.durable_sink(), acks.failure_sink());
    l.pipeline().submit(0, w.enrolls(), w.advance());
    for (int i = 0; i < 200; ++i) {
      l.pipeline().submit(0, w.next(200), w.advance());
      if (i % 40 == 20) l.committer().request_checkpoint();  // rounds run while events keep coming
    }
    l.drain();
    l.committer().request_checkpoint();
    ASSERT_TRUE(l.committer().wait_checkpoint(l.committer().checkpoint_stats().round + 1));
    // More after the last checkpoint: recovery loads it, then replays this tail.
    for (int i = 0; i < 30; ++i) l.pipeline().submit(0, w.next(200), w.advance());
    l.drain();
    CheckpointStats cs = l.committer().checkpoint_stats();
    EXPECT_GE(cs.rounds_completed, 2u);
    EXPECT_GT(cs.slices_written, 0u);
    EXPECT_GT(cs.dedup_claims, 0u);
    EXPECT_EQ(cs.trim_lsn, cs.trimmed_batches);  // trimmed from the start, contiguously
    EXPECT_LE(cs.trim_lsn, std::stoull(l.store().meta("history_lsn").value_or("0")));  // nothing unindexed
    trimmed = cs.trimmed_batches;
    first_lsn = l.store().first_lsn();
    before = snapshot(l);
  }
  EXPECT_TRUE(acks.failed.empty());
  EXPECT_GT(trimmed, 10u);
  EXPECT_EQ(first_lsn, 1 + trimmed);

  // Reopened: loaded from the checkpoint, the rest replayed, every observable the same.
  {
    Acks again;
    Ledger l(checkpointed(dir.path(), shards), again.durable_sink(), again.failure_sink());
    EXPECT_GT(l.recovery().checkpoint_round, 0u);
    EXPECT_GT(l.recovery().dedup_references, 0u);
    EXPECT_GT(l.recovery().records, l.recovery().skipped);  // a tail was replayed
    EXPECT_EQ(l.recovery().legs_resent, 0u);
    expect_same(before, snapshot(l));
    // verify (as tally-admin runs it) passes on the trimmed log.
    LogCheck c = verify_log(l.store());
    EXPECT_TRUE(c.ok) << c.error;

    // The history index answers for the trimmed log: a member's statement is every logged
    // effect of theirs, newest first, and pages join up; an early order is found by reference.
    ASSERT_GE(std::stoul(l.store().meta("history_segments").value_or("0")), 1u);
    for (uint64_t account : {1, 77, 300}) {
      std::vector<Effect> mine;
      for (const Effect& f : acks.durable)
        if (f.event.account == account && f.event.kind != EventKind::kBalance) mine.push_back(f);
      std::vector<HistoryEntry> all;
      LogPos before{UINT64_MAX, 0};
      for (;;) {
        std::vector<HistoryEntry> page = history(l.store(), 1, account, 25, before);
        all.insert(all.end(), page.begin(), page.end());
        if (page.size() < 25) break;
        before = page.back().at;
      }
      ASSERT_EQ(all.size(), mine.size()) << "account " << account;
      for (size_t i = 0; i < all.size(); ++i) {
        const Effect& f = mine[mine.size() - 1 - i];
        EXPECT_EQ(all[i].kind, f.event.kind) << i;
        EXPECT_EQ(all[i].result, f.result) << i;
        EXPECT_EQ(all[i].points, f.points) << i;
        EXPECT_EQ(all[i].available, f.state.available) << i;
        EXPECT_EQ(all[i].ref, f.event.ref) << i;
      }
    }
    const Effect* early = nullptr;
    for (const Effect& f : acks.durable)
      if (f.event.kind == EventKind::kEarn && (f.flags & kEffectClaimed)) {
        early = &f;
        break;
      }
    ASSERT_NE(early, nullptr);
    std::vector<HistoryEntry> found = lookup(l.store(), 1, early->event.ref);
    ASSERT_FALSE(found.empty());
    EXPECT_EQ(found.front().account, early->event.account);
    EXPECT_EQ(found.front().points, early->points);
    EXPECT_TRUE(found.front().flags & kEffectClaimed);
    // Every 37th claimed order, wherever its entries fell among the index blocks and segments.
    size_t n = 0, checked = 0;
    for (const Effect& f : acks.durable) {
      if (!(f.flags & kEffectClaimed) || is_internal(f.event.kind) || n++ % 37 != 0) continue;
      std::vector<HistoryEntry> hits = lookup(l.store(), 1, f.event.ref);
      bool seen = std::any_of(hits.begin(), hits.end(), [&](const HistoryEntry& e) {
        return e.account == f.event.account && e.kind == f.event.kind && e.points == f.points &&
               (e.flags & kEffectClaimed);
      });
      EXPECT_TRUE(seen) << "order of account " << f.event.account << " at " << f.time_ms;
      ++checked;
    }
    EXPECT_GT(checked, 100u);
  }

  // Every acknowledged claim, retried identically, is a replay with its original result (within
  // a refund window); the same order ID on a different purchase is a duplicate, trimmed or not.
  int64_t last_time = 0;
  for (const Effect& f : acks.durable) last_time = std::max(last_time, f.time_ms);
  std::vector<Event> retries, reuses;
  std::map<std::pair<uint64_t, uint64_t>, Effect> original;
  for (const Effect& f : acks.durable) {
    if (!(f.flags & kEffectClaimed) || is_internal(f.event.kind)) continue;
    if (f.event.kind == EventKind::kEarn && reuses.size() < 200) {
      Event e = f.event;
      e.amount += 1;
      reuses.push_back(e);
    }
    if (f.time_ms < last_time - program().refund_window_ms) continue;
    retries.push_back(f.event);
    original[{f.event.ref.lo, f.event.ref.hi}] = f;
  }
  ASSERT_GT(retries.size(), 100u);
  ASSERT_EQ(reuses.size(), 200u);
  Acks again;
  {
    Ledger l(checkpointed(dir.path(), shards), again.durable_sink(), again.failure_sink());
    l.pipeline().submit(0, retries, last_time);
    l.pipeline().submit(0, reuses, last_time);
    l.drain();
  }
  size_t replays = 0, duplicates = 0;
  std::map<std::pair<uint64_t, uint64_t>, int> seen;
  for (const Effect& f : again.durable) {
    if (f.event.kind == EventKind::kHoldExpire) continue;
    auto key = std::make_pair(f.event.ref.lo, f.event.ref.hi);
    if (seen[key]++ == 0 && original.count(key)) {
      EXPECT_TRUE(f.flags & kEffectReplay) << to_string(f.event.kind) << " account " << f.event.account;
      EXPECT_EQ(f.result, original[key].result);
      EXPECT_EQ(f.points, original[key].points);
      ++replays;
    } else if (f.event.kind == EventKind::kEarn && !(f.flags & kEffectReplay)) {
      EXPECT_EQ(f.result, Result::kDuplicateOrder) << "order reused after its batch was trimmed";
      ++duplicates;
    }
  }
  EXPECT_EQ(replays, retries.size());
  EXPECT_EQ(duplicates, reuses.size());
}

INSTANTIATE_TEST_SUITE_P(Shards, CheckpointLedgerTest, ::testing::Values(1, 2));

TEST(HistoryFormatTest, AnIndexWithoutTheBlockFormatMarkIsRefusedAtStartNotMisread) {
  TempDir dir;
  Workload w(5, 100);
  {
    Acks acks;
    Ledger l(checkpointed(dir.path(), 1), acks.durable_sink(), acks.failure_sink());
    l.pipeline().submit(0, w.enrolls(), w.advance());
    for (int i = 0; i < 30; ++i) l.pipeline().submit(0, w.next(200), w.advance());
    l.drain();
  }  // a clean stop publishes the segment being built
  {  // A data directory of the build before blocks: segments, and no format mark.
    StoreOptions so;
    so.dir = dir.path();
    Store s(so);
    ASSERT_GE(std::stoul(s.meta("history_segments").value_or("0")), 1u);
    EXPECT_EQ(s.meta("history_format").value_or(""), "blocks-1");
    WriteSet ws;
    ws.meta_erase.push_back("history_format");
    s.write(ws);
  }
  Acks acks;
  try {
    Ledger l(checkpointed(dir.path(), 1), acks.durable_sink(), acks.failure_sink());
    ADD_FAILURE() << "opened an index of another layout";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("older build"), std::string::npos) << e.what();
  }
}

TEST(CheckpointCursorTest, AConsumerCursorHoldsTrimmingBackUntilRetentionDropsIt) {
  TempDir dir;
  Workload w(3, 200);
  Acks acks;
  LedgerOptions o = checkpointed(dir.path(), 1);
  o.history.enabled = false;  // the index holds trimming back too; here only the cursor does
  {
    Ledger l(o, acks.durable_sink(), acks.failure_sink());
    l.pipeline().submit(0, w.enrolls(), w.advance());
    l.drain();
    std::pair<std::string, std::string> cursor[] = {{"cursor.warehouse", std::to_string(l.store().last_lsn())}};
    l.store().commit({}, cursor);
    for (int i = 0; i < 60; ++i) l.pipeline().submit(0, w.next(200), w.advance());
    l.drain();
    l.committer().request_checkpoint();
    ASSERT_TRUE(l.committer().wait_checkpoint(1));
    EXPECT_EQ(l.committer().checkpoint_stats().trim_lsn, std::stoull(*l.store().meta("cursor.warehouse")));
  }
  o.checkpoint.cursor_retention_batches = 10;  // the warehouse is now too far behind
  {
    Ledger l(o, acks.durable_sink(), acks.failure_sink());
    uint64_t end = l.store().last_lsn();
    l.committer().request_checkpoint();
    ASSERT_TRUE(l.committer().wait_checkpoint(2));
    EXPECT_EQ(l.committer().checkpoint_stats().cursors_dropped, 1u);
    EXPECT_FALSE(l.store().meta("cursor.warehouse").has_value());
    EXPECT_EQ(l.committer().checkpoint_stats().trim_lsn, end);
  }
}

TEST(CheckpointRefusalTest, CapacityChangesAfterACheckpointAreRefusedByName) {
  TempDir dir;
  Workload w(9, 50);
  Acks acks;
  {
    Ledger l(checkpointed(dir.path(), 1), acks.durable_sink(), acks.failure_sink());
    l.pipeline().submit(0, w.enrolls(), w.advance());
    l.drain();
    l.committer().request_checkpoint();
    ASSERT_TRUE(l.committer().wait_checkpoint(1));
  }
  LedgerOptions o = checkpointed(dir.path(), 1);
  o.pipeline.programs[0].orders_max *= 2;
  try {
    Ledger l(o, acks.durable_sink(), acks.failure_sink());
    FAIL() << "opened a checkpoint with tables of another size";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("orders"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tally::storage
