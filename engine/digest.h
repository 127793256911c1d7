// Tally engine: a digest of a ledger's whole state, to prove two copies equal (a follower and its
// primary, a ledger before and after recovery).
//
// XXH3-64 over, for each program in id order: its id, its totals summed over shards (issued,
// redeemed, expired, clawed back, adjusted, transfers, members), then every account in id order
// with its state (available, held, lifetime earned and redeemed, qualifying, tier, flags). The
// order of shards and of their tables does not matter. Not hot path: it sorts every account.
#pragma once

#include <cstdint>
#include <span>

#include "engine/program.h"
#include "engine/shard.h"

namespace tally {

uint64_t state_digest(std::span<const Shard* const> shards, std::span<const Program> programs);

}  // namespace tally
