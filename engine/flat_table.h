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
//
// Checkpoints (docs/checkpoints.md): the slots are cut into slices of kSliceEntries. Every write
// path marks its slice dirty (one byte per slice). begin_checkpoint() turns the dirty slices into
// pending ones: the checkpoint must save each as it is at that moment. save_pending() saves them a
// few at a time; a write to a pending slice saves it first (copy on write), so every saved slice
// shows the table at the moment of the cut, however long the checkpoint takes. Slot positions never
// change except through writes, so a slice's index is a stable key.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

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

// Receives the slices a checkpoint saves: `len` bytes of slots, or len 0 for a slice with no entry.
class SliceSink {
 public:
  virtual void save_slice(uint8_t table, uint64_t slice, const void* bytes, size_t len) = 0;

 protected:
  ~SliceSink() = default;
};

template <class Entry, class Traits>
class FlatTable {
 public:
  using Key = typename Traits::Key;
  static constexpr uint64_t kSliceEntries = 16;

  explicit FlatTable(uint64_t capacity_max) : capacity_max_(capacity_max) {
    // Load factor at most 7/8 at full capacity, so probing always ends at an empty slot
    // (capacity + capacity / 7 slots: a 56-byte record costs at most 64 bytes per entry of a full
    // table, empty slots included.)
    slot_count_ = capacity_max + capacity_max / 7;
    if (slot_count_ < capacity_max + 8) slot_count_ = capacity_max + 8;
    // Zero pages from mmap, on huge pages where the kernel allows (engine/big_alloc.h).
    slots_ = static_cast<Entry*>(big_alloc(slot_count_ * sizeof(Entry)));
    slice_flags_.assign((slot_count_ + kSliceEntries - 1) / kSliceEntries, 0);
  }
  ~FlatTable() { big_free(slots_, slot_count_ * sizeof(Entry)); }
  FlatTable(const FlatTable&) = delete;
  FlatTable& operator=(const FlatTable&) = delete;

  // The entry for `key`, or nullptr. The non-const form is for writing: it marks the slice.
  Entry* find(const Key& key) {
    uint64_t i = locate(key);
    if (i == kNone) return nullptr;
    touch(i);
    return &slots_[i];
  }
  const Entry* find(const Key& key) const {
    uint64_t i = locate(key);
    return i == kNone ? nullptr : &slots_[i];
  }

  // The entry for `key`, created (zeroed, then Traits::init) if absent; nullptr when a new entry
  // would exceed capacity_max. `created` says which.
  Entry* insert(const Key& key, bool* created) {
    for (uint64_t i = home(key);; i = next(i)) {
      Entry& e = slots_[i];
      if (Traits::is_empty(e)) {
        if (size_ >= capacity_max_) return nullptr;
        touch(i);
        Traits::init(e, key);
        ++size_;
        *created = true;
        return &e;
      }
      if (Traits::key(e) == key) {
        *created = false;
        touch(i);
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
        touch(hole);
        slots_[hole] = e;
        hole = i;
      }
    }
    touch(hole);
    std::memset(static_cast<void*>(&slots_[hole]), 0, sizeof(Entry));
    --size_;
    return true;
  }

  // Removes every entry (touches the whole array: a pause proportional to its size, and during a
  // checkpoint every pending slice is saved first).
  void clear() {
    for (uint64_t s = 0; s < slice_flags_.size(); ++s) {
      if (slice_flags_[s] & kPending) save(s);
      slice_flags_[s] |= kDirty;
    }
    std::memset(static_cast<void*>(slots_), 0, slot_count_ * sizeof(Entry));
    size_ = 0;
  }

  // ---- checkpoints ----
  void set_slice_sink(SliceSink* sink, uint8_t table_id) {
    sink_ = sink;
    table_id_ = table_id;
  }
  uint64_t slice_count() const { return slice_flags_.size(); }
  uint64_t slot_count() const { return slot_count_; }
  // The cut: every slice written since the previous cut is pending (must be saved as it is now).
  void begin_checkpoint() {
    pending_count_ = 0;
    for (uint8_t& f : slice_flags_) {
      f = (f & kDirty) ? kPending : 0;
      pending_count_ += f != 0;
    }
    cursor_ = 0;
  }
  // Saves up to `max` pending slices to the sink; returns how many it saved.
  size_t save_pending(size_t max) {
    size_t saved = 0;
    while (saved < max && pending_count_ > 0 && cursor_ < slice_flags_.size()) {
      if (slice_flags_[cursor_] & kPending) {
        save(cursor_);
        ++saved;
      }
      ++cursor_;
    }
    return saved;
  }
  uint64_t pending() const { return pending_count_; }
  // Recovery: puts back a saved slice (len bytes: the slice's slots; 0: an empty slice). False if
  // the length does not fit this table's shape. Call recount() after the last one.
  bool restore_slice(uint64_t slice, const void* bytes, size_t len) {
    if (slice >= slice_flags_.size()) return false;
    uint64_t first = slice * kSliceEntries;
    uint64_t n = std::min(kSliceEntries, slot_count_ - first);
    if (len == 0) {
      std::memset(static_cast<void*>(&slots_[first]), 0, n * sizeof(Entry));
      return true;
    }
    if (len != n * sizeof(Entry)) return false;
    std::memcpy(static_cast<void*>(&slots_[first]), bytes, len);
    return true;
  }
  void recount() {
    size_ = 0;
    for (uint64_t i = 0; i < slot_count_; ++i) size_ += !Traits::is_empty(slots_[i]);
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

  // The entry in slot i (i < slot_count()), or nullptr if the slot is empty.
  const Entry* at(uint64_t i) const { return Traits::is_empty(slots_[i]) ? nullptr : &slots_[i]; }

  uint64_t size() const { return size_; }
  uint64_t capacity_max() const { return capacity_max_; }
  uint64_t bytes() const { return slot_count_ * sizeof(Entry); }

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};
  static constexpr uint8_t kDirty = 1;    // written since the last cut
  static constexpr uint8_t kPending = 2;  // dirty at the current cut, not saved yet

  uint64_t locate(const Key& key) const {
    for (uint64_t i = home(key);; i = next(i)) {
      const Entry& e = slots_[i];
      if (Traits::is_empty(e)) return kNone;
      if (Traits::key(e) == key) return i;
    }
  }
  // Before any write to slot i: a pending slice is saved as it was at the cut, then marked dirty.
  void touch(uint64_t i) {
    uint64_t s = i / kSliceEntries;
    if (slice_flags_[s] & kPending) [[unlikely]] save(s);
    slice_flags_[s] |= kDirty;
  }
  void save(uint64_t s) {
    uint64_t first = s * kSliceEntries;
    uint64_t n = std::min(kSliceEntries, slot_count_ - first);
    bool any = false;
    for (uint64_t i = first; i < first + n && !any; ++i) any = !Traits::is_empty(slots_[i]);
    if (sink_ != nullptr) sink_->save_slice(table_id_, s, &slots_[first], any ? n * sizeof(Entry) : 0);
    slice_flags_[s] &= static_cast<uint8_t>(~kPending);
    --pending_count_;
  }

  uint64_t home(const Key& key) const { return fastrange64(Traits::hash(key), slot_count_); }
  uint64_t next(uint64_t i) const { return i + 1 == slot_count_ ? 0 : i + 1; }

  Entry* slots_ = nullptr;
  uint64_t slot_count_ = 0;
  uint64_t capacity_max_ = 0;
  uint64_t size_ = 0;
  std::vector<uint8_t> slice_flags_;  // kDirty | kPending, one byte per slice
  SliceSink* sink_ = nullptr;
  uint8_t table_id_ = 0;
  uint64_t pending_count_ = 0;
  uint64_t cursor_ = 0;
};

}  // namespace tally
