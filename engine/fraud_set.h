// Tally engine: the fraud set, the one table of claimed order references shared by all shards.
//
// An order reference credited once must never be credited again, to any account on any shard.
// Every shard probes and claims references here; claims are lock-free. A shard runs all its
// account-local checks first and claims the reference as the very last step, with one
// compare-and-swap, so a rejected event never consumes its reference. Of two shards claiming the
// same reference at the same moment exactly one wins; the loser learns which shard won and a
// sequence number of that shard at or after the winning claim (so the loser's verdict can wait
// until the claim is durable: DESIGN section 8).
//
// References are scoped by program: two merchants may number their orders alike. The table keys
// on XXH3-128 of the reference seeded with the program id, so (program, reference) pairs are what
// must be unique.
//
// Layout: 24-byte entries (reference + owner) in groups of 8, with one atomic 64-bit control word
// per group holding a byte per entry: empty, busy (being written), or 7 bits of the reference's
// hash. A probe reads control words (8 per cache line) and touches an entry only when its hash byte
// matches. Entries are never removed while shards run: the table is sized at start-up for the
// dedup window's references at a load of at most 7/8 (about 28.6 bytes per reference); the
// storage layer rebuilds it at recovery without references that have left the window.
//
// Thread safety: every method may be called from any thread, except insert_unsynchronised().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "engine/types.h"

namespace tally {

class FraudSet {
 public:
  static constexpr uint16_t kShardsMax = 1024;

  // capacity_max: references the table may hold (load <= 7/8 at that count).
  FraudSet(uint64_t capacity_max, uint16_t shard_count);
  ~FraudSet();
  FraudSet(const FraudSet&) = delete;
  FraudSet& operator=(const FraudSet&) = delete;

  struct Owner {
    bool found = false;
    uint16_t shard = 0;
    uint64_t seq = 0;  // a sequence of the owner shard at or after its claim
  };

  // Who holds `ref` of `program`, if anyone. Never blocks.
  Owner find(uint32_t program, const Ref128& ref) const;

  enum class ClaimResult : uint8_t { kClaimed, kTaken, kFull };
  // Claims `ref` for `shard`, whose effect with sequence `seq` carries it; `day` is the business
  // day (days since 1970) the reference belongs to. On kTaken, *owner names the winner.
  ClaimResult claim(uint32_t program, const Ref128& ref, uint16_t shard, uint64_t seq, uint16_t day,
                    Owner* owner);

  // Bulk load for recovery and benchmarks, before any shard runs: no atomics, no capacity budget
  // per shard. Returns false if the reference was present or the table is full.
  bool insert_unsynchronised(uint32_t program, const Ref128& ref, uint16_t shard, uint16_t day);

  // The same for many references at once (recovery re-enters a hundred million): inserted in
  // order, each as above (a reference given twice is held once, with its first owner), with the
  // memory misses of the next ones overlapped and no atomic read-modify-write per reference.
  // Returns how many of `claims` it went through: all of them, or fewer when the table became
  // full (claims[returned] and after were not inserted).
  struct BulkClaim {
    uint32_t program = 0;
    Ref128 ref;
    uint16_t shard = 0;
    uint16_t day = 0;
  };
  size_t insert_unsynchronised(std::span<const BulkClaim> claims);

  // Prefetches the control word where a probe for `ref` starts.
  void prefetch(uint32_t program, const Ref128& ref) const;

  uint64_t size() const;            // references held
  uint64_t capacity_max() const { return capacity_max_; }
  uint64_t bytes() const;           // memory of the table: entries + control words

 private:
  struct Entry {
    Ref128 key;     // key_of(program, reference)
    uint64_t meta;  // owner shard (bits 0-15), business day (bits 16-31)
  };
  static_assert(sizeof(Entry) == 24);

  static Ref128 key_of(uint32_t program, const Ref128& ref);
  bool reserve_slot(uint16_t shard);
  // Puts `key` in the first group from `g` with room; false if it was present (or no room).
  bool place_unsynchronised(const Ref128& key, uint64_t g, uint64_t meta);

  uint64_t capacity_max_;
  uint64_t group_count_;
  uint16_t shard_count_;
  std::atomic<uint64_t>* control_ = nullptr;  // group_count_ words (big_alloc)
  Entry* entries_ = nullptr;

  // Capacity is handed to shards in chunks so claims do not contend on one counter.
  std::atomic<int64_t> budget_;
  struct alignas(64) ShardState {
    std::atomic<uint64_t> claim_seq{0};  // the seq of this shard's latest successful claim
    int64_t budget_local = 0;            // owned by the shard's thread
    std::atomic<uint64_t> claimed{0};
  };
  std::unique_ptr<ShardState[]> shards_;
  std::atomic<uint64_t> bulk_loaded_{0};
};

}  // namespace tally
