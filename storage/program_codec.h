// Tally storage: program definitions as stored in meta ("programs"), so recovery replays the log
// under the rules it was written with, and a restart with different rules is caught.
//
// Format (version 1, little-endian): u32 version, u32 count, then per program every field of
// tally::Program in declaration order (integers fixed-width, strings as u32 length + bytes).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/program.h"

namespace tally::storage {

std::string encode_programs(std::span<const Program> programs);
// nullopt when the bytes are malformed or of an unknown version.
std::optional<std::vector<Program>> decode_programs(std::string_view bytes);

// Empty when `a` and `b` decide every event alike (capacity fields may differ: they size tables,
// they do not change results below capacity); else a sentence naming the first difference.
std::string rule_difference(std::span<const Program> stored, std::span<const Program> configured);

}  // namespace tally::storage
