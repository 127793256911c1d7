// Tally engine: a program's rules (a merchant's loyalty scheme).
//
// A Program is plain data, immutable while shards use it. It is built by the configuration loader
// (tools/, from TOML) or by default_program(), checked by validate(), and shared read-only by every
// shard. Rounding everywhere is floor, applied once at the end of a computation.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "engine/types.h"

namespace tally {

// One rung of the tier ladder: reached when qualifying points >= threshold_points.
struct TierRule {
  int64_t threshold_points = 0;
  uint32_t multiplier_permille = 1000;  // earn multiplier: 1500 = x1.5
  std::string name;
};

// Points for an action and how often it may be awarded: at most limit_count awards in a window of
// limit_period_days (0 = no limit). The window opens with the first award and lasts that long.
struct ActionRule {
  int64_t points = 0;  // 0 = this action is not part of the program
  uint32_t limit_count = 0;
  uint32_t limit_period_days = 0;
};

constexpr size_t kTiersMax = 8;

struct Program {
  uint32_t id = 0;
  std::string name;
  uint16_t currency = 0;  // ISO 4217 numeric, e.g. 978 = EUR, 840 = USD

  // Earn: points = floor(amount_minor * earn_points * tier multiplier_permille /
  //                      (earn_per_minor * 1000)), then limited by the caps below.
  int64_t earn_points = 1;
  int64_t earn_per_minor = 100;  // 1 point per 100 minor units (per whole currency unit)
  int64_t earn_points_max = 0;   // per single earn; more is cut to this (0 = no limit)

  int64_t signup_bonus_points = 0;
  std::array<ActionRule, kActionKindCount> actions{};  // indexed by ActionKind

  TierRule tiers[kTiersMax];  // tiers[0] is the base tier (threshold 0)
  uint8_t tier_count = 1;

  // Per-account caps, by the program's local day and minute (utc_offset_minutes).
  int64_t points_per_day_max = 0;     // earned points per day; the excess is cut (0 = none)
  uint32_t events_per_minute_max = 0; // mutating events per minute (0 = none)
  int64_t redeem_points_min = 0;      // smallest redeem (0 = none)

  int64_t hold_timeout_ms = 30 * kMsPerMinute;
  int64_t refund_window_ms = 90 * kMsPerDay;
  // Business-time window of the order-ID dedup: references whose business time is older are
  // refused as stale, so forgetting them after this long is safe.
  int64_t dedup_window_ms = 400 * kMsPerDay;
  // How far a business time may lie ahead of the server clock (clock skew of a till).
  int64_t future_skew_ms_max = kMsPerDay;

  // The program's time zone as a fixed offset from UTC: days and caps follow it. (A fixed
  // offset, not an IANA zone: a daylight-saving shift moves the day boundary by an hour.)
  int32_t utc_offset_minutes = 0;

  // Capacity, fixed at start-up: tables never grow on the hot path.
  uint64_t accounts_max = 1'000'000;
  uint64_t holds_open_max = 100'000;     // open holds at once, per shard
  uint64_t orders_max = 4'000'000;       // orders remembered per refund-window generation, per shard
};

// Empty when the program is usable, else a sentence naming the first bad field.
std::string validate(const Program& p);

// The built-in program used when no configuration is given: program 1, EUR, 1 point per euro,
// 50 points sign-up bonus, bronze/silver/gold/platinum tiers, actions with common limits.
Program default_program();

// Program-local day number (days since 1970-01-01 in the program's offset) of a UTC time.
inline int64_t local_day(const Program& p, int64_t time_ms) {
  int64_t local = time_ms + int64_t{p.utc_offset_minutes} * kMsPerMinute;
  return local >= 0 ? local / kMsPerDay : (local - kMsPerDay + 1) / kMsPerDay;
}
inline int64_t local_minute(const Program& p, int64_t time_ms) {
  int64_t local = time_ms + int64_t{p.utc_offset_minutes} * kMsPerMinute;
  return local >= 0 ? local / kMsPerMinute : (local - kMsPerMinute + 1) / kMsPerMinute;
}

}  // namespace tally
