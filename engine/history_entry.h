// Tally engine: what a member's statement line and an order lookup show of one logged effect.
//
// Plain data shared by the layers that answer history and lookup queries: storage/ builds these
// from the log and its index (storage/history.h), net/ encodes them on the wire
// (docs/protocol.md). Nothing here touches a file or a socket.
#pragma once

#include <cstdint>

#include "engine/types.h"

namespace tally {

// Where a record is in the log: batch LSN and its index in the batch.
struct LogPos {
  uint64_t lsn = 0;
  uint32_t index = 0;
  friend bool operator<(const LogPos& a, const LogPos& b) {
    return a.lsn != b.lsn ? a.lsn < b.lsn : a.index < b.index;
  }
  friend bool operator==(const LogPos&, const LogPos&) = default;
};

// What a statement line and an order lookup show of one logged effect.
struct HistoryEntry {
  LogPos at;
  uint32_t program = 0;
  uint64_t account = 0;
  EventKind kind = EventKind::kInvalid;
  Result result = Result::kOk;
  uint8_t flags = 0;   // effect flags (replay, claimed, capped, bounced)
  uint8_t tier = 0;    // after the effect
  Ref128 ref;
  Ref128 target;
  int64_t amount = 0;  // as the event asked (minor units or points)
  int64_t points = 0;  // moved for the account, signed
  int64_t time_ms = 0;
  int64_t available = 0;  // after the effect
  int64_t held = 0;
  uint64_t counterparty = 0;
  uint32_t store = 0;  // where it happened, as the event said
};

}  // namespace tally
