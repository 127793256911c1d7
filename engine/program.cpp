#include "engine/program.h"

namespace tally {

std::string validate(const Program& p) {
  if (p.id == 0) return "id must be a positive number";
  if (p.currency == 0 || p.currency > 999) return "currency must be an ISO 4217 numeric code (1-999)";
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
  }
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
  return {};
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
