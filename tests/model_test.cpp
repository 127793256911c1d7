// The randomised model test: long random sequences of every operation, over many accounts, four
// programs and several shards, run through the real multi-threaded pipeline; then every effect, in
// the order the pipeline handed them out, is checked against a small single-threaded model that
// knows nothing of shards, rings or hash tables (std::map and straight-line rules from
// docs/engine.md). Results, points, replay flags and resulting balances must match exactly, and
// the per-program invariant must hold after every effect:
//   issued - redeemed - expired - clawed_back + adjusted - in_transit = sum(available + held + pending)
// Time moves forward by seconds to days, so point lots mature, expire and lapse for inactivity
// (programs 2 to 4) and tiers over rolling windows of months are upgraded and reviewed (programs 3
// and 4; program 1 has lifetime tiers with an upgrade bonus): the model keeps each member's lots
// and qualifying points in std::maps by day and period, and checks that the engine applies
// whatever is due before it reads or changes an account.
// The seed is printed; rerun one with TALLY_SEED=<seed>.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/pipeline.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

struct RefLess {
  bool operator()(const Ref128& a, const Ref128& b) const { return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo; }
};

// ---- the model ----------------------------------------------------------------------------------
struct MAccount {
  int64_t available = 0, held = 0, earned = 0, redeemed = 0, qualifying = 0, pending = 0;
  int tier = 0;
  int64_t day = -1, day_points = 0, minute = -1, minute_events = 0;
  std::map<int64_t, int64_t> lots;     // expiry day -> points (spendable)
  std::map<int64_t, int64_t> pend;     // maturity day -> points (pending)
  int64_t last_day = 0;                // local day of the last activity
  int64_t member_until = 0;            // paid membership: the last day it covers
  // Tier windows (docs/programs.md "Tiers over time"): qualifying points by period, the period
  // last reviewed, what the closed window earned, the tier held when it closed, the highest
  // tier reached this period; an upgrade whose kTier effect must come next.
  std::map<int64_t, int64_t> qual;
  int64_t period = 0;
  int earned_tier = 0, grace_tier = 0, reached = 0;
  bool upgrade_next = false;
  int64_t upgrade_bonus = 0;
  // Stamp cards: stamps per card; the cards a purchase completed, whose kStampCard effects come next.
  int stamps[kStampCardsMax] = {};
  std::vector<int> cards_next;
  // Purchase bonuses: whether the member has purchased; the bonuses (code, points) to come next.
  bool purchased = false;
  std::vector<std::pair<int, int64_t>> bonuses_next;
};

enum class MState { kOpen, kCaptured, kVoided, kExpired };

struct MOrder {
  uint64_t fp = 0;
  uint64_t account = 0;
  EventKind kind{};
  Result result{};
  int64_t amount = 0, points = 0, refunded = 0, expires_ms = 0, time_ms = 0;
  int64_t lot_day = 0;  // earn: the day its lots count from; hold: the earliest expiry it took
  bool capped = false;
  bool stamped = false;
  bool campaign = false;
  MState state = MState::kOpen;
  bool bounced = false;
};

struct MTotals {
  int64_t issued = 0, redeemed = 0, clawed = 0, adjusted = 0, in_transit = 0, expired = 0;
};

struct MProgram {
  Program rules;
  std::map<uint64_t, MAccount> accounts;
  std::map<std::pair<uint64_t, uint16_t>, std::pair<int64_t, int64_t>> actions;  // start day, count
  std::map<Ref128, MOrder, RefLess> orders;
  MTotals totals;                                   // from the model's own decisions
  MTotals seen;                                     // from the effects' points
  std::map<uint64_t, AccountState> seen_states;     // latest state per account, from effects
};

struct Expect {
  Result result = Result::kOk;
  int64_t points = 0;
  bool replay = false;
  bool capped = false;
  bool stamped = false;
  bool campaign = false;
};

class Model {
 public:
  explicit Model(const std::vector<Program>& programs) {
    for (const Program& p : programs) programs_[p.id].rules = p;
  }

  // Checks one effect against the model and applies it. Returns a description of the first
  // mismatch, or an empty string.
  std::string check(const Effect& eff) {
    const Event& e = eff.event;
    auto pit = programs_.find(e.program);
    if (pit == programs_.end()) return compare(eff, {Result::kProgramNotFound}, nullptr);
    MProgram& mp = pit->second;
    int64_t now = eff.time_ms;
    Expect x;
    if (e.kind == EventKind::kTier) return tier_change(mp, eff, now);
    auto next = mp.accounts.find(e.account);
    if (next != mp.accounts.end() && next->second.upgrade_next)
      return std::string(to_string(e.kind)) + " of account " + std::to_string(e.account) +
             ": the tier effect of the upgrade should have come first";
    if (e.kind == EventKind::kStampCard) return stamp_card(mp, eff, now);
    if (next != mp.accounts.end() && !next->second.cards_next.empty())
      return std::string(to_string(e.kind)) + " of account " + std::to_string(e.account) +
             ": the reward of a completed stamp card should have come first";
    if (e.kind == EventKind::kBonus) return purchase_bonus(mp, eff, now);
    if (next != mp.accounts.end() && !next->second.bonuses_next.empty())
      return std::string(to_string(e.kind)) + " of account " + std::to_string(e.account) +
             ": the purchase bonus should have come first";
    if (e.kind == EventKind::kExpire || e.kind == EventKind::kMature) return lifecycle(mp, eff, now);
    if (e.kind != EventKind::kHoldExpire) {
      auto due_it = mp.accounts.find(e.account);
      // A review that changes nothing an effect shows (tier, qualifying points) has no effect.
      if (due_it != mp.accounts.end() && mp.rules.tier_policy.windowed()) {
        MAccount rolled = due_it->second;
        if (review(mp.rules, rolled, local_day(mp.rules, now)) == rolled.tier &&
            rolled.qualifying == due_it->second.qualifying)
          due_it->second = rolled;
      }
      if (due_it != mp.accounts.end() && due(mp.rules, due_it->second, local_day(mp.rules, now)))
        return std::string(to_string(e.kind)) + " of account " + std::to_string(e.account) + " at " +
               std::to_string(now) + ": applied while maturity, expiry or a tier review was due on the account";
    }
    switch (e.kind) {
      case EventKind::kHoldExpire: return hold_expire(mp, eff, now);
      case EventKind::kTransferIn: x = transfer_in(mp, e, now); break;
      case EventKind::kTransferBounce: x = transfer_bounce(mp, e, now); break;
      case EventKind::kBalance:
        x.result = e.account == 0 ? Result::kInvalidAccount
                   : mp.accounts.count(e.account) ? Result::kOk : Result::kAccountNotFound;
        break;
      default: x = decide_and_apply(mp, e, now); break;
    }
    auto it = mp.accounts.find(e.account);
    std::string err = compare(eff, x, it == mp.accounts.end() ? nullptr : &it->second);
    if (!err.empty()) return err;
    return track_and_check_invariant(mp, eff);
  }

  const std::map<uint32_t, MProgram>& programs() const { return programs_; }

 private:
  static int64_t day_of(const Program& p, int64_t t) { return local_day(p, t); }

  // Validation shared by the client operations, in the documented order. `op` is the operation's
  // own check. kOk means: go on.
  static Result common(const MProgram& mp, const Event& e, int64_t now, bool needs_target, Result op) {
    if (e.account == 0 || (e.kind == EventKind::kTransfer && e.counterparty == 0)) return Result::kInvalidAccount;
    if (e.ref.empty() || (needs_target && e.target.empty())) return Result::kInvalidReference;
    if (op != Result::kOk) return op;
    int64_t bt = e.business_time_ms != 0 ? e.business_time_ms : now;
    if (bt > now + mp.rules.future_skew_ms_max) return Result::kInvalidTime;
    if (bt < now - mp.rules.dedup_window_ms) return Result::kStaleReference;
    return Result::kOk;
  }

  static bool counts_for_rate(EventKind k) {
    return k == EventKind::kEarn || k == EventKind::kAward || k == EventKind::kRedeem ||
           k == EventKind::kHold || k == EventKind::kTransfer;
  }

  Expect decide_and_apply(MProgram& mp, const Event& e, int64_t now) {
    const Program& p = mp.rules;
    Result op = Result::kOk;
    bool needs_target = false;
    switch (e.kind) {
      case EventKind::kEnroll: op = e.amount != 0 ? Result::kInvalidAmount : Result::kOk; break;
      case EventKind::kEarn:
        if (e.amount <= 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
        else if (e.currency != 0 && e.currency != p.currency) op = Result::kCurrencyMismatch;
        break;
      case EventKind::kAward:
        if (e.code == 0 || e.code >= kActionKindCount || p.actions[e.code].points <= 0) op = Result::kInvalidCode;
        else if (e.amount != 0) op = Result::kInvalidAmount;
        break;
      case EventKind::kRedeem:
      case EventKind::kHold: op = e.amount <= 0 || e.amount > kPointsMax ? Result::kInvalidAmount : Result::kOk; break;
      case EventKind::kCapture:
        needs_target = true;
        op = e.amount < 0 || e.amount > kPointsMax ? Result::kInvalidAmount : Result::kOk;
        break;
      case EventKind::kVoid:
        needs_target = true;
        op = e.amount != 0 ? Result::kInvalidAmount : Result::kOk;
        break;
      case EventKind::kReverse:
        needs_target = true;
        if (e.amount < 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
        else if (e.currency != 0 && e.currency != p.currency) op = Result::kCurrencyMismatch;
        break;
      case EventKind::kAdjust:
        if (e.code == 0) op = Result::kInvalidCode;
        else if (e.amount == 0 || e.amount > kPointsMax || e.amount < -kPointsMax) op = Result::kInvalidAmount;
        break;
      case EventKind::kTransfer:
        if (e.counterparty == e.account) op = Result::kSameAccount;
        else if (e.amount <= 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
        break;
      case EventKind::kMembership:
        if (p.membership_days == 0) op = Result::kInvalidKind;
        else if (e.amount < 0 || e.amount > 100) op = Result::kInvalidAmount;
        break;
      default: return {Result::kInvalidKind};
    }
    Result r = common(mp, e, now, needs_target, op);
    if (r != Result::kOk) return {r};
    uint64_t fp = fingerprint(e);
    auto prior = mp.orders.find(e.ref);
    if (prior != mp.orders.end() && prior->second.fp == fp) {
      return {prior->second.result, prior->second.points, true, prior->second.capped, prior->second.stamped,
              prior->second.campaign};
    }
    const bool taken = prior != mp.orders.end();

    if (e.kind == EventKind::kEnroll) {
      if (mp.accounts.count(e.account)) return {Result::kAccountExists};
      if (taken) return {Result::kDuplicateOrder};
      MAccount& a = mp.accounts[e.account];
      if (p.tier_policy.windowed()) a.period = period_of(p, day_of(p, now));
      add_lot(p, a, expiry_day(p.lots, day_of(p, now)), p.signup_bonus_points);
      a.earned = p.signup_bonus_points;
      a.last_day = day_of(p, now);
      mp.totals.issued += p.signup_bonus_points;
      record(mp, e, fp, now, Result::kOk, p.signup_bonus_points, false);
      return {Result::kOk, p.signup_bonus_points};
    }
    auto ait = mp.accounts.find(e.account);
    if (ait == mp.accounts.end()) return {Result::kAccountNotFound};
    MAccount& a = ait->second;
    int64_t day = day_of(p, now);
    int64_t minute = local_minute(p, now);
    int64_t day_points = a.day == day ? a.day_points : 0;
    int64_t minute_events = a.minute == minute ? a.minute_events : 0;
    bool rated = p.events_per_minute_max > 0 && counts_for_rate(e.kind);
    if (rated && minute_events >= p.events_per_minute_max) return {Result::kRateLimited};
    auto count_event = [&](int64_t points) {
      if (p.points_per_day_max == 0 && p.events_per_minute_max == 0) return;
      if (a.day != day) a.day = day, a.day_points = 0;
      a.day_points += points;
      if (a.minute != minute) a.minute = minute, a.minute_events = 0;
      if (counts_for_rate(e.kind)) ++a.minute_events;
    };

    switch (e.kind) {
      case EventKind::kEarn:
      case EventKind::kAward: {
        const bool earn = e.kind == EventKind::kEarn;
        std::pair<int64_t, int64_t>* window = nullptr;
        if (!earn) {
          const ActionRule& rule = p.actions[e.code];
          if (rule.limit_count > 0) {
            window = &mp.actions[{e.account, e.code}];
            bool open = window->second > 0 && day - window->first < rule.limit_period_days;
            if (open && window->second >= rule.limit_count) return {Result::kActionLimitReached};
          }
        }
        const int64_t purchase_day =
            p.lots.date_by_purchase && e.business_time_ms != 0 ? day_of(p, e.business_time_ms) : day;
        const bool member = p.membership_days > 0 && a.member_until >= purchase_day;
        // The campaign in force on the purchase's day: the highest multiplier of those covering it.
        int64_t campaign = 1000;
        for (int c = 0; c < p.campaign_count; ++c)
          if (purchase_day >= p.campaigns[c].first_day && purchase_day <= p.campaigns[c].last_day)
            campaign = std::max<int64_t>(campaign, p.campaigns[c].multiplier_permille);
        int64_t points = earn ? static_cast<int64_t>(static_cast<int128>(e.amount) * p.earn_points *
                                                     p.tiers[a.tier].multiplier_permille *
                                                     (member ? p.membership_multiplier_permille : 1000) * campaign /
                                                     (static_cast<int128>(p.earn_per_minor) * 1000 * 1000 * 1000))
                              : p.actions[e.code].points;
        bool capped = false;
        if (earn && p.earn_points_max > 0 && points > p.earn_points_max) points = p.earn_points_max, capped = true;
        if (p.points_per_day_max > 0) {
          int64_t left = p.points_per_day_max - day_points;
          if (left <= 0 && points > 0) return {Result::kCapExceeded};
          if (points > left) points = left, capped = true;
        }
        if (taken) return {Result::kDuplicateOrder};
        const int64_t base = p.lots.date_by_purchase && e.business_time_ms != 0 ? day_of(p, e.business_time_ms) : day;
        if (earn && p.lots.pending_days > 0 && base + p.lots.pending_days > day) {
          if (points > 0) a.pend[base + p.lots.pending_days] += points;
          a.pending += points;
        } else {
          add_lot(p, a, expiry_day(p.lots, base), points);
        }
        if (earn && p.first_purchase_bonus_points > 0 && !a.purchased)
          a.bonuses_next.emplace_back(static_cast<int>(BonusKind::kFirstPurchase), p.first_purchase_bonus_points);
        if (earn && p.comeback_days > 0 && day - a.last_day >= p.comeback_days)
          a.bonuses_next.emplace_back(static_cast<int>(BonusKind::kComeback), p.comeback_bonus_points);
        if (earn && p.first_purchase_bonus_points > 0) a.purchased = true;
        a.last_day = day;
        a.earned += points;
        if (earn) {
          const int before = a.tier;
          if (p.tier_policy.windowed()) {
            a.qual[counted_period(p, base, day)] += points;
            a.qualifying = window_points(p, a);
            a.reached = std::max(a.reached, tier_of(p, a.qualifying));
            a.tier = std::max(a.tier, a.reached);
          } else {
            a.qualifying += points;
            a.tier = std::max(a.tier, tier_of(p, a.qualifying));
          }
          if (a.tier != before && tiers_have_effects(p)) {
            a.upgrade_next = true;
            a.upgrade_bonus = 0;
            for (int t = before + 1; t <= a.tier; ++t) a.upgrade_bonus += p.tiers[t].bonus_points;
          }
        }
        count_event(points);
        if (window != nullptr) {
          if (window->second == 0 || day - window->first >= p.actions[e.code].limit_period_days)
            *window = {day, 0};
          ++window->second;
        }
        mp.totals.issued += points;
        // Every card the purchase is large enough for gets a stamp; a full card is a reward, next.
        bool stamped = false;
        for (int c = 0; earn && c < p.stamp_card_count; ++c) {
          const StampCard& card = p.stamp_cards[c];
          if (e.amount < std::max<int64_t>(card.min_purchase_minor, 1)) continue;
          stamped = true;
          if (++a.stamps[c] == static_cast<int>(card.stamps)) {
            a.stamps[c] = 0;
            a.cards_next.push_back(c + 1);
          }
        }
        MOrder& o = record(mp, e, fp, now, Result::kOk, points, capped);
        o.lot_day = std::clamp<int64_t>(base, 1, kNeverDay - 1);
        o.stamped = stamped;
        o.campaign = earn && campaign != 1000;
        return {Result::kOk, points, false, capped, stamped, o.campaign};
      }
      case EventKind::kRedeem:
      case EventKind::kHold: {
        bool hold = e.kind == EventKind::kHold;
        if (!hold && e.amount < p.redeem_points_min) return {Result::kBelowMinimum};
        if (a.available < e.amount) return {Result::kInsufficientPoints};
        if (taken) return {Result::kDuplicateOrder};
        const int64_t taken_from = take_lots(p, a, e.amount);
        a.last_day = day;
        if (hold) {
          a.held += e.amount;
        } else {
          a.redeemed += e.amount;
          mp.totals.redeemed += e.amount;
        }
        count_event(0);
        MOrder& o = record(mp, e, fp, now, Result::kOk, e.amount, false);
        o.lot_day = taken_from;
        if (hold) o.expires_ms = now + p.hold_timeout_ms;
        return {Result::kOk, e.amount};
      }
      case EventKind::kCapture:
      case EventKind::kVoid: {
        auto hit = mp.orders.find(e.target);
        if (hit == mp.orders.end() || hit->second.kind != EventKind::kHold ||
            hit->second.account != e.account || hit->second.result != Result::kOk) {
          return {Result::kHoldNotFound};
        }
        MOrder& h = hit->second;
        // The engine must have expired a hold whose time has come before it looks at the capture.
        if (h.state == MState::kExpired) return {Result::kHoldExpired};
        if (h.state == MState::kOpen && h.expires_ms <= now) return {Result::kHoldExpired};
        if (h.state != MState::kOpen) return {Result::kHoldClosed};
        bool capture = e.kind == EventKind::kCapture;
        int64_t captured = capture ? (e.amount == 0 ? h.amount : e.amount) : 0;
        if (captured > h.amount) return {Result::kInvalidAmount};
        if (taken) return {Result::kDuplicateOrder};
        a.held -= h.amount;
        add_lot(p, a, h.lot_day, h.amount - captured);
        a.last_day = day;
        a.redeemed += captured;
        mp.totals.redeemed += captured;
        h.state = capture ? MState::kCaptured : MState::kVoided;
        int64_t points = capture ? captured : h.amount;
        record(mp, e, fp, now, Result::kOk, points, false);
        return {Result::kOk, points};
      }
      case EventKind::kReverse: {
        auto oit = mp.orders.find(e.target);
        if (oit == mp.orders.end() || oit->second.account != e.account || oit->second.result != Result::kOk) {
          return {Result::kOrderNotFound};
        }
        MOrder& o = oit->second;
        if (o.kind != EventKind::kEarn) return {Result::kNotReversible};
        int64_t remaining = o.amount - o.refunded;
        if (remaining == 0) return {Result::kAlreadyReversed};
        if (now / 1000 > o.time_ms / 1000 + p.refund_window_ms / 1000) return {Result::kRefundWindowPassed};
        int64_t refund = e.amount == 0 ? remaining : e.amount;
        if (refund > remaining) return {Result::kInvalidAmount};
        // Total clawed after this refund = floor(points * refunded / amount): never more than
        // the order earned, all of it after a full refund.
        auto owed = [&](int64_t part) { return static_cast<int64_t>(static_cast<int128>(o.points) * part / o.amount); };
        int64_t back = owed(o.refunded + refund) - owed(o.refunded);
        if (taken) return {Result::kDuplicateOrder};
        claw_back(p, a, o.lot_day, back);
        a.last_day = day;
        if (p.tier_policy.windowed()) {
          const int64_t counted = counted_period(p, o.lot_day, day_of(p, o.time_ms));
          if (counted > a.period - months_of(p) && counted <= a.period) {
            int64_t& q = a.qual[counted];
            q -= std::min(back, q);
          }
          a.qualifying = window_points(p, a);
        } else {
          a.qualifying -= std::min(back, a.qualifying);
        }
        o.refunded += refund;
        mp.totals.clawed += back;
        // A card's stamp goes back when what is left of the purchase falls below the card's minimum.
        bool unstamped = false;
        for (int c = 0; c < p.stamp_card_count; ++c) {
          const int64_t least = std::max<int64_t>(p.stamp_cards[c].min_purchase_minor, 1);
          if (remaining >= least && remaining - refund < least) {
            --a.stamps[c];
            unstamped = true;
          }
        }
        record(mp, e, fp, now, Result::kOk, back, false).stamped = unstamped;
        return {Result::kOk, back, false, false, unstamped};
      }
      case EventKind::kAdjust: {
        if (a.available + e.amount < 0) return {Result::kInsufficientPoints};
        if (a.available + e.amount > kPointsMax) return {Result::kOverflow};
        if (taken) return {Result::kDuplicateOrder};
        if (e.amount > 0) {
          add_lot(p, a, expiry_day(p.lots, day), e.amount);
        } else {
          take_lots(p, a, -e.amount);
        }
        a.last_day = day;
        mp.totals.adjusted += e.amount;
        record(mp, e, fp, now, Result::kOk, e.amount, false);
        return {Result::kOk, e.amount};
      }
      case EventKind::kMembership: {
        if (taken) return {Result::kDuplicateOrder};
        int64_t from = a.member_until >= day ? a.member_until : day - 1;
        a.member_until = std::min<int64_t>(from + (e.amount == 0 ? 1 : e.amount) * p.membership_days, kNeverDay - 1);
        a.last_day = day;
        record(mp, e, fp, now, Result::kOk, 0, false);
        return {Result::kOk, 0};
      }
      case EventKind::kTransfer: {
        if (a.available < e.amount) return {Result::kInsufficientPoints};
        if (taken) return {Result::kDuplicateOrder};
        take_lots(p, a, e.amount);
        a.last_day = day;
        count_event(0);
        mp.totals.in_transit += e.amount;
        record(mp, e, fp, now, Result::kOk, e.amount, false);
        return {Result::kOk, e.amount};
      }
      default: return {Result::kInvalidKind};
    }
  }

  MOrder& record(MProgram& mp, const Event& e, uint64_t fp, int64_t now, Result r, int64_t points, bool capped) {
    MOrder& o = mp.orders[e.ref];
    o.fp = fp;
    o.account = e.account;
    o.kind = e.kind;
    o.result = r;
    o.amount = e.amount;
    o.points = points;
    o.time_ms = now;
    o.capped = capped;
    return o;
  }

  std::string hold_expire(MProgram& mp, const Effect& eff, int64_t now) {
    auto hit = mp.orders.find(eff.event.ref);
    if (hit == mp.orders.end() || hit->second.kind != EventKind::kHold) return "expiry of an unknown hold";
    MOrder& h = hit->second;
    if (h.state != MState::kOpen) return "expiry of a hold that is not open";
    if (h.expires_ms > now) return "hold expired before its time";
    MAccount& a = mp.accounts[h.account];
    a.held -= h.amount;
    add_lot(mp.rules, a, h.lot_day, h.amount);
    h.state = MState::kExpired;
    std::string err = compare(eff, {Result::kOk, h.amount}, &a);
    return err.empty() ? track_and_check_invariant(mp, eff) : err;
  }

  Expect transfer_in(MProgram& mp, const Event& e, int64_t now) {
    auto it = mp.accounts.find(e.account);
    mp.totals.in_transit -= e.amount;
    if (it == mp.accounts.end()) {
      mp.totals.in_transit += e.amount;  // still in transit: on its way back
      return {Result::kAccountNotFound};
    }
    const Program& p = mp.rules;
    add_lot(p, it->second, expiry_day(p.lots, day_of(p, now)), e.amount);
    it->second.last_day = day_of(p, now);
    it->second.earned += e.amount;
    return {Result::kOk, e.amount};
  }

  Expect transfer_bounce(MProgram& mp, const Event& e, int64_t now) {
    MOrder& t = mp.orders[e.ref];
    if (t.bounced) return {Result::kInvalidKind};  // the engine must not bounce twice
    t.bounced = true;
    const Program& p = mp.rules;
    add_lot(p, mp.accounts[e.account], expiry_day(p.lots, day_of(p, now)), e.amount);
    mp.totals.in_transit -= e.amount;
    return {Result::kOk, e.amount};
  }

  static std::string compare(const Effect& eff, const Expect& x, const MAccount* a) {
    auto fail = [&](const std::string& what) {
      return std::string(to_string(eff.event.kind)) + " of account " + std::to_string(eff.event.account) +
             " at " + std::to_string(eff.time_ms) + ": " + what;
    };
    if (eff.result != x.result)
      return fail("result " + std::string(to_string(eff.result)) + ", model " + std::string(to_string(x.result)));
    if (((eff.flags & kEffectReplay) != 0) != x.replay) return fail("replay flag differs");
    if (x.result != Result::kOk && !x.replay) return {};
    if (eff.points != x.points) return fail("points " + std::to_string(eff.points) + ", model " + std::to_string(x.points));
    if (((eff.flags & kEffectCapped) != 0) != x.capped) return fail("capped flag differs");
    if (((eff.flags & kEffectStamped) != 0) != x.stamped) return fail("stamped flag differs");
    if (((eff.flags & kEffectCampaign) != 0) != x.campaign) return fail("campaign flag differs");
    if (a == nullptr) return (eff.flags & kEffectNoAccount) ? "" : fail("state of an account the model lacks");
    const AccountState& s = eff.state;
    if (s.available != a->available || s.held != a->held || s.lifetime_earned != a->earned ||
        s.lifetime_redeemed != a->redeemed || s.qualifying != a->qualifying || s.tier != a->tier ||
        s.pending != a->pending || s.member_until != a->member_until ||
        ((s.flags & kAccountPurchased) != 0) != a->purchased) {
      return fail("state available " + std::to_string(s.available) + "/" + std::to_string(a->available) +
                  " held " + std::to_string(s.held) + "/" + std::to_string(a->held) + " earned " +
                  std::to_string(s.lifetime_earned) + "/" + std::to_string(a->earned) + " tier " +
                  std::to_string(s.tier) + "/" + std::to_string(a->tier) + " pending " + std::to_string(s.pending) +
                  "/" + std::to_string(a->pending) + " qualifying " + std::to_string(s.qualifying) + "/" +
                  std::to_string(a->qualifying) + " redeemed " + std::to_string(s.lifetime_redeemed) + "/" +
                  std::to_string(a->redeemed) + " member until " + std::to_string(s.member_until) + "/" +
                  std::to_string(a->member_until));
    }
    return {};
  }

  // The invariant, from what the effects themselves report (points and resulting states).
  static std::string track_and_check_invariant(MProgram& mp, const Effect& eff) {
    if (eff.result == Result::kOk && !(eff.flags & kEffectReplay)) {
      MTotals& t = mp.seen;
      switch (eff.event.kind) {
        case EventKind::kEnroll:
        case EventKind::kEarn:
        case EventKind::kAward: t.issued += eff.points; break;
        case EventKind::kRedeem:
        case EventKind::kCapture: t.redeemed += eff.points; break;
        case EventKind::kReverse: t.clawed += eff.points; break;
        case EventKind::kAdjust: t.adjusted += eff.points; break;
        case EventKind::kTransfer: t.in_transit += eff.points; break;
        case EventKind::kTransferIn:
        case EventKind::kTransferBounce: t.in_transit -= eff.points; break;
        case EventKind::kExpire: t.expired += eff.points; break;
        case EventKind::kTier:       // an upgrade bonus
        case EventKind::kStampCard:  // a stamp card's reward
        case EventKind::kBonus:      // a purchase bonus
          t.issued += eff.points;
          break;
        default: break;
      }
    }
    if (!(eff.flags & kEffectNoAccount)) mp.seen_states[eff.event.account] = eff.state;
    int64_t balances = 0;
    for (const auto& [id, s] : mp.seen_states) balances += s.available + s.held + s.pending;
    const MTotals& t = mp.seen;
    int64_t expected = t.issued - t.redeemed - t.expired - t.clawed + t.adjusted - t.in_transit;
    if (expected != balances) {
      return "invariant broken after " + std::string(to_string(eff.event.kind)) + ": totals say " +
             std::to_string(expected) + ", balances sum to " + std::to_string(balances);
    }
    return {};
  }

  // ---- lots: the rules of docs/programs.md "Lots, pending points and expiry", on std::maps ----
  static bool lots_on(const Program& p) { return p.lots.has_lots(); }

  // A credit: pays what the member owes first, the rest is a lot expiring on `expiry`.
  static void add_lot(const Program& p, MAccount& a, int64_t expiry, int64_t points) {
    if (points <= 0) return;
    int64_t rest = a.available < 0 ? std::max<int64_t>(0, a.available + points) : points;
    a.available += points;
    if (lots_on(p) && rest > 0) a.lots[expiry] += rest;
  }
  // Spends earliest expiry first; returns the expiry day of the first lot taken from (0: none).
  static int64_t take_lots(const Program& p, MAccount& a, int64_t points) {
    a.available -= points;
    if (!lots_on(p)) return 0;
    int64_t first = 0;
    while (points > 0 && !a.lots.empty()) {
      auto it = a.lots.begin();
      if (first == 0) first = it->first;
      int64_t t = std::min(points, it->second);
      it->second -= t;
      points -= t;
      if (it->second == 0) a.lots.erase(it);
    }
    return first;
  }
  static int64_t take_one(std::map<int64_t, int64_t>& lots, int64_t day, int64_t max) {
    auto it = lots.find(day);
    if (it == lots.end()) return 0;
    int64_t t = std::min(max, it->second);
    it->second -= t;
    if (it->second == 0) lots.erase(it);
    return t;
  }
  // A refund: the order's pending lot, then the lot it became, then earliest first, then owed.
  static void claw_back(const Program& p, MAccount& a, int64_t base, int64_t points) {
    if (!lots_on(p)) {
      a.available -= points;
      return;
    }
    int64_t left = points;
    if (p.lots.pending_days > 0) {
      int64_t t = take_one(a.pend, base + p.lots.pending_days, left);
      a.pending -= t;
      left -= t;
    }
    if (left > 0 && a.available > 0) {
      int64_t t = take_one(a.lots, expiry_day(p.lots, base), left);
      a.available -= t;
      left -= t;
    }
    if (left > 0 && a.available > 0) {
      int64_t t = std::min(left, a.available);
      take_lots(p, a, t);
      left -= t;
    }
    a.available -= left;
  }
  static bool due(const Program& p, const MAccount& a, int64_t today) {
    if (!a.pend.empty() && a.pend.begin()->first <= today) return true;
    if (!a.lots.empty() && a.lots.begin()->first < today) return true;
    if (p.tier_policy.windowed()) {
      const int64_t period = period_of(p, today);
      if (period != a.period) return true;
      if (a.tier > std::max(a.earned_tier, a.reached) && today >= start_of(p, period) + p.tier_policy.grace_days)
        return true;
    }
    int64_t n = p.lots.inactivity_days;
    return n > 0 && (a.available > 0 || a.pending > 0) && today > a.last_day + n;
  }
  // kMature, kExpire (lots), kExpire (inactivity): what is due at `now`, in that order.
  std::string lifecycle(MProgram& mp, const Effect& eff, int64_t now) {
    const Program& p = mp.rules;
    const int64_t today = local_day(p, now);
    auto it = mp.accounts.find(eff.event.account);
    if (it == mp.accounts.end()) return "lifecycle effect of an unknown account";
    MAccount& a = it->second;
    int64_t points = 0;
    if (eff.event.kind == EventKind::kMature) {
      while (!a.pend.empty() && a.pend.begin()->first <= today) {
        auto [d, pts] = *a.pend.begin();
        a.pend.erase(a.pend.begin());
        a.pending -= pts;
        points += pts;
        add_lot(p, a, expiry_day(p.lots, d - p.lots.pending_days), pts);
      }
    } else if (eff.event.code == static_cast<uint16_t>(ExpireReason::kLots)) {
      if (!a.pend.empty() && a.pend.begin()->first <= today) return "lots expired before pending points matured";
      while (!a.lots.empty() && a.lots.begin()->first < today) {
        points += a.lots.begin()->second;
        a.lots.erase(a.lots.begin());
      }
      a.available -= points;
      mp.totals.expired += points;
    } else if (eff.event.code == static_cast<uint16_t>(ExpireReason::kInactivity)) {
      int64_t n = p.lots.inactivity_days;
      if (n == 0 || today <= a.last_day + n) return "inactivity expiry before the period ended";
      points = std::max<int64_t>(a.available, 0) + a.pending;
      a.available -= std::max<int64_t>(a.available, 0);
      a.pending = 0;
      a.lots.clear();
      a.pend.clear();
      mp.totals.expired += points;
    } else {
      return "expire effect with an unknown reason code";
    }
    if (points == 0) return std::string(to_string(eff.event.kind)) + " with nothing due";
    std::string err = compare(eff, {Result::kOk, points}, &a);
    return err.empty() ? track_and_check_invariant(mp, eff) : err;
  }

  // ---- tiers over time: docs/programs.md "Tiers over time", period by period ----
  static int tier_of(const Program& p, int64_t q) {
    int t = 0;
    while (t + 1 < p.tier_count && q >= p.tiers[t + 1].threshold_points) ++t;
    return t;
  }
  static int64_t months_of(const Program& p) {
    return p.tier_policy.period == TierPeriod::kRollingMonths ? p.tier_policy.window_months : 1;
  }
  static int64_t period_of(const Program& p, int64_t day) {
    CivilDate c = civil_from_days(day);
    return p.tier_policy.period == TierPeriod::kCalendarYear ? c.year - 1970 : (c.year - 1970) * 12 + c.month - 1;
  }
  static int64_t start_of(const Program& p, int64_t period) {
    if (p.tier_policy.period == TierPeriod::kCalendarYear) return days_from_civil(static_cast<int>(1970 + period), 1, 1);
    return days_from_civil(static_cast<int>(1970 + period / 12), static_cast<unsigned>(period % 12 + 1), 1);
  }
  // The period a purchase dated `dated` and applied on `applied` qualifies in.
  static int64_t counted_period(const Program& p, int64_t dated, int64_t applied) {
    const int64_t d = period_of(p, dated), a = period_of(p, applied);
    return d <= a && d > a - months_of(p) ? d : a;
  }
  // Qualifying points of the window ending with the account's period.
  static int64_t window_points(const Program& p, const MAccount& a) {
    int64_t sum = 0;
    for (const auto& [period, pts] : a.qual)
      if (period > a.period - months_of(p) && period <= a.period) sum += pts;
    return sum;
  }
  // The review on `today`: closes every period that has ended (the closing window's points earn
  // the next period's tier; the tier held then is kept through the grace days); returns the tier
  // held today. Changes everything but the account's tier.
  static int review(const Program& p, MAccount& a, int64_t today) {
    const int64_t period = period_of(p, today);
    while (a.period < period) {
      a.grace_tier = std::max(a.reached, a.earned_tier);
      a.earned_tier = tier_of(p, window_points(p, a));
      ++a.period;
      a.reached = tier_of(p, window_points(p, a));
    }
    a.qualifying = window_points(p, a);
    const bool in_grace = today < start_of(p, period) + p.tier_policy.grace_days;
    return std::max({a.reached, a.earned_tier, in_grace ? a.grace_tier : 0});
  }

  std::string tier_change(MProgram& mp, const Effect& eff, int64_t now) {
    const Program& p = mp.rules;
    auto it = mp.accounts.find(eff.event.account);
    if (it == mp.accounts.end()) return "tier effect of an unknown account";
    MAccount& a = it->second;
    Expect x{Result::kOk, 0};
    if (a.upgrade_next) {  // the upgrade of the purchase just before
      a.upgrade_next = false;
      x.points = a.upgrade_bonus;
      if (a.upgrade_bonus > 0) {
        add_lot(p, a, expiry_day(p.lots, day_of(p, now)), a.upgrade_bonus);
        a.earned += a.upgrade_bonus;
        mp.totals.issued += a.upgrade_bonus;
      }
    } else {
      if (!a.cards_next.empty()) return "a tier review before the reward of a completed stamp card";
      if (!p.tier_policy.windowed()) return "a tier review in a program without a tier window";
      const int64_t qualifying = a.qualifying;
      const int tier = review(p, a, day_of(p, now));
      if (tier == a.tier && a.qualifying == qualifying) return "a tier review effect that changes nothing";
      a.tier = tier;
    }
    if (eff.event.code != a.tier) return "tier effect to tier " + std::to_string(eff.event.code) + ", model " + std::to_string(a.tier);
    std::string err = compare(eff, x, &a);
    return err.empty() ? track_and_check_invariant(mp, eff) : err;
  }

  // A bonus of the purchase just before (first purchase, comeback), in that order.
  std::string purchase_bonus(MProgram& mp, const Effect& eff, int64_t now) {
    const Program& p = mp.rules;
    auto it = mp.accounts.find(eff.event.account);
    if (it == mp.accounts.end()) return "bonus effect of an unknown account";
    MAccount& a = it->second;
    if (a.bonuses_next.empty()) return "a purchase bonus no purchase earned";
    const auto [code, points] = a.bonuses_next.front();
    a.bonuses_next.erase(a.bonuses_next.begin());
    if (eff.event.code != code) return "bonus " + std::to_string(eff.event.code) + ", model " + std::to_string(code);
    add_lot(p, a, expiry_day(p.lots, day_of(p, now)), points);
    a.earned += points;
    mp.totals.issued += points;
    std::string err = compare(eff, {Result::kOk, points}, &a);
    return err.empty() ? track_and_check_invariant(mp, eff) : err;
  }

  // The reward of a stamp card the purchase just before completed.
  std::string stamp_card(MProgram& mp, const Effect& eff, int64_t now) {
    const Program& p = mp.rules;
    auto it = mp.accounts.find(eff.event.account);
    if (it == mp.accounts.end()) return "stamp card effect of an unknown account";
    MAccount& a = it->second;
    if (a.cards_next.empty()) return "a stamp card reward no purchase completed";
    const int card = a.cards_next.front();
    a.cards_next.erase(a.cards_next.begin());
    if (eff.event.code != card) return "stamp card " + std::to_string(eff.event.code) + ", model " + std::to_string(card);
    const int64_t reward = p.stamp_cards[card - 1].reward_points;
    if (reward > 0) {
      add_lot(p, a, expiry_day(p.lots, day_of(p, now)), reward);
      a.earned += reward;
      mp.totals.issued += reward;
    }
    std::string err = compare(eff, {Result::kOk, reward}, &a);
    return err.empty() ? track_and_check_invariant(mp, eff) : err;
  }

  std::map<uint32_t, MProgram> programs_;
};

// ---- the random workload ------------------------------------------------------------------------
std::vector<Program> test_programs() {
  Program a = default_program();  // tiers, caps, action limits
  a.id = 1;
  a.accounts_max = 1000;
  a.orders_max = 200'000;
  a.holds_open_max = 10'000;
  a.points_per_day_max = 4'000;
  a.events_per_minute_max = 2;
  a.earn_points_max = 900;
  a.redeem_points_min = 5;
  a.hold_timeout_ms = 10 * kMsPerMinute;
  a.tiers[2].bonus_points = 300;  // lifetime tiers with an upgrade bonus: tier effects
  a.first_purchase_bonus_points = 30;  // and a first-purchase bonus, and campaigns on days 5-12 and 9-10
  a.campaign_count = 2;
  a.campaigns[0] = {"double", kT0 / kMsPerDay + 5, kT0 / kMsPerDay + 12, 2000};
  a.campaigns[1] = {"triple", kT0 / kMsPerDay + 9, kT0 / kMsPerDay + 10, 3000};
  Program b;  // plain: no caps, no tiers, another currency and rate
  b.id = 2;
  b.currency = 840;
  b.earn_points = 3;
  b.earn_per_minor = 250;
  b.signup_bonus_points = 0;
  b.accounts_max = 1000;
  b.orders_max = 200'000;
  b.holds_open_max = 10'000;
  b.hold_timeout_ms = 2 * kMsPerMinute;
  b.lots.expiry = ExpiryKind::kEndOfMonth;  // spendable to the end of the month after the purchase
  b.lots.expiry_months = 1;
  b.lots_max = 100'000;
  b.stamp_card_count = 2;  // and stamp cards: 4 purchases of 1000.00 or more; any 3 purchases
  b.stamp_cards[0] = {"big", 4, 100'000, 300};
  b.stamp_cards[1] = {"visits", 3, 0, 15};
  Program c = b;  // lots that live 20 days, pending for 5, everything lapses after 30 idle days
  c.id = 3;
  c.stamp_card_count = 1;  // the visits card alone, as its first card
  c.stamp_cards[0] = b.stamp_cards[1];
  c.currency = 978;
  c.signup_bonus_points = 25;
  c.utc_offset_minutes = 330;  // +05:30: days begin at 18:30 UTC
  c.lots.expiry = ExpiryKind::kDays;
  c.lots.expiry_days = 20;
  c.lots.pending_days = 5;
  c.lots.inactivity_days = 30;
  c.membership_days = 20;  // and a paid membership: x1.5 on purchases while it covers their day
  c.membership_multiplier_permille = 1500;
  // Tiers over a rolling window of 2 months with a 4-day grace, bonuses on upgrade.
  c.tier_count = 3;
  c.tiers[0] = {0, 1000, "blue", 0};
  c.tiers[1] = {1'500, 1250, "silver", 40};
  c.tiers[2] = {6'000, 1500, "gold", 150};
  c.tier_policy.period = TierPeriod::kRollingMonths;
  c.tier_policy.window_months = 2;
  c.tier_policy.grace_days = 4;
  Program d = c;  // the same, dated by arrival
  d.id = 4;
  d.lots.date_by_purchase = false;
  d.lots.inactivity_days = 8;
  d.tier_policy.window_months = 1;  // the window is this month alone, no grace
  d.tier_policy.grace_days = 0;
  d.comeback_bonus_points = 60;  // and a comeback bonus after 9 days away
  d.comeback_days = 9;
  return {a, b, c, d};
}

class Workload {
 public:
  explicit Workload(uint64_t seed) : rng_(seed) {}

  // One batch of events stamped at the current time; advances the time first.
  std::vector<Event> next_batch() {
    advance_time();
    std::vector<Event> batch(pick(1, 40));
    for (Event& e : batch) e = next_event();
    // Now and then, for sure rather than by chance: a member of a program with lots spends a
    // purchase's points, then the purchase is refunded (the member owes them).
    if (++batches_ % 400 == 50) spend_then_refund(&batch);
    return batch;
  }
  int64_t now() const { return now_; }
  bool tick_due() { return pick(0, 20) == 0; }

 private:
  int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  bool chance(int percent) { return pick(0, 99) < percent; }

  void advance_time() {
    int r = static_cast<int>(pick(0, 99));
    if (r < 60) now_ += pick(0, 5'000);
    else if (r < 95) now_ += pick(5'000, 5 * kMsPerMinute);
    else if (r < 99) now_ += pick(kMsPerMinute, 3 * 3'600'000);
    else now_ += pick(1, 40) * kMsPerDay / 10;  // days pass: caps reset, action windows move
  }

  uint64_t account() { return static_cast<uint64_t>(pick(1, 120)); }
  uint32_t program() {
    int r = static_cast<int>(pick(0, 99));
    return r < 45 ? 1 : r < 65 ? 2 : r < 88 ? 3 : 4;
  }
  Ref128 fresh_ref() { return reference_from_string("ref-" + std::to_string(++ref_counter_)); }

  Event next_event() {
    Event e{};
    e.program = program();
    e.account = account();
    // A few members of the programs with lots stop coming after the first days: they lapse.
    while (e.program >= 3 && e.account <= 8 && now_ > kT0 + 3 * kMsPerDay) e.account = account();
    e.ref = fresh_ref();
    e.store = static_cast<uint32_t>(pick(1, 5));
    int r = static_cast<int>(pick(0, 999));
    if (!history_.empty() && r < 50) {  // an identical retry
      return history_[static_cast<size_t>(pick(0, static_cast<int64_t>(history_.size()) - 1))];
    }
    if (!history_.empty() && r < 80) {  // a different event reusing a reference: fraud
      Event old = history_[static_cast<size_t>(pick(0, static_cast<int64_t>(history_.size()) - 1))];
      e = old;
      if (chance(50)) e.account = account();
      else e.amount += pick(1, 500);
      return e;
    }
    r = static_cast<int>(pick(0, 999));
    if (r < 70) {
      e.kind = EventKind::kEnroll;
    } else if (r < 430) {
      e.kind = EventKind::kEarn;
      e.amount = chance(3) ? pick(-100, 0) : pick(1, 300'000);
      if (chance(2)) e.currency = 826;
    } else if (r < 480) {
      e.kind = EventKind::kAward;
      e.code = static_cast<uint16_t>(pick(0, 6));
    } else if (r < 600) {
      e.kind = EventKind::kRedeem;
      e.amount = pick(1, 1'500);
    } else if (r < 660) {
      e.kind = EventKind::kHold;
      e.amount = pick(1, 800);
    } else if (r < 720) {
      e.kind = chance(70) ? EventKind::kCapture : EventKind::kVoid;
      Event h = pick_of(holds_);
      e.account = chance(90) ? h.account : account();
      e.program = h.program != 0 ? h.program : e.program;
      e.target = h.ref;
      if (e.kind == EventKind::kCapture && chance(40)) e.amount = pick(1, 900);
    } else if (r < 790) {
      e.kind = EventKind::kReverse;
      Event o = pick_of(earns_);
      e.account = chance(92) ? o.account : account();
      e.program = o.program != 0 ? o.program : e.program;
      e.target = o.ref;
      e.amount = chance(50) ? 0 : pick(1, std::max<int64_t>(1, o.amount));
    } else if (r < 820) {
      e.kind = EventKind::kAdjust;
      e.code = static_cast<uint16_t>(pick(0, 3));
      e.amount = pick(-400, 400);
    } else if (r < 900) {
      e.kind = EventKind::kTransfer;
      e.counterparty = chance(3) ? e.account : chance(1) ? 0 : pick(1, 130);  // some to unknown accounts
      e.amount = pick(1, 400);
    } else if (r < 915) {
      e.kind = EventKind::kMembership;
      e.amount = chance(5) ? 101 : pick(0, 3);
    } else if (r < 990) {
      e.kind = EventKind::kBalance;
      e.ref = {};
    } else {
      e.kind = static_cast<EventKind>(pick(0, 40));  // garbage, internal kinds included
      if (is_internal(e.kind)) e.kind = EventKind::kInvalid;  // net refuses internal kinds
      if (chance(50)) e.account = 0;
    }
    if (chance(1)) e.program = 9;               // unknown program
    if (chance(1)) e.ref = {};                  // missing reference
    if (chance(2)) e.business_time_ms = now_ - pick(0, 30) * kMsPerDay;
    if (chance(1)) e.business_time_ms = now_ - 401 * kMsPerDay;  // stale
    if (chance(1)) e.business_time_ms = now_ + 2 * kMsPerDay;    // a till's clock far ahead
    if (e.kind == EventKind::kHold) holds_.push_back(e);
    if (e.kind == EventKind::kEarn) earns_.push_back(e);
    if (is_mutating(e.kind)) history_.push_back(e);
    return e;
  }

  void spend_then_refund(std::vector<Event>* batch) {
    const uint64_t account = 1000 + batches_;  // a member of its own: nobody else's events touch it
    auto event = [&](EventKind kind, int64_t amount) {
      Event e{};
      e.kind = kind;
      e.program = 2;
      e.account = account;
      e.amount = amount;
      e.ref = fresh_ref();
      return e;
    };
    Event earn = event(EventKind::kEarn, 100'000);  // 1200 points at 3 per 2.50
    Event refund = event(EventKind::kReverse, 0);
    refund.target = earn.ref;
    batch->push_back(event(EventKind::kEnroll, 0));
    batch->push_back(earn);
    batch->push_back(event(EventKind::kRedeem, 1'000));
    batch->push_back(refund);
  }

  Event pick_of(const std::vector<Event>& v) {
    if (v.empty()) return Event{};
    // Mostly recent ones: holds expire and the interesting refunds are fresh.
    int64_t n = static_cast<int64_t>(v.size());
    return v[static_cast<size_t>(chance(80) ? pick(std::max<int64_t>(0, n - 50), n - 1) : pick(0, n - 1))];
  }

  std::mt19937_64 rng_;
  int64_t now_ = kT0;
  uint64_t ref_counter_ = 0;
  uint64_t batches_ = 0;
  std::vector<Event> history_, holds_, earns_;
};

uint64_t seed_from_env(uint64_t fallback) {
  const char* s = std::getenv("TALLY_SEED");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : fallback;
}

void run_model(uint16_t shards, uint64_t seed, int batches) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with TALLY_SEED=" + std::to_string(seed) + ")");
  std::printf("model test: %u shards, seed %llu\n", shards, static_cast<unsigned long long>(seed));
  std::vector<Program> programs = test_programs();
  std::vector<Effect> effects;
  PipelineConfig config;
  config.shard_count = shards;
  config.programs = programs;
  config.references_max = 1'000'000;
  config.producer_ring_events = 64;  // small rings: backpressure is part of what is tested
  config.output_ring_effects = 128;
  config.lane_ring_events = 4;
  Pipeline pipeline(config, [&](std::span<const Effect> batch) {
    effects.insert(effects.end(), batch.begin(), batch.end());
  });
  Workload w(seed);
  for (int b = 0; b < batches; ++b) {
    std::vector<Event> batch = w.next_batch();
    pipeline.submit(0, batch, w.now());
    if (w.tick_due()) pipeline.tick(0, w.now());
  }
  pipeline.drain();
  std::printf("model test: %zu effects over %.1f days\n", effects.size(), double(w.now() - kT0) / kMsPerDay);

  // The workload must reach what it claims to test: each of these happened at least once.
  std::map<std::pair<EventKind, Result>, int> seen;
  int replays = 0, cross_shard_duplicates = 0, inactivity = 0, owed = 0, upgrades = 0, downgrades = 0;
  std::map<std::pair<uint32_t, uint64_t>, int> tiers;
  for (const Effect& eff : effects) {
    if (eff.event.kind == EventKind::kTier) {
      int& t = tiers[{eff.event.program, eff.event.account}];
      (eff.event.code > t ? upgrades : downgrades) += 1;
      t = eff.event.code;
    }
    inactivity += eff.event.kind == EventKind::kExpire && eff.event.code == static_cast<uint16_t>(ExpireReason::kInactivity);
    owed += eff.event.program >= 2 && eff.state.available < 0;
    ++seen[{eff.event.kind, eff.result}];
    replays += (eff.flags & kEffectReplay) != 0;
    cross_shard_duplicates += eff.depends_seq != 0;
  }
  for (auto [kind, result] : std::vector<std::pair<EventKind, Result>>{
           {EventKind::kEnroll, Result::kOk}, {EventKind::kEarn, Result::kOk},
           {EventKind::kEarn, Result::kDuplicateOrder}, {EventKind::kEarn, Result::kCapExceeded},
           {EventKind::kEarn, Result::kRateLimited}, {EventKind::kAward, Result::kOk},
           {EventKind::kAward, Result::kActionLimitReached}, {EventKind::kRedeem, Result::kOk},
           {EventKind::kRedeem, Result::kInsufficientPoints}, {EventKind::kCapture, Result::kOk},
           {EventKind::kCapture, Result::kHoldExpired}, {EventKind::kVoid, Result::kOk},
           {EventKind::kHoldExpire, Result::kOk}, {EventKind::kReverse, Result::kOk},
           {EventKind::kReverse, Result::kAlreadyReversed}, {EventKind::kAdjust, Result::kOk},
           {EventKind::kTransfer, Result::kOk}, {EventKind::kTransferIn, Result::kOk},
           {EventKind::kTransferIn, Result::kAccountNotFound}, {EventKind::kTransferBounce, Result::kOk},
           {EventKind::kBalance, Result::kOk}, {EventKind::kExpire, Result::kOk},
           {EventKind::kMature, Result::kOk}, {EventKind::kMembership, Result::kOk},
           {EventKind::kMembership, Result::kInvalidKind}, {EventKind::kStampCard, Result::kOk},
           {EventKind::kBonus, Result::kOk}}) {
    EXPECT_GT((seen[{kind, result}]), 0) << to_string(kind) << " / " << to_string(result) << " never happened";
  }
  EXPECT_GT(replays, 0);
  EXPECT_GT(inactivity, 0) << "no member lapsed for inactivity";
  EXPECT_GT(owed, 0) << "no refund of spent points in a program with lots";
  EXPECT_GT(upgrades, 0) << "nobody was upgraded";
  EXPECT_GT(downgrades, 0) << "nobody was downgraded at a review";
  if (shards > 1) {
    EXPECT_GT(cross_shard_duplicates, 0);
  }

  Model model(programs);
  std::vector<uint64_t> last_seq(shards, 0);
  for (size_t i = 0; i < effects.size(); ++i) {
    const Effect& eff = effects[i];
    std::string err = model.check(eff);
    ASSERT_EQ(err, "") << "effect #" << i << " (shard " << eff.shard << ", seq " << eff.seq << ")";
    if (eff.event.kind != EventKind::kBalance) {  // sequences run 1, 2, 3... per shard
      ASSERT_EQ(eff.seq, last_seq[eff.shard] + 1) << "effect #" << i;
      last_seq[eff.shard] = eff.seq;
    }
  }
  // The shards' final state equals the model's, account by account, and the invariant holds on it.
  for (const auto& entry : model.programs()) {  // no structured binding: clang 14 cannot capture one
    const uint32_t id = entry.first;
    const MProgram& mp = entry.second;
    size_t accounts = 0;
    int64_t balances = 0;
    ProgramStats sum;
    for (uint16_t s = 0; s < shards; ++s) {
      pipeline.shard(s).for_each_account(id, [&](uint64_t account, const AccountState& st) {
        ++accounts;
        balances += st.available + st.held + st.pending;
        auto it = mp.accounts.find(account);
        ASSERT_NE(it, mp.accounts.end()) << "account " << account << " unknown to the model";
        EXPECT_EQ(st.available, it->second.available) << "account " << account;
        EXPECT_EQ(st.held, it->second.held) << "account " << account;
        EXPECT_EQ(st.pending, it->second.pending) << "account " << account;
      });
      sum += *pipeline.shard(s).stats(id);
    }
    EXPECT_EQ(accounts, mp.accounts.size());
    EXPECT_EQ(sum.in_transit(), 0) << "points left in transit";
    EXPECT_EQ(sum.expected_balances(), balances);
    EXPECT_EQ(sum.issued, mp.totals.issued);
    EXPECT_EQ(sum.redeemed, mp.totals.redeemed);
    EXPECT_EQ(sum.expired, mp.totals.expired);
  }
}

TEST(ModelTest, OneShardMatchesTheModel) { run_model(1, seed_from_env(std::random_device{}()), 4000); }
TEST(ModelTest, TwoShardsMatchTheModel) { run_model(2, seed_from_env(std::random_device{}()), 4000); }
TEST(ModelTest, FourShardsMatchTheModel) { run_model(4, seed_from_env(std::random_device{}()), 4000); }

}  // namespace
}  // namespace tally
