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
  int64_t bonus_points = 0;  // credited on each upgrade into this tier (0 = none)
};

// Over what window qualifying points count, and when a tier is lost (docs/programs.md "Tiers over
// time"). Periods are program-local calendar years or months.
enum class TierPeriod : uint8_t {
  kLifetime = 0,      // qualifying points never lapse; a tier, once reached, is kept
  kCalendarYear = 1,  // points of the calendar year; a tier reached is kept through the next year
  kRollingMonths = 2, // points of the last window_months calendar months (this one included); the
                      // tier is reviewed at the start of every month
};

struct TierPolicy {
  TierPeriod period = TierPeriod::kLifetime;
  uint32_t window_months = 12;  // kRollingMonths: 1..12
  // A downgrade takes effect this many days after the period it is decided at begins (0 = on its
  // first day); less than the period.
  uint32_t grace_days = 0;

  bool windowed() const { return period != TierPeriod::kLifetime; }
};

// Points for an action and how often it may be awarded: at most limit_count awards in a window of
// limit_period_days (0 = no limit). The window opens with the first award and lasts that long.
struct ActionRule {
  int64_t points = 0;  // 0 = this action is not part of the program
  uint32_t limit_count = 0;
  uint32_t limit_period_days = 0;
};

constexpr size_t kTiersMax = 8;

// A punch card (docs/programs.md "Stamp cards"): each purchase of at least min_purchase_minor
// stamps it once; `stamps` stamps complete it and credit reward_points.
struct StampCard {
  std::string name;
  uint32_t stamps = 0;             // 2..100
  int64_t min_purchase_minor = 0;  // 0: any purchase
  int64_t reward_points = 0;
};
constexpr size_t kStampCardsMax = 4;

// A time-boxed earn multiplier ("double points this weekend", docs/programs.md "Campaigns"):
// purchases dated on local days first_day..last_day (inclusive) earn it on top of the tier's.
struct Campaign {
  std::string name;
  int64_t first_day = 0;  // program-local day numbers (days since 1970-01-01)
  int64_t last_day = 0;
  uint32_t multiplier_permille = 1000;
};
constexpr size_t kCampaignsMax = 8;

// When points earned on a day stop being spendable (docs/programs.md "Expiry").
enum class ExpiryKind : uint8_t {
  kNever = 0,
  kDays = 1,        // points earned on local day D are spendable through day D + expiry_days
  kEndOfMonth = 2,  // through the last day of the month expiry_months after D's month
};

// The life of points (docs/programs.md "Lots, pending points and expiry"). Each credit is kept as
// a lot dated by its expiry day; spending takes the earliest-expiring lots first. Days are
// program-local days (utc_offset_minutes).
struct LotPolicy {
  ExpiryKind expiry = ExpiryKind::kNever;
  uint32_t expiry_days = 0;
  uint32_t expiry_months = 0;
  // Purchase points are pending, not spendable, until local day D + pending_days (0 = at once); a
  // refund before then cancels them.
  uint32_t pending_days = 0;
  // Every point lapses at the end of local day (last activity + inactivity_days) (0 = never).
  uint32_t inactivity_days = 0;
  // D, the day a purchase or award counts from: its business day (true: a late event from an
  // offline till is dated by the purchase) or the day it reached the server.
  bool date_by_purchase = true;

  bool has_lots() const { return expiry != ExpiryKind::kNever || pending_days > 0; }
};

struct Program;
// True when tier changes are effects of their own (kTier): a tier window or an upgrade bonus.
bool tiers_have_effects(const Program& p);

// What a program's balances count (docs/programs.md "Cashback"): points, or money in the
// program's currency (minor units) through the same machinery.
enum class Unit : uint8_t { kPoints = 0, kCashback = 1 };

struct Program {
  uint32_t id = 0;
  std::string name;
  uint16_t currency = 0;  // ISO 4217 numeric, e.g. 978 = EUR, 840 = USD
  Unit unit = Unit::kPoints;

  // Earn: points = floor(amount_minor * earn_points * tier multiplier_permille /
  //                      (earn_per_minor * 1000)), then limited by the caps below.
  int64_t earn_points = 1;
  int64_t earn_per_minor = 100;  // 1 point per 100 minor units (per whole currency unit)
  int64_t earn_points_max = 0;   // per single earn; more is cut to this (0 = no limit)

  int64_t signup_bonus_points = 0;
  // Purchase bonuses (0: none): on a member's first accepted purchase, and on a purchase after
  // comeback_days without activity (docs/programs.md "Purchase bonuses").
  int64_t first_purchase_bonus_points = 0;
  int64_t comeback_bonus_points = 0;
  uint32_t comeback_days = 0;
  std::array<ActionRule, kActionKindCount> actions{};  // indexed by ActionKind

  TierRule tiers[kTiersMax];  // tiers[0] is the base tier (threshold 0)
  uint8_t tier_count = 1;
  TierPolicy tier_policy;

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

  LotPolicy lots;

  StampCard stamp_cards[kStampCardsMax];
  uint8_t stamp_card_count = 0;

  Campaign campaigns[kCampaignsMax];
  uint8_t campaign_count = 0;

  // Paid membership (0 days: none): a `membership` event buys `membership_days` of it per period;
  // while it covers the day, earn points are multiplied by membership_multiplier_permille too.
  uint32_t membership_days = 0;
  uint32_t membership_multiplier_permille = 1000;

  // Capacity, fixed at start-up: tables never grow on the hot path.
  uint64_t accounts_max = 1'000'000;
  uint64_t holds_open_max = 100'000;     // open holds at once, per shard
  uint64_t orders_max = 4'000'000;       // orders remembered per refund-window generation, per shard
  uint64_t lots_max = 0;                 // lots (and pending lots) at once, per shard; 0 = 4 x accounts_max
};

// The multiplier of the campaign in force on local day `day` (the highest, when several are),
// or 1000 when none is.
uint32_t campaign_multiplier(const Program& p, int64_t day);

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
// Civil dates (proleptic Gregorian) of day numbers since 1970-01-01, and back.
struct CivilDate {
  int32_t year;
  uint32_t month;  // 1..12
  uint32_t day;    // 1..31
};
CivilDate civil_from_days(int64_t days);
int64_t days_from_civil(int32_t year, uint32_t month, uint32_t day);
// "2027-01-31"
std::string format_day(int64_t days);

// The day lots are dated "never expires" by, and "no lot" (days are u16 in tables: until 2149).
constexpr uint16_t kNeverDay = 0xFFFF;
// The last local day points counted from local day `base` may be spent on (kNeverDay: never).
uint16_t expiry_day(const LotPolicy& lots, int64_t base);

inline int64_t local_minute(const Program& p, int64_t time_ms) {
  int64_t local = time_ms + int64_t{p.utc_offset_minutes} * kMsPerMinute;
  return local >= 0 ? local / kMsPerMinute : (local - kMsPerMinute + 1) / kMsPerMinute;
}

}  // namespace tally
