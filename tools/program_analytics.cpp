#include "tools/program_analytics.h"

#include <cinttypes>
#include <cstdio>

namespace tally {

namespace {
constexpr int64_t kMsPerDayA = 86'400'000;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, UTC).
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = floor_div(y, 400);
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void civil_from_days(int64_t z, int64_t* y, int64_t* m) {
  z += 719468;
  const int64_t era = floor_div(z, 146097);
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yoe + era * 400 + (*m <= 2);
}
}  // namespace

int64_t month_of(int64_t ms) {
  int64_t y = 0, m = 0;
  civil_from_days(floor_div(ms, kMsPerDayA), &y, &m);
  return (y - 1970) * 12 + (m - 1);
}

int64_t month_start_ms(int64_t month) {
  int64_t y = 1970 + floor_div(month, 12), m = month - floor_div(month, 12) * 12 + 1;
  return days_from_civil(y, m, 1) * kMsPerDayA;
}

std::string month_name(int64_t month) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRId64, 1970 + floor_div(month, 12),
                month - floor_div(month, 12) * 12 + 1);
  return buf;
}

ProgramAnalytics::ProgramAnalytics(AnalyticsOptions options, Snapshot on_month_end)
    : options_(std::move(options)), on_month_end_(std::move(on_month_end)) {}

ProgramFigures ProgramAnalytics::figures(const Program& p, int64_t as_of_ms) const {
  ProgramFigures f = p.totals;
  f.as_of_ms = as_of_ms;
  f.at = p.last_at;
  const int64_t since = as_of_ms - options_.active_days * kMsPerDayA;
  f.active_members = 0;
  for (const auto& [id, a] : p.accounts) f.active_members += a.last_active_ms >= since && a.last_active_ms <= as_of_ms;
  return f;
}

void ProgramAnalytics::apply(const Effect& f, const RecordPos& at) {
  const Event& e = f.event;
  Program& p = programs_[e.program];
  ProgramFigures& t = p.totals;
  t.program = e.program;
  const int64_t business = e.business_time_ms != 0 ? e.business_time_ms : f.time_ms;
  const int64_t month = month_of(business);
  if (p.month < 0) p.month = month;
  if (month > p.month) {
    // The months before this record's are closed: their end-of-month figures, as of the last
    // record applied (empty months repeat the figures).
    for (int64_t m = p.month; m < month; ++m) {
      ProgramFigures snap = figures(p, month_start_ms(m + 1) - 1);
      snap.period = month_name(m);
      if (on_month_end_) on_month_end_(snap);
      t.late_records = 0;
    }
    p.month = month;
  } else if (month < p.month) {
    ++t.late_records;  // dated in a closed month: counted in the open one
  }
  p.last_at = at;

  const bool counts = f.result == Result::kOk && !(f.flags & kEffectReplay);
  if (counts) {
    switch (e.kind) {
      case EventKind::kEnroll:
        t.issued += f.points;
        ++t.members;
        break;
      case EventKind::kEarn:
      case EventKind::kAward:
      case EventKind::kTier:       // a tier's upgrade bonus
      case EventKind::kStampCard:  // a stamp card's reward
      case EventKind::kBonus:      // a purchase bonus
        t.issued += f.points;
        break;
      case EventKind::kRedeem:
      case EventKind::kCapture: t.redeemed += f.points; break;
      case EventKind::kReverse: t.clawed_back += f.points; break;
      case EventKind::kAdjust: t.adjusted += f.points; break;
      case EventKind::kTransfer: t.transfer_out += f.points; break;
      case EventKind::kTransferIn:
        if (!(f.flags & kEffectBounced)) t.transfer_in += f.points;
        break;
      case EventKind::kTransferBounce: t.transfer_bounced += f.points; break;
      case EventKind::kExpire: t.expired += f.points; break;
      default: break;
    }
  }
  if ((f.flags & kEffectNoAccount) || e.kind == EventKind::kBalance) return;
  auto [it, fresh] = p.accounts.try_emplace(e.account);
  Account& a = it->second;
  if (fresh) {
    ++t.members_per_tier[f.state.tier];
  } else if (a.tier != f.state.tier) {
    if (--t.members_per_tier[a.tier] == 0) t.members_per_tier.erase(a.tier);
    ++t.members_per_tier[f.state.tier];
  }
  const int64_t balance = f.state.available + f.state.held + f.state.pending;
  t.outstanding += balance - a.balance;
  a.balance = balance;
  a.tier = f.state.tier;
  if (counts && is_mutating(e.kind) && business > a.last_active_ms) a.last_active_ms = business;
}

std::vector<ProgramFigures> ProgramAnalytics::current() const {
  std::vector<ProgramFigures> out;
  for (const auto& [id, p] : programs_) {
    int64_t newest = INT64_MIN;
    for (const auto& [a, acc] : p.accounts) newest = std::max(newest, acc.last_active_ms);
    ProgramFigures f = figures(p, newest == INT64_MIN ? 0 : newest);
    f.period = "current";
    out.push_back(f);
  }
  return out;
}

int64_t ProgramAnalytics::money(const ProgramFigures& f) const {
  auto it = options_.micro_minor_per_point.find(f.program);
  if (it == options_.micro_minor_per_point.end()) return 0;
  // Whole points and the fraction apart: no overflow below 9.2e12 points at a point value of a cent.
  const int64_t per = it->second;
  return f.outstanding / 1'000'000 * per + f.outstanding % 1'000'000 * per / 1'000'000;
}

std::string figures_json(const ProgramFigures& f, int64_t money_minor) {
  char buf[1024];
  int n = std::snprintf(
      buf, sizeof buf,
      "{\"v\":1,\"program\":%u,\"period\":\"%s\",\"as_of_ms\":%" PRId64 ",\"lsn\":%" PRIu64 ",\"index\":%u,"
      "\"issued\":%" PRId64 ",\"redeemed\":%" PRId64 ",\"expired\":%" PRId64 ",\"clawed_back\":%" PRId64
      ",\"adjusted\":%" PRId64 ",\"in_transit\":%" PRId64 ",\"outstanding_points\":%" PRId64
      ",\"outstanding_money_minor\":%" PRId64 ",\"redemption_rate\":%.6f,\"members\":%" PRIu64
      ",\"active_members\":%" PRIu64 ",\"late_records\":%" PRIu64 ",\"members_per_tier\":{",
      f.program, f.period.c_str(), f.as_of_ms, f.at.lsn, f.at.index, f.issued, f.redeemed, f.expired, f.clawed_back,
      f.adjusted, f.in_transit(), f.outstanding, money_minor, f.redemption_rate(), f.members, f.active_members,
      f.late_records);
  std::string s(buf, static_cast<size_t>(n));
  bool first = true;
  for (const auto& [tier, count] : f.members_per_tier) {
    s += (first ? "\"" : ",\"") + std::to_string(tier) + "\":" + std::to_string(count);
    first = false;
  }
  s += "}}";
  return s;
}

}  // namespace tally
