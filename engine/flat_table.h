// Tally engine: a pre-sized open-addressing hash table for one thread.
//
// Entries live inline in one array (no heap node per entry); the array is allocated once, at
// construction, for `capacity_max` entries at a load factor of at most 7/8, and never grows: an
// insert past capacity returns nullptr and the caller reports kCapacityExhausted. Linear probing;
// erase shifts later entries back (no tombstones). The slot index is "fastrange" of a 64-bit hash,
// so the slot count need not be a power of two and memory follows the configured capacity.
//
// Traits supplies: `Key`, `static uint64_t hash(const Key&)`, `static Key key(const Entry&)`,
// `static bool is_empty(const Entry&)` (a zeroed entry must be empty), `static void
// init(Entry&, const Key&)`. Not thread-safe: the owning shard is its only user.
#pragma once

#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "engine/big_alloc.h"
#include "engine/types.h"

namespace tally {

// A strong 64-bit mixer (the xxHash/murmur finaliser): sequential ids spread over all slots.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Maps a 64-bit hash onto [0, n) without division.
inline uint64_t fastrange64(uint64_t hash, uint64_t n) {
  return static_cast<uint64_t>((static_cast<uint128>(hash) * n) >> 64);
}

template <class Entry, class Traits>
class FlatTable {
 public:
  using Key = typename Traits::Key;

  explicit FlatTable(uint64_t capacity_max) : capacity_max_(capacity_max) {
    // Load factor at most 7/8 at full capacity, so probing always ends at an empty slot
    // (capacity + capacity / 7 slots: a 56-byte record costs at most 64 bytes per entry of a full
    // table, empty slots included.)
    slot_count_ = capacity_max + capacity_max / 7;
    if (slot_count_ < capacity_max + 8) slot_count_ = capacity_max + 8;
    // Zero pages from mmap, on huge pages where the kernel allows (engine/big_alloc.h).
    slots_ = static_cast<Entry*>(big_alloc(slot_count_ * sizeof(Entry)));
  }
  ~FlatTable() { big_free(slots_, slot_count_ * sizeof(Entry)); }
  FlatTable(const FlatTable&) = delete;
  FlatTable& operator=(const FlatTable&) = delete;

  // The entry for `key`, or nullptr.
  Entry* find(const Key& key) {
    for (uint64_t i = home(key);; i = next(i)) {
      Entry& e = slots_[i];
      if (Traits::is_empty(e)) return nullptr;
      if (Traits::key(e) == key) return &e;
    }
  }
  const Entry* find(const Key& key) const { return const_cast<FlatTable*>(this)->find(key); }

  // The entry for `key`, created (zeroed, then Traits::init) if absent; nullptr when a new entry
  // would exceed capacity_max. `created` says which.
  Entry* insert(const Key& key, bool* created) {
    for (uint64_t i = home(key);; i = next(i)) {
      Entry& e = slots_[i];
      if (Traits::is_empty(e)) {
        if (size_ >= capacity_max_) return nullptr;
        Traits::init(e, key);
        ++size_;
        *created = true;
        return &e;
      }
      if (Traits::key(e) == key) {
        *created = false;
        return &e;
      }
    }
  }

  // Removes `key`; false if absent. Later entries of the probe run shift back into the hole.
  bool erase(const Key& key) {
    uint64_t hole = home(key);
    for (;; hole = next(hole)) {
      if (Traits::is_empty(slots_[hole])) return false;
      if (Traits::key(slots_[hole]) == key) break;
    }
    for (uint64_t i = next(hole);; i = next(i)) {
      Entry& e = slots_[i];
      if (Traits::is_empty(e)) break;
      uint64_t h = home(Traits::key(e));
      // Move e into the hole unless its home lies cyclically in (hole, i].
      bool home_in_range = hole <= i ? (hole < h && h <= i) : (hole < h || h <= i);
      if (!home_in_range) {
        slots_[hole] = e;
        hole = i;
      }
    }
    std::memset(static_cast<void*>(&slots_[hole]), 0, sizeof(Entry));
    --size_;
    return true;
  }

  // Removes every entry (touches the whole array: a pause proportional to its size).
  void clear() {
    std::memset(static_cast<void*>(slots_), 0, slot_count_ * sizeof(Entry));
    size_ = 0;
  }

  // Hints the cache about the home slot of `key`: lets a batch overlap its memory misses.
  // Both ends of the entry: an entry whose size is not a multiple of 64 straddles two lines.
  void prefetch(const Key& key) const {
    const char* e = reinterpret_cast<const char*>(&slots_[home(key)]);
    __builtin_prefetch(e, 0, 1);
    __builtin_prefetch(e + sizeof(Entry) - 1, 0, 1);
  }
  void prefetch_for_write(const Key& key) const {
    const char* e = reinterpret_cast<const char*>(&slots_[home(key)]);
    __builtin_prefetch(e, 1, 1);
    __builtin_prefetch(e + sizeof(Entry) - 1, 1, 1);
  }

  // Calls f(entry) for every entry, in slot order.
  template <class F>
  void for_each(F&& f) const {
    for (uint64_t i = 0; i < slot_count_; ++i)
      if (!Traits::is_empty(slots_[i])) f(slots_[i]);
  }

  uint64_t size() const { return size_; }
  uint64_t capacity_max() const { return capacity_max_; }
  uint64_t bytes() const { return slot_count_ * sizeof(Entry); }

 private:
  uint64_t home(const Key& key) const { return fastrange64(Traits::hash(key), slot_count_); }
  uint64_t next(uint64_t i) const { return i + 1 == slot_count_ ? 0 : i + 1; }

  Entry* slots_ = nullptr;
  uint64_t slot_count_ = 0;
  uint64_t capacity_max_ = 0;
  uint64_t size_ = 0;
};

}  // namespace tally
