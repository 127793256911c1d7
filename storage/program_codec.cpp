#include "storage/program_codec.h"

#include <cstdint>
#include <type_traits>

namespace tally::storage {
namespace {

// 1: up to the UTC offset and three capacities; 2: the lot policy and lots_max too; 3: the tier
// policy, upgrade bonuses, stamp cards, the unit, purchase bonuses and campaigns (1 and 2 are still read).
constexpr uint32_t kVersion = 3;

class Out {
 public:
  template <class T>
  void num(T v) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U u = static_cast<U>(v);
    for (size_t i = 0; i < sizeof(T); ++i) s_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  void str(const std::string& v) {
    num<uint32_t>(static_cast<uint32_t>(v.size()));
    s_ += v;
  }
  std::string take() { return std::move(s_); }

 private:
  std::string s_;
};

class In {
 public:
  explicit In(std::string_view s) : s_(s) {}
  template <class T>
  T num() {
    using U = std::make_unsigned_t<T>;
    if (s_.size() - pos_ < sizeof(T)) {
      ok_ = false;
      return 0;
    }
    U u = 0;
    for (size_t i = 0; i < sizeof(T); ++i) u |= static_cast<U>(static_cast<uint8_t>(s_[pos_ + i])) << (8 * i);
    pos_ += sizeof(T);
    return static_cast<T>(u);
  }
  std::string str() {
    uint32_t n = num<uint32_t>();
    if (!ok_ || s_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string v(s_.substr(pos_, n));
    pos_ += n;
    return v;
  }
  bool ok() const { return ok_; }
  bool done() const { return pos_ == s_.size(); }

 private:
  std::string_view s_;
  size_t pos_ = 0;
  bool ok_ = true;
};

void put(Out& o, const Program& p, bool with_capacity) {
  o.num(p.id);
  o.str(p.name);
  o.num(p.currency);
  o.num(p.earn_points);
  o.num(p.earn_per_minor);
  o.num(p.earn_points_max);
  o.num(p.signup_bonus_points);
  for (const ActionRule& a : p.actions) {
    o.num(a.points);
    o.num(a.limit_count);
    o.num(a.limit_period_days);
  }
  o.num(p.tier_count);
  for (const TierRule& t : p.tiers) {
    o.num(t.threshold_points);
    o.num(t.multiplier_permille);
    o.str(t.name);
  }
  o.num(p.points_per_day_max);
  o.num(p.events_per_minute_max);
  o.num(p.redeem_points_min);
  o.num(p.hold_timeout_ms);
  o.num(p.refund_window_ms);
  o.num(p.dedup_window_ms);
  o.num(p.future_skew_ms_max);
  o.num(p.utc_offset_minutes);
  o.num(static_cast<uint8_t>(p.lots.expiry));
  o.num(p.lots.expiry_days);
  o.num(p.lots.expiry_months);
  o.num(p.lots.pending_days);
  o.num(p.lots.inactivity_days);
  o.num(static_cast<uint8_t>(p.lots.date_by_purchase));
  o.num(p.membership_days);
  o.num(p.membership_multiplier_permille);
  o.num(static_cast<uint8_t>(p.tier_policy.period));
  o.num(p.tier_policy.window_months);
  o.num(p.tier_policy.grace_days);
  for (const TierRule& t : p.tiers) o.num(t.bonus_points);
  o.num(static_cast<uint8_t>(p.unit));
  o.num(p.first_purchase_bonus_points);
  o.num(p.comeback_bonus_points);
  o.num(p.comeback_days);
  o.num(p.stamp_card_count);
  for (const StampCard& c : p.stamp_cards) {
    o.str(c.name);
    o.num(c.stamps);
    o.num(c.min_purchase_minor);
    o.num(c.reward_points);
  }
  o.num(p.campaign_count);
  for (const Campaign& c : p.campaigns) {
    o.str(c.name);
    o.num(c.first_day);
    o.num(c.last_day);
    o.num(c.multiplier_permille);
  }
  if (with_capacity) {
    o.num(p.accounts_max);
    o.num(p.holds_open_max);
    o.num(p.orders_max);
    o.num(p.lots_max);
  }
}

void get(In& in, Program& p, uint32_t version) {
  p.id = in.num<uint32_t>();
  p.name = in.str();
  p.currency = in.num<uint16_t>();
  p.earn_points = in.num<int64_t>();
  p.earn_per_minor = in.num<int64_t>();
  p.earn_points_max = in.num<int64_t>();
  p.signup_bonus_points = in.num<int64_t>();
  for (ActionRule& a : p.actions) {
    a.points = in.num<int64_t>();
    a.limit_count = in.num<uint32_t>();
    a.limit_period_days = in.num<uint32_t>();
  }
  p.tier_count = in.num<uint8_t>();
  for (TierRule& t : p.tiers) {
    t.threshold_points = in.num<int64_t>();
    t.multiplier_permille = in.num<uint32_t>();
    t.name = in.str();
  }
  p.points_per_day_max = in.num<int64_t>();
  p.events_per_minute_max = in.num<uint32_t>();
  p.redeem_points_min = in.num<int64_t>();
  p.hold_timeout_ms = in.num<int64_t>();
  p.refund_window_ms = in.num<int64_t>();
  p.dedup_window_ms = in.num<int64_t>();
  p.future_skew_ms_max = in.num<int64_t>();
  p.utc_offset_minutes = in.num<int32_t>();
  if (version >= 2) {
    p.lots.expiry = static_cast<ExpiryKind>(in.num<uint8_t>());
    p.lots.expiry_days = in.num<uint32_t>();
    p.lots.expiry_months = in.num<uint32_t>();
    p.lots.pending_days = in.num<uint32_t>();
    p.lots.inactivity_days = in.num<uint32_t>();
    p.lots.date_by_purchase = in.num<uint8_t>() != 0;
    p.membership_days = in.num<uint32_t>();
    p.membership_multiplier_permille = in.num<uint32_t>();
  }
  if (version >= 3) {
    p.tier_policy.period = static_cast<TierPeriod>(in.num<uint8_t>());
    p.tier_policy.window_months = in.num<uint32_t>();
    p.tier_policy.grace_days = in.num<uint32_t>();
    for (TierRule& t : p.tiers) t.bonus_points = in.num<int64_t>();
    p.unit = static_cast<Unit>(in.num<uint8_t>());
    p.first_purchase_bonus_points = in.num<int64_t>();
    p.comeback_bonus_points = in.num<int64_t>();
    p.comeback_days = in.num<uint32_t>();
    p.stamp_card_count = in.num<uint8_t>();
    for (StampCard& c : p.stamp_cards) {
      c.name = in.str();
      c.stamps = in.num<uint32_t>();
      c.min_purchase_minor = in.num<int64_t>();
      c.reward_points = in.num<int64_t>();
    }
    p.campaign_count = in.num<uint8_t>();
    for (Campaign& c : p.campaigns) {
      c.name = in.str();
      c.first_day = in.num<int64_t>();
      c.last_day = in.num<int64_t>();
      c.multiplier_permille = in.num<uint32_t>();
    }
  }
  p.accounts_max = in.num<uint64_t>();
  p.holds_open_max = in.num<uint64_t>();
  p.orders_max = in.num<uint64_t>();
  if (version >= 2) p.lots_max = in.num<uint64_t>();
}

std::string rules_of(const Program& p) {
  Out o;
  put(o, p, false);
  return o.take();
}

}  // namespace

std::string encode_programs(std::span<const Program> programs) {
  Out o;
  o.num(kVersion);
  o.num(static_cast<uint32_t>(programs.size()));
  for (const Program& p : programs) put(o, p, true);
  return o.take();
}

std::optional<std::vector<Program>> decode_programs(std::string_view bytes) {
  In in(bytes);
  const uint32_t version = in.num<uint32_t>();
  if (version < 1 || version > kVersion) return std::nullopt;
  uint32_t n = in.num<uint32_t>();
  // Every program takes well over 64 bytes: a count the bytes cannot hold is corrupt (and must not
  // make us allocate for it: found by fuzz_log_codec).
  if (!in.ok() || n > bytes.size() / 64) return std::nullopt;
  std::vector<Program> out;
  for (uint32_t i = 0; i < n && in.ok(); ++i) get(in, out.emplace_back(), version);
  if (!in.ok() || !in.done()) return std::nullopt;
  for (const Program& p : out)
    if (static_cast<uint8_t>(p.lots.expiry) > static_cast<uint8_t>(ExpiryKind::kEndOfMonth) ||
        static_cast<uint8_t>(p.tier_policy.period) > static_cast<uint8_t>(TierPeriod::kRollingMonths) ||
        p.stamp_card_count > kStampCardsMax || p.campaign_count > kCampaignsMax || static_cast<uint8_t>(p.unit) > static_cast<uint8_t>(Unit::kCashback))
      return std::nullopt;
  return out;
}

std::string rule_difference(std::span<const Program> stored, std::span<const Program> configured) {
  for (const Program& s : stored) {
    const Program* c = nullptr;
    for (const Program& x : configured)
      if (x.id == s.id) c = &x;
    if (c == nullptr) return "program " + std::to_string(s.id) + " is in the data directory but not configured";
    if (rules_of(s) != rules_of(*c))
      return "program " + std::to_string(s.id) + " (" + s.name + ") has different rules than the data directory's";
  }
  for (const Program& c : configured) {
    bool found = false;
    for (const Program& s : stored) found |= s.id == c.id;
    if (!found) return "program " + std::to_string(c.id) + " is configured but not in the data directory";
  }
  return {};
}

}  // namespace tally::storage
