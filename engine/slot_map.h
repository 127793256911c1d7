// Tally engine: which shard owns an account.
//
// slot = XXH3-64(program, account) mod 16384; a table maps each slot to a shard. The same two
// steps can later map slots to nodes, so clients and servers route alike. Immutable once built;
// any thread may read it.
#pragma once

#include <xxhash.h>

#include <array>
#include <cstdint>

#include "engine/types.h"

namespace tally {

constexpr uint32_t kSlotCount = 16384;

inline uint32_t slot_of(uint32_t program, uint64_t account) {
  // Explicit little-endian bytes: every client and server computes the same slot.
  unsigned char key[12];
  for (int i = 0; i < 4; ++i) key[i] = static_cast<unsigned char>(program >> (8 * i));
  for (int i = 0; i < 8; ++i) key[4 + i] = static_cast<unsigned char>(account >> (8 * i));
  return static_cast<uint32_t>(XXH3_64bits(key, sizeof(key)) % kSlotCount);
}

class SlotMap {
 public:
  // Slots dealt to shards round-robin: slot s belongs to shard s mod shard_count.
  explicit SlotMap(uint16_t shard_count) {
    for (uint32_t s = 0; s < kSlotCount; ++s) shard_of_slot_[s] = static_cast<uint16_t>(s % shard_count);
  }
  uint16_t shard_for(uint32_t program, uint64_t account) const {
    return shard_of_slot_[slot_of(program, account)];
  }

 private:
  std::array<uint16_t, kSlotCount> shard_of_slot_{};
};

}  // namespace tally
