// The fraud set's lock-free probe and claim. Invariant that makes claims exact: slots of a group
// turn from empty to non-empty strictly in slot order (a claim takes the lowest empty slot, with a
// CAS on the whole control word) and never turn back. So every claimant of one reference walks the
// same groups, meets the same first empty slot, and whoever loses the CAS on it re-reads the word
// and finds the winner's entry (waiting while it is busy).
#include "engine/fraud_set.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <thread>

#include "engine/big_alloc.h"
#include "engine/flat_table.h"

namespace tally {
namespace {

constexpr uint64_t kLowBits = 0x0101010101010101ULL;
constexpr uint64_t kHighBits = 0x8080808080808080ULL;
constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL;
constexpr uint8_t kEmpty = 0x80;
constexpr uint8_t kBusy = 0xff;
constexpr uint64_t kAllEmpty = kLowBits * kEmpty;
constexpr int64_t kBudgetChunk = 1024;

// High bit of each byte of `x` that is zero (exact: no borrow between bytes).
inline uint64_t zero_bytes(uint64_t x) { return ~(((x & kLow7) + kLow7) | x) & kHighBits; }
inline uint64_t match_bytes(uint64_t word, uint8_t h7) { return zero_bytes(word ^ (kLowBits * h7)); }
inline uint64_t empty_bytes(uint64_t word) {
  uint64_t low_nonzero = ((word & kLow7) + kLow7) & kHighBits;
  return word & kHighBits & ~low_nonzero;
}
inline uint64_t busy_bytes(uint64_t word) { return zero_bytes(~word); }
inline unsigned slot_of(uint64_t byte_mask) { return static_cast<unsigned>(__builtin_ctzll(byte_mask)) / 8; }

inline void pause_briefly(unsigned* spins) {
  if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();  // the writer was preempted between its two stores
  }
}

}  // namespace

FraudSet::FraudSet(uint64_t capacity_max, uint16_t shard_count)
    : capacity_max_(capacity_max), shard_count_(shard_count), budget_(static_cast<int64_t>(capacity_max)) {
  if (shard_count == 0 || shard_count > kShardsMax) std::abort();
  uint64_t slots = capacity_max + capacity_max / 7 + 8;  // load <= 7/8
  group_count_ = (slots + 7) / 8;
  static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));
  void* words = big_alloc(group_count_ * sizeof(uint64_t));
  control_ = new (words) std::atomic<uint64_t>[group_count_];
  for (uint64_t g = 0; g < group_count_; ++g) control_[g].store(kAllEmpty, std::memory_order_relaxed);
  entries_ = static_cast<Entry*>(big_alloc(group_count_ * 8 * sizeof(Entry)));
  shards_ = std::make_unique<ShardState[]>(shard_count);
}

FraudSet::~FraudSet() {
  big_free(entries_, group_count_ * 8 * sizeof(Entry));
  big_free(control_, group_count_ * sizeof(uint64_t));  // atomics of uint64_t: nothing to destroy
}

Ref128 FraudSet::key_of(uint32_t program, const Ref128& ref) {
  XXH128_hash_t h = XXH3_128bits_withSeed(&ref, sizeof(ref), program);
  return {h.low64, h.high64};
}

void FraudSet::prefetch(uint32_t program, const Ref128& ref) const {
  uint64_t g = fastrange64(key_of(program, ref).hi, group_count_);
  __builtin_prefetch(&control_[g], 1, 1);  // claims write it
  // The group's entries (192 bytes, 3 whole lines): a claim writes one, a matching probe reads
  // one; a claim's release must wait for that write, so a miss there would stall the shard.
  const char* group = reinterpret_cast<const char*>(&entries_[g * 8]);
  __builtin_prefetch(group, 1, 1);
  __builtin_prefetch(group + 64, 1, 1);
  __builtin_prefetch(group + 128, 1, 1);
}

FraudSet::Owner FraudSet::find(uint32_t program, const Ref128& ref) const {
  const Ref128 key = key_of(program, ref);
  const uint64_t h = key.hi;
  uint8_t h7 = static_cast<uint8_t>(h & 0x7f);
  uint64_t g = fastrange64(h, group_count_);
  for (uint64_t step = 0; step < group_count_; ++step) {
    uint64_t word = control_[g].load(std::memory_order_acquire);
    for (uint64_t m = match_bytes(word, h7); m != 0; m &= m - 1) {
      const Entry& e = entries_[g * 8 + slot_of(m)];
      if (e.key == key) {
        uint16_t owner = static_cast<uint16_t>(e.meta & 0xffff);
        return {true, owner, shards_[owner].claim_seq.load(std::memory_order_acquire)};
      }
    }
    // A busy slot is a claim still being written: not yet visible, so "absent" is a true answer.
    if (empty_bytes(word) != 0) return {};
    g = g + 1 == group_count_ ? 0 : g + 1;
  }
  return {};
}

bool FraudSet::reserve_slot(uint16_t shard) {
  ShardState& s = shards_[shard];
  if (s.budget_local > 0) return true;
  int64_t before = budget_.fetch_sub(kBudgetChunk, std::memory_order_relaxed);
  s.budget_local = std::clamp<int64_t>(before, 0, kBudgetChunk);
  return s.budget_local > 0;
}

FraudSet::ClaimResult FraudSet::claim(uint32_t program, const Ref128& ref, uint16_t shard,
                                      uint64_t seq, uint16_t day, Owner* owner) {
  ShardState& me = shards_[shard];
  const Ref128 key = key_of(program, ref);
  const uint64_t h = key.hi;
  uint8_t h7 = static_cast<uint8_t>(h & 0x7f);
  uint64_t g = fastrange64(h, group_count_);
  for (uint64_t step = 0; step < group_count_; ++step) {
    std::atomic<uint64_t>& control = control_[g];
    uint64_t word = control.load(std::memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
      for (uint64_t m = match_bytes(word, h7); m != 0; m &= m - 1) {
        const Entry& e = entries_[g * 8 + slot_of(m)];
        if (e.key == key) {
          uint16_t winner = static_cast<uint16_t>(e.meta & 0xffff);
          *owner = {true, winner, shards_[winner].claim_seq.load(std::memory_order_acquire)};
          return ClaimResult::kTaken;
        }
      }
      if (busy_bytes(word) != 0) {  // may be our reference being written: wait for it
        pause_briefly(&spins);
        word = control.load(std::memory_order_acquire);
        continue;
      }
      uint64_t empty = empty_bytes(word);
      if (empty == 0) break;  // group full: next group
      if (!reserve_slot(shard)) return ClaimResult::kFull;
      unsigned slot = slot_of(empty);
      uint64_t shift = slot * 8;
      uint64_t busy_word = (word & ~(uint64_t{0xff} << shift)) | (uint64_t{kBusy} << shift);
      if (!control.compare_exchange_weak(word, busy_word, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
        continue;  // the word changed: look again at what was written
      }
      Entry& e = entries_[g * 8 + slot];
      e.key = key;
      e.meta = uint64_t{shard} | (uint64_t{day} << 16);
      // Only a successful claim publishes its seq, before the entry becomes visible (the release
      // below): a loser reads a seq at or after this claim that belongs to a *winning* effect.
      // Publishing on attempts that lose would let two losers depend on each other: a cycle.
      me.claim_seq.store(seq, std::memory_order_relaxed);
      // Busy (0xff) -> h7: clear the bits h7 lacks, leaving the other slots' bytes alone.
      control.fetch_and(~(uint64_t{static_cast<uint8_t>(kBusy ^ h7)} << shift),
                        std::memory_order_release);
      --me.budget_local;
      // Only this shard's thread writes its counter: a plain store, not a locked add (a locked
      // instruction waits for every store still missing the cache).
      me.claimed.store(me.claimed.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return ClaimResult::kClaimed;
    }
    g = g + 1 == group_count_ ? 0 : g + 1;
  }
  return ClaimResult::kFull;
}

bool FraudSet::place_unsynchronised(const Ref128& key, uint64_t g, uint64_t meta) {
  uint8_t h7 = static_cast<uint8_t>(key.hi & 0x7f);
  for (uint64_t step = 0; step < group_count_; ++step) {
    uint64_t word = control_[g].load(std::memory_order_relaxed);
    for (uint64_t m = match_bytes(word, h7); m != 0; m &= m - 1)
      if (entries_[g * 8 + slot_of(m)].key == key) return false;
    uint64_t empty = empty_bytes(word);
    if (empty != 0) {
      unsigned slot = slot_of(empty);
      entries_[g * 8 + slot] = {key, meta};
      uint64_t shift = slot * 8;
      control_[g].store((word & ~(uint64_t{0xff} << shift)) | (uint64_t{h7} << shift),
                        std::memory_order_relaxed);
      return true;
    }
    g = g + 1 == group_count_ ? 0 : g + 1;
  }
  return false;
}

bool FraudSet::insert_unsynchronised(uint32_t program, const Ref128& ref, uint16_t shard,
                                    uint16_t day) {
  if (size() >= capacity_max_) return false;
  const Ref128 key = key_of(program, ref);
  uint64_t meta = uint64_t{shard} | (uint64_t{day} << 16);
  if (!place_unsynchronised(key, fastrange64(key.hi, group_count_), meta)) return false;
  budget_.fetch_sub(1, std::memory_order_relaxed);
  bulk_loaded_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

size_t FraudSet::insert_unsynchronised(std::span<const BulkClaim> claims) {
  // Each insert misses on its control word and then on the entry it writes (random over
  // gigabytes). In two steps ahead of the insert: 2 x kAhead claims early, hash and prefetch the
  // control word; kAhead claims early, read it (in cache by then) and prefetch just the entry the
  // insert will write, not the whole 3-line group. So many claims' misses are in flight at once.
  constexpr size_t kAhead = 16;
  struct Ahead {
    Ref128 key;
    uint64_t group;
  };
  Ahead ring[2 * kAhead];
  auto hash_and_prefetch_word = [&](size_t i) {
    Ahead& a = ring[i % (2 * kAhead)];
    a.key = key_of(claims[i].program, claims[i].ref);
    a.group = fastrange64(a.key.hi, group_count_);
    __builtin_prefetch(&control_[a.group], 1, 1);
  };
  auto prefetch_entry = [&](size_t i) {
    const Ahead& a = ring[i % (2 * kAhead)];
    uint64_t word = control_[a.group].load(std::memory_order_relaxed);
    uint64_t m = match_bytes(word, static_cast<uint8_t>(a.key.hi & 0x7f));
    if (m == 0) m = empty_bytes(word);
    if (m == 0) return;  // a full group: the insert walks on
    const char* e = reinterpret_cast<const char*>(&entries_[a.group * 8 + slot_of(m)]);
    __builtin_prefetch(e, 1, 1);
    __builtin_prefetch(e + sizeof(Entry) - 1, 1, 1);  // 24-byte entries may straddle two lines
  };
  const size_t n = claims.size();
  for (size_t i = 0; i < std::min(2 * kAhead, n); ++i) hash_and_prefetch_word(i);
  for (size_t i = 0; i < std::min(kAhead, n); ++i) prefetch_entry(i);
  const uint64_t held = size();
  uint64_t added = 0;  // the shared counters once at the end: a locked add per insert would wait
  size_t i = 0;        // for each entry's write to reach the cache, serialising the misses
  for (; i < n && held + added < capacity_max_; ++i) {
    Ahead a = ring[i % (2 * kAhead)];
    if (i + kAhead < n) prefetch_entry(i + kAhead);
    if (i + 2 * kAhead < n) hash_and_prefetch_word(i + 2 * kAhead);
    const BulkClaim& c = claims[i];
    added += place_unsynchronised(a.key, a.group, uint64_t{c.shard} | (uint64_t{c.day} << 16)) ? 1 : 0;
  }
  budget_.fetch_sub(static_cast<int64_t>(added), std::memory_order_relaxed);
  bulk_loaded_.fetch_add(added, std::memory_order_relaxed);
  return i;
}

uint64_t FraudSet::size() const {
  uint64_t n = bulk_loaded_.load(std::memory_order_relaxed);
  for (uint16_t s = 0; s < shard_count_; ++s) n += shards_[s].claimed.load(std::memory_order_relaxed);
  return n;
}

uint64_t FraudSet::bytes() const { return group_count_ * (8 * sizeof(Entry) + sizeof(uint64_t)); }

}  // namespace tally
