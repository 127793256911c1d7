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
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

Program program() {
  Program p = default_program();  // tiers, caps, action limits: every side table in play
  p.accounts_max = 10'000;
  p.orders_max = 200'000;
  p.holds_open_max = 10'000;
  p.hold_timeout_ms = 60'000;
  p.refund_window_ms = 10 * kMsPerMinute;
  p.dedup_window_ms = 400 * kMsPerDay;
  return p;
}

LedgerOptions options(const std::string& dir, uint16_t shards, Program p = program()) {
  LedgerOptions o;
  o.store.dir = dir;
  o.pipeline.shard_count = shards;
  o.pipeline.programs = {p};
  o.pipeline.references_max = 500'000;
  o.committer.txn_bytes_max = 64 << 10;
  return o;
}

struct Acks {
  std::mutex mu;
  std::vector<Effect> durable;
  std::vector<Effect> failed;
  DurableSink durable_sink() {
    return [this](std::span<const Effect> e, uint64_t) {
      std::lock_guard lk(mu);
      durable.insert(durable.end(), e.begin(), e.end());
    };
  }
  FailureSink failure_sink() {
    return [this](std::span<const Effect> e, const std::string&) {
      std::lock_guard lk(mu);
      failed.insert(failed.end(), e.begin(), e.end());
    };
  }
};

// A random loyalty workload over `members` accounts: enrolls, earns, awards, redeems, holds and
// their captures and voids, refunds, adjustments, transfers, balance reads; identical retries and
// reused order IDs; time moving forward in steps that expire holds and turn order generations.
class Workload {
 public:
  Workload(uint64_t seed, uint64_t members) : rng_(seed), members_(members) {}

  std::vector<Event> enrolls() {
    std::vector<Event> v;
    for (uint64_t a = 1; a <= members_; ++a) v.push_back(make(EventKind::kEnroll, a, 0));
    return v;
  }

  std::vector<Event> next(size_t n) {
    std::vector<Event> v;
    while (v.size() < n) {
      int r = pick(0, 99);
      uint64_t a = static_cast<uint64_t>(pick(1, static_cast<int64_t>(members_)));
      if (r < 35) {
        v.push_back(remember(make(EventKind::kEarn, a, pick(1, 50'000))));
      } else if (r < 40) {
        Event e = make(EventKind::kAward, a, 0);
        e.code = static_cast<uint16_t>(pick(1, 3));
        v.push_back(e);
      } else if (r < 55) {
        v.push_back(make(EventKind::kRedeem, a, pick(1, 400)));
      } else if (r < 62) {
        v.push_back(remember(make(EventKind::kHold, a, pick(1, 300))));
      } else if (r < 68 && !history_.empty()) {
        const Event& h = history_[static_cast<size_t>(pick(0, static_cast<int64_t>(history_.size()) - 1))];
        Event e = make(pick(0, 1) ? EventKind::kCapture : EventKind::kVoid, h.account, 0);
        if (h.kind == EventKind::kEarn) e = make(EventKind::kReverse, h.account, pick(0, 1) ? 0 : pick(1, 5000));
        e.target = h.ref;
        v.push_back(e);
      } else if (r < 71) {
        Event e = make(EventKind::kAdjust, a, pick(-50, 200));
        if (e.amount == 0) e.amount = 1;
        e.code = 7;
        v.push_back(e);
      } else if (r < 80) {
        Event e = make(EventKind::kTransfer, a, pick(1, 200));
        e.counterparty = static_cast<uint64_t>(pick(1, static_cast<int64_t>(members_ + 3)));  // some unknown
        if (e.counterparty == a) e.counterparty = a % members_ + 1;
        v.push_back(e);
      } else if (r < 86) {
        v.push_back(make(EventKind::kBalance, a, 0));
      } else if (r < 93 && !history_.empty()) {  // identical retry
        v.push_back(history_[static_cast<size_t>(pick(0, static_cast<int64_t>(history_.size()) - 1))]);
      } else if (!history_.empty()) {  // a different purchase reusing an order ID
        Event e = history_[static_cast<size_t>(pick(0, static_cast<int64_t>(history_.size()) - 1))];
        e.amount += 1;
        e.account = a;
        v.push_back(e);
      }
    }
    return v;
  }

  // The server time of the next batch: usually a little later, sometimes past a hold timeout
  // or an order generation.
  int64_t advance() {
    int r = pick(0, 99);
    now_ += r < 90 ? pick(0, 2000) : r < 98 ? pick(60'000, 120'000) : pick(10 * kMsPerMinute, 15 * kMsPerMinute);
    return now_;
  }

 private:
  int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  Event make(EventKind k, uint64_t account, int64_t amount) {
    Event e{};
    e.kind = k;
    e.program = 1;
    e.account = account;
    e.amount = amount;
    if (k != EventKind::kBalance) e.ref = {++next_ref_, 0x7e57};
    e.store = 12;
    e.terminal = static_cast<uint32_t>(pick(1, 4));
    return e;
  }
  Event remember(Event e) {
    history_.push_back(e);
    if (history_.size() > 400) history_.erase(history_.begin());
    return e;
  }

  std::mt19937_64 rng_;
  uint64_t members_;
  uint64_t next_ref_ = 0;
  int64_t now_ = kT0;
  std::vector<Event> history_;
};

// Everything a ledger's shards hold that events can observe.
struct Snapshot {
  std::map<uint64_t, AccountState> accounts;
  ProgramStats stats;
  std::vector<uint64_t> last_seq;
  uint64_t references = 0;
};

Snapshot snapshot(Ledger& l) {
  Snapshot s;
  Pipeline& p = l.pipeline();
  for (uint16_t i = 0; i < p.shard_count(); ++i) {
    const Shard& sh = p.shard(i);
    sh.for_each_account(1, [&](uint64_t id, const AccountState& st) { s.accounts[id] = st; });
    s.stats += *sh.stats(1);
    s.last_seq.push_back(sh.last_seq());
  }
  s.references = p.fraud_set().size();
  return s;
}

void expect_same(const Snapshot& a, const Snapshot& b) {
  ASSERT_EQ(a.accounts.size(), b.accounts.size());
  for (const auto& [id, st] : a.accounts) {
    auto it = b.accounts.find(id);
    ASSERT_NE(it, b.accounts.end()) << id;
    EXPECT_EQ(st.available, it->second.available) << id;
    EXPECT_EQ(st.held, it->second.held) << id;
    EXPECT_EQ(st.lifetime_earned, it->second.lifetime_earned) << id;
    EXPECT_EQ(st.lifetime_redeemed, it->second.lifetime_redeemed) << id;
    EXPECT_EQ(st.qualifying, it->second.qualifying) << id;
    EXPECT_EQ(st.tier, it->second.tier) << id;
  }
  EXPECT_EQ(a.stats.issued, b.stats.issued);
  EXPECT_EQ(a.stats.redeemed, b.stats.redeemed);
  EXPECT_EQ(a.stats.clawed_back, b.stats.clawed_back);
  EXPECT_EQ(a.stats.adjusted, b.stats.adjusted);
  EXPECT_EQ(a.stats.transfer_out, b.stats.transfer_out);
  EXPECT_EQ(a.stats.transfer_in, b.stats.transfer_in);
  EXPECT_EQ(a.stats.transfer_bounced, b.stats.transfer_bounced);
  EXPECT_EQ(a.stats.members, b.stats.members);
  EXPECT_EQ(a.stats.duplicates, b.stats.duplicates);
  EXPECT_EQ(a.stats.replays, b.stats.replays);
  EXPECT_EQ(a.stats.events, b.stats.events);
  EXPECT_EQ(a.last_seq, b.last_seq);
  EXPECT_EQ(a.references, b.references);
}

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
