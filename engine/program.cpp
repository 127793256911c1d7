#include "engine/program.h"

#include <algorithm>
#include <cstdio>

namespace tally {

uint32_t campaign_multiplier(const Program& p, int64_t day) {
  uint32_t m = 1000;
  for (size_t i = 0; i < p.campaign_count; ++i) {
    const Campaign& c = p.campaigns[i];
    if (day >= c.first_day && day <= c.last_day) m = std::max(m, c.multiplier_permille);
  }
  return m;
}

bool tiers_have_effects(const Program& p) {
  if (p.tier_policy.windowed()) return true;
  for (size_t i = 0; i < p.tier_count; ++i)
    if (p.tiers[i].bonus_points > 0) return true;
  return false;
}

std::string validate(const Program& p) {
  if (p.id == 0) return "id must be a positive number";
  if (p.currency == 0 || p.currency > 999) return "currency must be an ISO 4217 numeric code (1-999)";
  if (static_cast<uint8_t>(p.unit) > static_cast<uint8_t>(Unit::kCashback)) return "unknown unit";
  if (p.first_purchase_bonus_points < 0 || p.first_purchase_bonus_points > kPointsMax / 8)
    return "first purchase bonus out of range";
  if (p.comeback_bonus_points < 0 || p.comeback_bonus_points > kPointsMax / 8) return "comeback bonus out of range";
  if ((p.comeback_bonus_points > 0) != (p.comeback_days > 0))
    return "a comeback bonus needs both its points and its period (comeback_after)";
  if (p.comeback_days > 36'500) return "comeback_after must be at most 36500 days";
  if (p.earn_points < 0 || p.earn_points > 1'000'000) return "earn_points must be in 0..1000000";
  if (p.earn_per_minor < 1 || p.earn_per_minor > 1'000'000'000)
    return "earn_per_minor must be in 1..1000000000";
  if (p.earn_points_max < 0 || p.earn_points_max > kPointsMax) return "earn_points_max out of range";
  if (p.signup_bonus_points < 0 || p.signup_bonus_points > kPointsMax)
    return "signup_bonus_points out of range";
  for (size_t i = 1; i < kActionKindCount; ++i) {
    const ActionRule& a = p.actions[i];
    if (a.points < 0 || a.points > kPointsMax) return "action points out of range";
    if (a.limit_count > 0xffff) return "action limit_count must be at most 65535";
    if (a.limit_count > 0 && a.limit_period_days == 0) return "an action limit needs limit_period_days";
  }
  if (p.tier_count < 1 || p.tier_count > kTiersMax) return "between 1 and 8 tiers";
  if (p.tiers[0].threshold_points != 0) return "the first tier's threshold must be 0";
  for (size_t i = 0; i < p.tier_count; ++i) {
    const TierRule& t = p.tiers[i];
    if (t.multiplier_permille < 1 || t.multiplier_permille > 100'000)
      return "tier multiplier_permille must be in 1..100000";
    if (i > 0 && t.threshold_points <= p.tiers[i - 1].threshold_points)
      return "tier thresholds must increase";
    if (t.bonus_points < 0 || t.bonus_points > kPointsMax / static_cast<int64_t>(kTiersMax)) return "tier bonus points out of range";
    if (i == 0 && t.bonus_points != 0) return "the first tier has no upgrade bonus (nobody is upgraded into it)";
  }
  if (p.campaign_count > kCampaignsMax) return "at most 8 campaigns";
  for (size_t i = 0; i < p.campaign_count; ++i) {
    const Campaign& c = p.campaigns[i];
    if (c.first_day < 0 || c.last_day < c.first_day || c.last_day >= kNeverDay)
      return "a campaign's last day must not be before its first";
    if (c.multiplier_permille < 1 || c.multiplier_permille > 100'000) return "campaign multiplier_permille must be in 1..100000";
  }
  if (p.stamp_card_count > kStampCardsMax) return "at most 4 stamp cards";
  for (size_t i = 0; i < p.stamp_card_count; ++i) {
    const StampCard& c = p.stamp_cards[i];
    if (c.stamps < 2 || c.stamps > 100) return "a stamp card needs 2..100 stamps";
    if (c.min_purchase_minor < 0 || c.min_purchase_minor > kPointsMax) return "stamp card min_purchase out of range";
    if (c.reward_points < 0 || c.reward_points > kPointsMax / static_cast<int64_t>(kStampCardsMax))
      return "stamp card reward out of range";
  }
  const TierPolicy& tp = p.tier_policy;
  if (static_cast<uint8_t>(tp.period) > static_cast<uint8_t>(TierPeriod::kRollingMonths)) return "unknown tier period";
  if (tp.period == TierPeriod::kRollingMonths && (tp.window_months < 1 || tp.window_months > 12))
    return "a rolling tier window must be 1..12 months";
  if (tp.period == TierPeriod::kCalendarYear && tp.grace_days > 364) return "tier grace must be under a year (0..364 days)";
  if (tp.period == TierPeriod::kRollingMonths && tp.grace_days > 27)
    return "tier grace must be under a month (0..27 days) with a rolling window";
  if (tp.period == TierPeriod::kLifetime && tp.grace_days != 0) return "tier grace needs a tier period";
  if (p.points_per_day_max < 0) return "points_per_day_max must not be negative";
  if (p.redeem_points_min < 0) return "redeem_points_min must not be negative";
  if (p.hold_timeout_ms < 1000) return "hold_timeout must be at least one second";
  if (p.refund_window_ms < p.hold_timeout_ms) return "refund_window must be at least the hold timeout";
  if (p.dedup_window_ms < p.refund_window_ms) return "dedup_window must be at least the refund window";
  if (p.dedup_window_ms > 65535 * kMsPerDay / 4) return "dedup_window too long";
  if (p.future_skew_ms_max < 0) return "future_skew must not be negative";
  if (p.utc_offset_minutes < -14 * 60 || p.utc_offset_minutes > 14 * 60)
    return "utc_offset_minutes must be within -840..840";
  if (p.accounts_max < 1) return "accounts_max must be positive";
  if (p.holds_open_max < 1) return "holds_open_max must be positive";
  if (p.orders_max < 1) return "orders_max must be positive";
  const LotPolicy& l = p.lots;
  if (static_cast<uint8_t>(l.expiry) > static_cast<uint8_t>(ExpiryKind::kEndOfMonth)) return "unknown expiry kind";
  if (l.expiry == ExpiryKind::kDays && (l.expiry_days < 1 || l.expiry_days > 36'500))
    return "expiry after days must be in 1..36500 days";
  if (l.expiry == ExpiryKind::kEndOfMonth && l.expiry_months > 1200) return "expiry months must be in 0..1200";
  if (l.pending_days > 365) return "pending days must be in 0..365";
  if (l.expiry == ExpiryKind::kDays && l.pending_days >= l.expiry_days)
    return "points must stay pending for less time than they live (pending days < expiry days)";
  if (l.expiry == ExpiryKind::kEndOfMonth && l.pending_days >= 28 * (l.expiry_months + 1) - 27)
    return "pending days must be shorter than the shortest life of a lot under end-of-month expiry";
  if (l.inactivity_days > 36'500) return "inactivity days must be in 0..36500";
  if (l.inactivity_days > 0 && l.inactivity_days <= l.pending_days)
    return "the inactivity period must be longer than the pending period";
  if (p.membership_days > 3660) return "membership days must be in 0..3660";
  if (p.membership_multiplier_permille < 1 || p.membership_multiplier_permille > 100'000)
    return "membership multiplier_permille must be in 1..100000";
  if (l.pending_days * kMsPerDay > p.refund_window_ms)
    return "pending days must lie within the refund window (a refund cancels pending points)";
  return {};
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
CivilDate civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const uint64_t doe = static_cast<uint64_t>(z - era * 146097);
  const uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const uint64_t mp = (5 * doy + 2) / 153;
  const uint32_t d = static_cast<uint32_t>(doy - (153 * mp + 2) / 5 + 1);
  const uint32_t m = static_cast<uint32_t>(mp < 10 ? mp + 3 : mp - 9);
  return {static_cast<int32_t>(y + (m <= 2)), m, d};
}

int64_t days_from_civil(int32_t year, uint32_t month, uint32_t day) {
  const int64_t y = static_cast<int64_t>(year) - (month <= 2);
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const uint64_t yoe = static_cast<uint64_t>(y - era * 400);
  const uint64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const uint64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::string format_day(int64_t days) {
  CivilDate c = civil_from_days(days);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", c.year, c.month, c.day);
  return buf;
}

uint16_t expiry_day(const LotPolicy& lots, int64_t base) {
  int64_t d = kNeverDay;
  switch (lots.expiry) {
    case ExpiryKind::kNever: return kNeverDay;
    case ExpiryKind::kDays: d = base + lots.expiry_days; break;
    case ExpiryKind::kEndOfMonth: {
      CivilDate c = civil_from_days(base);
      int64_t months = int64_t{c.year} * 12 + (c.month - 1) + lots.expiry_months + 1;  // the month after
      d = days_from_civil(static_cast<int32_t>(months / 12), static_cast<uint32_t>(months % 12) + 1, 1) - 1;
      break;
    }
  }
  return static_cast<uint16_t>(std::clamp<int64_t>(d, 1, kNeverDay - 1));
}

Program default_program() {
  Program p;
  p.id = 1;
  p.name = "demo";
  p.currency = 978;  // EUR
  p.earn_points = 1;
  p.earn_per_minor = 100;
  p.signup_bonus_points = 50;
  p.actions[static_cast<size_t>(ActionKind::kReview)] = {25, 10, 30};
  p.actions[static_cast<size_t>(ActionKind::kReferral)] = {200, 5, 365};
  p.actions[static_cast<size_t>(ActionKind::kBirthday)] = {100, 1, 365};
  p.actions[static_cast<size_t>(ActionKind::kSocial)] = {10, 3, 7};
  p.tiers[0] = {0, 1000, "bronze"};
  p.tiers[1] = {1'000, 1250, "silver"};
  p.tiers[2] = {5'000, 1500, "gold"};
  p.tiers[3] = {20'000, 2000, "platinum"};
  p.tier_count = 4;
  p.points_per_day_max = 50'000;
  p.events_per_minute_max = 60;
  p.redeem_points_min = 1;
  return p;
}

}  // namespace tally
