// Recovery: a ledger reopened on its data directory holds exactly the state it had, for every
// operation kind, on 1 and 2 shards; a corrupt or foreign log is refused, never served.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>

#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/recovery.h"
#include "tests/ledger_workload.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

using namespace testing_support;  // NOLINT: the shared workload of tests/ledger_workload.h

// Runs `rounds` batches of the workload through a ledger on `dir`; returns the state after.
Snapshot run(const std::string& dir, uint16_t shards, Workload& w, int rounds, Acks* acks, bool enroll) {
  Ledger l(options(dir, shards), acks->durable_sink(), acks->failure_sink());
  if (enroll) l.pipeline().submit(0, w.enrolls(), w.advance());
  for (int i = 0; i < rounds; ++i) l.pipeline().submit(0, w.next(200), w.advance());
  l.drain();
  return snapshot(l);
}

class RecoveryTest : public ::testing::TestWithParam<uint16_t> {};

TEST_P(RecoveryTest, AReopenedLedgerHasExactlyTheStateItHadAndContinuesAlike) {
  const uint16_t shards = GetParam();
  TempDir dir;
  Workload w(42 + shards, 300);
  Acks acks;
  Snapshot before = run(dir.path(), shards, w, 150, &acks, true);
  EXPECT_TRUE(acks.failed.empty());
  ASSERT_GT(before.stats.duplicates, 0u);  // the workload reached the interesting paths
  ASSERT_GT(before.stats.replays, 0u);
  ASSERT_GT(before.stats.transfer_bounced, 0);

  {
    Acks again;
    Ledger l(options(dir.path(), shards), again.durable_sink(), again.failure_sink());
    EXPECT_FALSE(l.recovery().fresh);
    EXPECT_GT(l.recovery().records, 0u);
    EXPECT_EQ(l.recovery().tail_effects, 0u);  // a clean stop leaves nothing half-logged
    EXPECT_EQ(l.recovery().legs_resent, 0u);
    expect_same(before, snapshot(l));
  }

  // Retries after the restart: every acknowledged event that claimed its order ID, sent again
  // identically, is answered as a replay with its original result and points (those within one
  // refund window: older orders may have left the order table, docs/engine.md).
  std::vector<Event> retries;
  std::map<std::pair<uint64_t, uint64_t>, Effect> original;
  int64_t last_time = 0;
  for (const Effect& f : acks.durable) last_time = std::max(last_time, f.time_ms);
  for (const Effect& f : acks.durable) {
    if (!(f.flags & kEffectClaimed) || is_internal(f.event.kind)) continue;
    if (f.time_ms < last_time - program().refund_window_ms) continue;
    retries.push_back(f.event);
    original[{f.event.ref.lo, f.event.ref.hi}] = f;
  }
  ASSERT_GT(retries.size(), 100u);
  Acks again;
  {
    Ledger l(options(dir.path(), shards), again.durable_sink(), again.failure_sink());
    l.pipeline().submit(0, retries, last_time);
    l.drain();
  }
  size_t checked = 0;
  for (const Effect& f : again.durable) {
    auto it = original.find({f.event.ref.lo, f.event.ref.hi});
    if (f.event.kind == EventKind::kHoldExpire || it == original.end()) continue;
    ++checked;
    EXPECT_TRUE(f.flags & kEffectReplay) << to_string(f.event.kind) << " account " << f.event.account;
    EXPECT_EQ(f.result, it->second.result);
    EXPECT_EQ(f.points, it->second.points);
  }
  EXPECT_EQ(checked, retries.size());
}

INSTANTIATE_TEST_SUITE_P(Shards, RecoveryTest, ::testing::Values(1, 2));

TEST(RecoveryRefusalTest, ADifferentRuleSetOrShardCountIsRefusedByName) {
  TempDir dir;
  Workload w(1, 50);
  Acks acks;
  run(dir.path(), 2, w, 5, &acks, true);
  Program changed = program();
  changed.signup_bonus_points += 1;
  try {
    Ledger l(options(dir.path(), 2, changed), acks.durable_sink(), acks.failure_sink());
    FAIL() << "opened under other rules";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("program 1"), std::string::npos) << e.what();
  }
  try {
    Ledger l(options(dir.path(), 1), acks.durable_sink(), acks.failure_sink());
    FAIL() << "opened with another shard count";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("shards"), std::string::npos) << e.what();
  }
  // Capacity is not a rule: a larger table is fine.
  Program bigger = program();
  bigger.accounts_max *= 2;
  Ledger l(options(dir.path(), 2, bigger), acks.durable_sink(), acks.failure_sink());
  EXPECT_GT(l.recovery().records, 0u);
}

TEST(RecoveryRefusalTest, AFraudSetConfiguredTooSmallForTheLogIsRaisedNotRefused) {
  TempDir dir;
  Workload w(5, 100);
  Acks acks;
  run(dir.path(), 1, w, 20, &acks, true);
  LedgerOptions small = options(dir.path(), 1);
  small.pipeline.references_max = 10;
  Ledger l(small, acks.durable_sink(), acks.failure_sink());
  EXPECT_GT(l.recovery().references, 1000u);
  EXPECT_GT(l.recovery().references_max, l.recovery().references);
  EXPECT_GE(l.pipeline().fraud_set().capacity_max(), l.recovery().references_max);
  EXPECT_EQ(l.pipeline().fraud_set().size(), l.recovery().references);  // every logged claim re-entered
}

// Offsets in `file` of every copy of `needle` (LMDB's copy-on-write leaves stale copies of pages
// behind; a corruption test must hit the live one, so it hits them all).
std::vector<size_t> offsets_of(const std::string& file, const std::vector<uint8_t>& needle) {
  std::ifstream in(file, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<size_t> at;
  for (size_t i = 0; i + needle.size() <= bytes.size(); ++i)
    if (std::memcmp(bytes.data() + i, needle.data(), needle.size()) == 0) at.push_back(i);
  return at;
}

void flip_byte(const std::string& file, size_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
}

TEST(CorruptionTest, AFlippedByteInTheLogIsReportedAndTheLedgerRefusesToStart) {
  TempDir dir;
  Workload w(3, 100);
  Acks acks;
  run(dir.path(), 1, w, 40, &acks, true);
  std::string file = dir.path() + "/data.mdb";
  std::vector<uint8_t> victim;
  uint64_t victim_lsn = 0;
  {
    Store s({.dir = dir.path(), .read_only = true});
    ASSERT_TRUE(verify_log(s).ok);  // the control: clean before the flip
    victim_lsn = (s.first_lsn() + s.last_lsn()) / 2;
    victim = s.batch(victim_lsn);
  }
  ASSERT_GT(victim.size(), 80u);
  std::vector<uint8_t> header(victim.begin(), victim.begin() + 64);
  std::vector<size_t> copies = offsets_of(file, header);
  ASSERT_FALSE(copies.empty());
  for (size_t at : copies) flip_byte(file, at + 64 + 10);  // inside the batch's first record
  {
    Store s({.dir = dir.path(), .read_only = true});
    LogCheck c = verify_log(s);
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.bad_lsn, victim_lsn);
    EXPECT_NE(c.error.find("checksum"), std::string::npos) << c.error;
  }
  try {
    Ledger l(options(dir.path(), 1), acks.durable_sink(), acks.failure_sink());
    FAIL() << "started on a corrupt log";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tally::storage
