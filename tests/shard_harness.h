// One shard running one program, for the engine's rule tests (tiers, stamp cards, bonuses): apply
// events at a clock the test moves, keep every effect in order (what a durable log would hold),
// check the ledger invariant, and replay that log onto a fresh shard the way recovery does.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "engine/shard.h"

namespace tally::testing {

// The default program made small for one shard's tests: room for 1000 members, no caps, one x1
// tier (tests add what they exercise).
inline Program small_program() {
  Program p = default_program();
  p.accounts_max = 1000;
  p.orders_max = 10'000;
  p.holds_open_max = 10;
  p.events_per_minute_max = 0;
  p.points_per_day_max = 0;
  p.tier_count = 1;
  return p;
}

class ShardHarness {
 public:
  void use(const Program& p) {
    program_ = p;
    ASSERT_EQ(validate(program_), "");
    fraud_ = std::make_unique<FraudSet>(1 << 16, 2);
    shard_ = std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), fraud_.get());
    log_.clear();
  }

  // Applies `e` (in the harness's program) at now(); returns every effect it produced.
  std::vector<Effect> apply(Event e) {
    e.program = program_.id;
    ApplyOutput out;
    shard_->apply(e, now_, &out);
    log_.insert(log_.end(), out.effects.begin(), out.effects.end());
    return out.effects;
  }
  static Event make(EventKind kind, uint64_t account, std::string_view id, int64_t amount = 0) {
    Event e{};
    e.kind = kind;
    e.account = account;
    e.amount = amount;
    if (!id.empty()) e.ref = reference_from_string(id);
    return e;
  }
  Statement statement(uint64_t account) const {
    Statement s;
    EXPECT_TRUE(shard_->statement(program_.id, account, &s));
    return s;
  }

  // The ledger invariant: the program's counters against the sum of what the accounts hold.
  void expect_invariant() const {
    if (!shard_) return;
    const ProgramStats& st = *shard_->stats(program_.id);
    int64_t held = 0;
    shard_->for_each_account(program_.id, [&](uint64_t, const AccountState& a) { held += a.available + a.held + a.pending; });
    EXPECT_EQ(st.expected_balances(), held) << "the counters and the accounts disagree";
  }

  // What recovery does with the log: each logged effect (reads are not logged) re-applied with
  // Shard::apply_logged onto `onto`, except those an earlier one produced already (an upgrade's
  // or a stamp card's effect comes with its purchase). Returns everything produced, in order.
  std::vector<Effect> replay_onto(Shard& onto, uint64_t after_seq = 0) const {
    std::vector<Effect> produced;
    uint64_t last = after_seq;
    ApplyOutput out;
    for (const Effect& f : log_) {
      if (f.event.kind == EventKind::kBalance || f.seq <= last) continue;
      out.clear();
      onto.apply_logged(f, &out);
      for (const Effect& g : out.effects) {
        if (g.event.kind == EventKind::kBalance) continue;
        produced.push_back(g);
        last = g.seq;
      }
    }
    return produced;
  }
  // Replays the whole log onto a fresh shard and checks every effect it gives against the logged
  // one: kind, code, points, flags and the state's balances, tier and qualifying points.
  void expect_replay_matches() const {
    std::unique_ptr<FraudSet> fraud;
    std::unique_ptr<Shard> replica = fresh_shard(&fraud);
    const std::vector<Effect> replayed = replay_onto(*replica);
    const std::vector<Effect> want = logged();
    ASSERT_EQ(replayed.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const Effect &r = replayed[i], &w = want[i];
      ASSERT_EQ(r.event.kind, w.event.kind) << "effect " << i;
      ASSERT_EQ(r.event.code, w.event.code) << "effect " << i;
      ASSERT_EQ(r.points, w.points) << "effect " << i;
      ASSERT_EQ(r.flags, w.flags) << "effect " << i;
      ASSERT_EQ(r.state.available, w.state.available) << "effect " << i;
      ASSERT_EQ(r.state.tier, w.state.tier) << "effect " << i;
      ASSERT_EQ(r.state.qualifying, w.state.qualifying) << "effect " << i;
      ASSERT_EQ(r.state.flags, w.state.flags) << "effect " << i;
    }
  }
  // The log without reads: what replay must reproduce.
  std::vector<Effect> logged() const {
    std::vector<Effect> v;
    for (const Effect& f : log_)
      if (f.event.kind != EventKind::kBalance) v.push_back(f);
    return v;
  }
  // A fresh shard for the same program (its own fraud set), to replay or restore onto.
  std::unique_ptr<Shard> fresh_shard(std::unique_ptr<FraudSet>* fraud) const {
    *fraud = std::make_unique<FraudSet>(1 << 16, 2);
    return std::make_unique<Shard>(0, std::span<const Program>(&program_, 1), fraud->get());
  }
  // A checkpoint of the shard now, restored onto a fresh one.
  struct Checkpoint {
    std::vector<uint8_t> state, slices;
  };
  Checkpoint checkpoint() {
    Checkpoint c;
    c.state = shard_->begin_checkpoint();
    while (!shard_->checkpoint_step(1000)) {
    }
    c.slices = shard_->checkpoint_out();
    return c;
  }
  std::unique_ptr<Shard> restore(const Checkpoint& c, std::unique_ptr<FraudSet>* fraud) const {
    std::unique_ptr<Shard> s = fresh_shard(fraud);
    s->restore_state(c.state);
    std::span<const uint8_t> in(c.slices);
    SliceRecord r;
    while (next_slice_record(&in, &r)) s->restore_slice(r.program, r.table, r.slice, r.bytes);
    s->finish_restore();
    return s;
  }

  const Program& program() const { return program_; }
  Shard& shard() { return *shard_; }
  const std::vector<Effect>& log() const { return log_; }
  int64_t& now() { return now_; }

 private:
  Program program_;
  std::unique_ptr<FraudSet> fraud_;
  std::unique_ptr<Shard> shard_;
  std::vector<Effect> log_;
  int64_t now_ = 0;
};

}  // namespace tally::testing
