#include "engine/types.h"

#include <xxhash.h>

#include <cstring>

namespace tally {
namespace {

// Appends `v` little-endian: the fingerprint must not depend on the host's layout.
template <class T>
char* put_le(char* p, T v) {
  auto u = static_cast<std::make_unsigned_t<T>>(v);
  for (size_t i = 0; i < sizeof(T); ++i) *p++ = static_cast<char>((u >> (8 * i)) & 0xff);
  return p;
}

}  // namespace

Ref128 reference_from_string(std::string_view id) {
  XXH128_hash_t h = XXH3_128bits(id.data(), id.size());
  return {h.low64, h.high64};
}

uint64_t fingerprint(const Event& e) {
  char buf[96];
  char* p = buf;
  p = put_le(p, e.ref.lo);
  p = put_le(p, e.ref.hi);
  p = put_le(p, e.target.lo);
  p = put_le(p, e.target.hi);
  p = put_le(p, e.account);
  p = put_le(p, e.counterparty);
  p = put_le(p, e.amount);
  p = put_le(p, e.business_time_ms);
  p = put_le(p, e.program);
  p = put_le(p, e.store);
  p = put_le(p, e.terminal);
  p = put_le(p, e.currency);
  p = put_le(p, e.code);
  p = put_le(p, static_cast<uint8_t>(e.kind));
  p = put_le(p, e.channel);
  return XXH3_64bits(buf, static_cast<size_t>(p - buf));
}

std::string_view to_string(EventKind k) {
  switch (k) {
    case EventKind::kInvalid: return "invalid";
    case EventKind::kEnroll: return "enroll";
    case EventKind::kEarn: return "earn";
    case EventKind::kAward: return "award";
    case EventKind::kRedeem: return "redeem";
    case EventKind::kHold: return "hold";
    case EventKind::kCapture: return "capture";
    case EventKind::kVoid: return "void";
    case EventKind::kReverse: return "reverse";
    case EventKind::kAdjust: return "adjust";
    case EventKind::kTransfer: return "transfer";
    case EventKind::kBalance: return "balance";
    case EventKind::kMembership: return "membership";
    case EventKind::kTransferIn: return "transfer_in";
    case EventKind::kTransferBounce: return "transfer_bounce";
    case EventKind::kHoldExpire: return "hold_expire";
    case EventKind::kTick: return "tick";
    case EventKind::kExpire: return "expire";
    case EventKind::kMature: return "mature";
    case EventKind::kTier: return "tier";
    case EventKind::kStampCard: return "stamp_card";
    case EventKind::kBonus: return "bonus";
  }
  return "unknown";
}

std::string_view to_string(Result r) {
  static constexpr std::string_view kNames[kResultCount] = {
      "ok", "program_not_found", "invalid_kind", "invalid_account", "invalid_reference",
      "invalid_amount", "invalid_code", "currency_mismatch", "same_account", "invalid_time",
      "stale_reference", "account_not_found", "account_exists", "rate_limited", "below_minimum",
      "insufficient_points", "cap_exceeded", "action_limit_reached", "hold_not_found",
      "hold_expired", "hold_closed", "order_not_found", "not_reversible", "already_reversed",
      "refund_window_passed", "overflow", "duplicate_order", "capacity_exhausted", "forbidden",
      "busy", "storage_failed", "not_primary"};
  auto i = static_cast<uint8_t>(r);
  return i < kResultCount ? kNames[i] : std::string_view("unknown");
}

uint16_t reference_day(const Event& e, int64_t time_ms) {
  int64_t t = e.business_time_ms != 0 ? e.business_time_ms : time_ms;
  int64_t day = t / kMsPerDay;
  return static_cast<uint16_t>(day < 0 ? 0 : day > 0xffff ? 0xffff : day);
}

}  // namespace tally
