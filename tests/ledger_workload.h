// Shared by the recovery and checkpoint tests: a program with every side table in play, ledger
// options for a test directory, acknowledgement collection, a random loyalty workload, and a
// snapshot of everything a ledger's shards hold that events can observe.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "storage/ledger.h"

namespace tally::storage::testing_support {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

inline Program program() {
  Program p = default_program();  // tiers, caps, action limits: every side table in play
  p.accounts_max = 10'000;
  p.orders_max = 200'000;
  p.holds_open_max = 10'000;
  p.hold_timeout_ms = 60'000;
  p.refund_window_ms = 10 * kMsPerMinute;
  p.dedup_window_ms = 400 * kMsPerDay;
  return p;
}

inline LedgerOptions options(const std::string& dir, uint16_t shards, Program p = program()) {
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

inline Snapshot snapshot(Ledger& l) {
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

inline void expect_same(const Snapshot& a, const Snapshot& b) {
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

}  // namespace tally::storage::testing_support
