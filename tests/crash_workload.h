// The workload of the crash tests, shared by the child that is killed and the test that checks
// it: event i is a pure function of i, so any incarnation regenerates the same event.
#pragma once

#include <cstdint>
#include <string>

#include "engine/flat_table.h"
#include "engine/program.h"
#include "storage/ledger.h"

namespace tally::crash {

constexpr uint64_t kMembers = 200;
constexpr uint64_t kTag = 0xc0ffee;  // ref.hi of every reference in this workload

inline storage::LedgerOptions ledger_options(const std::string& dir) {
  storage::LedgerOptions o;
  o.store.dir = dir;
  o.pipeline.shard_count = 2;
  Program p = default_program();
  p.accounts_max = 1000;
  p.orders_max = 200'000;
  p.holds_open_max = 50'000;
  p.events_per_minute_max = 0;  // a burst of a whole minute's traffic per second is the point
  p.points_per_day_max = 0;
  o.pipeline.programs = {p};
  o.pipeline.references_max = 400'000;
  o.committer.txn_bytes_max = 32 << 10;  // many small commits: many moments to die in
  // A checkpoint round every ~350 effects: kills land inside rounds, completions and trims.
  o.checkpoint.interval_log_bytes = 16 << 10;
  o.pipeline.checkpoint_slices_per_batch = 2048;  // a round finishes within a child's short life
  o.history.segment_records = 128;                // index segments (trimming waits for them)
  o.history.entries_per_commit = 1024;
  o.checkpoint.trim_batches_per_commit = 8;
  // Slices per commit: enough that a round (up to ~13 MiB of order slices per shard here)
  // completes within a child's short life, so kills also land in trims; CheckpointBudgetTest
  // covers the bounded default.
  o.checkpoint.slice_bytes_per_commit = 16u << 20;
  return o;
}

// Event number i: enrolls first, then earns, redeems, transfers, holds, adjustments, balance
// reads, and earns that reuse the order ID of an earlier earn (duplicates by design). The event's
// `store` field is i + 1, so every acknowledgement names the event it answers.
inline Event event_at(uint64_t i) {
  Event e{};
  e.program = 1;
  e.store = static_cast<uint32_t>(i + 1);
  e.ref = {i + 1, kTag};
  if (i < kMembers) {
    e.kind = EventKind::kEnroll;
    e.account = i + 1;
    return e;
  }
  uint64_t h = mix64(i * 0x9e3779b97f4a7c15ULL + 17);
  e.account = 1 + h % kMembers;
  uint64_t r = (h >> 16) % 100;
  uint64_t amount = (h >> 32) % 100'000 + 1;
  if (r < 58) {
    e.kind = EventKind::kEarn;
    e.amount = static_cast<int64_t>(amount);
  } else if (r < 61) {  // a different purchase reusing the order ID of an earlier event
    uint64_t j = kMembers + (h >> 40) % (i - kMembers + 1);
    e.kind = EventKind::kEarn;
    e.ref = {j + 1, kTag};
    e.amount = static_cast<int64_t>(amount) + 1;
  } else if (r < 80) {
    e.kind = EventKind::kRedeem;
    e.amount = static_cast<int64_t>(amount % 300 + 1);
  } else if (r < 86) {
    e.kind = EventKind::kTransfer;
    e.counterparty = 1 + (h >> 24) % kMembers;
    if (e.counterparty == e.account) e.counterparty = e.account % kMembers + 1;
    e.amount = static_cast<int64_t>(amount % 100 + 1);
  } else if (r < 91) {
    e.kind = EventKind::kHold;
    e.amount = static_cast<int64_t>(amount % 100 + 1);
  } else if (r < 95) {
    e.kind = EventKind::kAdjust;
    e.amount = static_cast<int64_t>(amount % 50 + 1);
    e.code = 3;
  } else {
    e.kind = EventKind::kBalance;
    e.ref = {};
  }
  return e;
}

}  // namespace tally::crash
