// Tally tools: committed effects as consumers read them — JSON Lines and CSV, schema version 1.
//
// docs/events.md is the contract: field names, types, units, and which changes are compatible.
// tally-admin dump, tally-export and the Kafka sink all format through here, so a record reads the
// same wherever it is taken from. Pure code: no files, no sockets.
#pragma once

#include <cstdint>
#include <string>

#include "engine/types.h"

namespace tally {

constexpr uint32_t kEventSchemaVersion = 1;

// Where a record is in the log.
struct RecordPos {
  uint64_t lsn = 0;
  uint32_t index = 0;  // within its batch
  uint64_t epoch = 1;
};

// One JSON object, no trailing newline. Optional fields appear only when they are non-zero.
void append_json(std::string& out, const Effect& f, const RecordPos& at);
// The CSV header line and one record's line (no trailing newline), every column always present.
const std::string& csv_header();
void append_csv(std::string& out, const Effect& f, const RecordPos& at);
// "replay|claimed" (names of the effect flags set, '|'-separated; empty when none).
std::string effect_flag_names(uint8_t flags);
// The reference as 32 hex digits (hi then lo), as `tally lookup --ref` takes it.
std::string ref_hex(const Ref128& r);

}  // namespace tally
