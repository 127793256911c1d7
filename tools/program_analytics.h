// Tally tools: program statistics maintained from the change stream, exactly (docs/analytics.md).
//
// Fed every committed record in log order, it keeps per program what finance and analysts ask
// for: points issued, redeemed, expired, clawed back, adjusted and in transit (the same rules as
// the engine's own totals, so the two agree exactly), the outstanding liability (what members
// hold, available + held) in points and in money at the program's point value, the redemption
// rate, members, members per tier and active members; and a snapshot of it all at the end of
// each calendar month in business time (UTC), taken when the first record of a later month
// arrives, with the log position it was taken at, so it can be reconciled against the stream.
// Pure code: no files, no sockets. One thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/types.h"
#include "tools/event_format.h"

namespace tally {

struct ProgramFigures {
  uint32_t program = 0;
  std::string period;        // "2026-11" for a month-end snapshot; "current" otherwise
  RecordPos at;              // the log position the figures include everything up to
  int64_t as_of_ms = 0;      // business time: the end of the month, or the newest record's
  int64_t issued = 0, redeemed = 0, expired = 0, clawed_back = 0, adjusted = 0;
  int64_t transfer_out = 0, transfer_in = 0, transfer_bounced = 0;
  int64_t outstanding = 0;   // points the members hold (available + held)
  uint64_t members = 0;
  uint64_t active_members = 0;  // with an accepted event within active_days before as_of_ms
  std::map<uint8_t, uint64_t> members_per_tier;
  uint64_t late_records = 0;  // records of this period dated (business time) in an earlier, closed one
  int64_t in_transit() const { return transfer_out - transfer_in - transfer_bounced; }
  double redemption_rate() const { return issued > 0 ? static_cast<double>(redeemed) / static_cast<double>(issued) : 0; }
};

struct AnalyticsOptions {
  // Per program, what a point is worth: minor units of its currency (cents) per point, times
  // 1,000,000 (1 cent a point = 1,000,000; half a cent = 500,000). Absent: no money figure.
  std::map<uint32_t, int64_t> micro_minor_per_point;
  int64_t active_days = 90;
};

class ProgramAnalytics {
 public:
  using Snapshot = std::function<void(const ProgramFigures&)>;
  ProgramAnalytics(AnalyticsOptions options, Snapshot on_month_end);

  void apply(const Effect& f, const RecordPos& at);
  std::vector<ProgramFigures> current() const;
  // Liability in minor units at the configured point value (0 when none is configured).
  int64_t money(const ProgramFigures& f) const;
  const AnalyticsOptions& options() const { return options_; }

 private:
  struct Account {
    int64_t balance = 0;  // available + held
    uint8_t tier = 0;
    int64_t last_active_ms = INT64_MIN;
  };
  struct Program {
    ProgramFigures totals;
    std::unordered_map<uint64_t, Account> accounts;
    int64_t month = -1;        // the open period: months since 1970-01 (business time)
    RecordPos last_at;         // the last record applied
  };
  ProgramFigures figures(const Program& p, int64_t as_of_ms) const;

  AnalyticsOptions options_;
  Snapshot on_month_end_;
  std::map<uint32_t, Program> programs_;
};

// "2026-11" for a month index (months since 1970-01), and the first ms of a month.
std::string month_name(int64_t month);
int64_t month_start_ms(int64_t month);
int64_t month_of(int64_t ms);

// One JSON object for a snapshot (docs/analytics.md), no trailing newline.
std::string figures_json(const ProgramFigures& f, int64_t money_minor);

}  // namespace tally
