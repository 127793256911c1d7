// tally-analytics: program statistics from the change stream, exactly, with month-end snapshots in
// business time that finance can reconcile against the stream (docs/analytics.md).
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "tools/log_stream.h"
#include "tools/program_analytics.h"

namespace {

using namespace tally;

constexpr const char* kHelp = R"(tally-analytics: program statistics of a Tally server, from its change stream.

usage: tally-analytics [options]

Reads every committed record from the oldest (a replica key: every program; a reader key: its
own) and computes, per program: points issued, redeemed, expired, clawed back, adjusted, in
transit; the outstanding liability in points and, with --point-value, in money; the redemption
rate; members, members per tier, active members. Writes one JSON line per program at the end of
each calendar month in business time (UTC) to --month-ends, and the current figures to
standard output at the end (docs/analytics.md).

  --month-ends FILE    month-end snapshots, JSON Lines (rewritten: the run recomputes them)
  --point-value P=V    program P's point is worth V minor units (cents), a decimal: 1=0.5
                       is half a cent a point; repeatable
  --active-days N      an active member had an accepted event in the last N days (default 90)
  --to LSN             stop after this batch (default: the server's durable LSN at start)
  --follow             keep following; print the current figures every --every seconds
  --every S            with --follow (default 60)
  --host H --port N    the server (default 127.0.0.1:7411)
  --key ID             API key id (default $TALLY_KEY); secret from $TALLY_SECRET
  -h, --help           this text

exit status: 0 done; 2 usage; 3 cannot subscribe (or the log was trimmed: the figures would be
incomplete); 4 the stream failed a check; 5 a file error.
)";

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int usage_error(const std::string& m) {
  std::fprintf(stderr, "tally-analytics: %s (see --help)\n", m.c_str());
  return 2;
}

// "0.5" -> 500000 (micro units); false on anything else.
bool parse_micro(std::string_view s, int64_t* out) {
  int64_t whole = 0, frac = 0, scale = 1'000'000;
  size_t i = 0;
  if (s.empty()) return false;
  for (; i < s.size() && s[i] != '.'; ++i) {
    if (s[i] < '0' || s[i] > '9' || whole > 1'000'000'000) return false;
    whole = whole * 10 + (s[i] - '0');
  }
  if (i < s.size()) {
    ++i;
    for (; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9' || scale == 1) return false;
      scale /= 10;
      frac += (s[i] - '0') * scale;
    }
  }
  *out = whole * 1'000'000 + frac;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  LogStreamOptions so;
  so.client.host = "127.0.0.1";
  so.client.port = 7411;
  so.request.from_lsn = 0;
  AnalyticsOptions ao;
  std::string month_ends_path;
  bool follow = false;
  int64_t every_s = 60;
  uint64_t to = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (a == "--follow") {
      follow = true;
      continue;
    }
    if (i + 1 >= argc) return usage_error(std::string(a) + " needs a value, or is not an option");
    std::string v = argv[++i];
    if (a == "--month-ends") month_ends_path = v;
    else if (a == "--point-value") {
      size_t eq = v.find('=');
      int64_t micro = 0;
      if (eq == std::string::npos || !parse_micro(std::string_view(v).substr(eq + 1), &micro))
        return usage_error("--point-value needs PROGRAM=VALUE, VALUE in minor units with up to 6 decimals");
      ao.micro_minor_per_point[static_cast<uint32_t>(std::strtoul(v.substr(0, eq).c_str(), nullptr, 10))] = micro;
    } else if (a == "--active-days") ao.active_days = std::strtoll(v.c_str(), nullptr, 10);
    else if (a == "--to") to = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--every") every_s = std::strtoll(v.c_str(), nullptr, 10);
    else if (a == "--host") so.client.host = v;
    else if (a == "--port") so.client.port = static_cast<uint16_t>(std::strtoul(v.c_str(), nullptr, 10));
    else if (a == "--key") so.client.key_id = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    else return usage_error("unknown option " + std::string(a));
  }
  if (so.client.key_id == 0 && std::getenv("TALLY_KEY")) so.client.key_id = static_cast<uint32_t>(std::atoi(std::getenv("TALLY_KEY")));
  if (const char* s = std::getenv("TALLY_SECRET")) so.client.secret = s;
  if (so.client.key_id == 0 || so.client.secret.empty()) return usage_error("a key: --key ID (or TALLY_KEY) and TALLY_SECRET");

  FILE* month_ends = nullptr;
  if (!month_ends_path.empty() && !(month_ends = std::fopen(month_ends_path.c_str(), "w"))) {
    std::fprintf(stderr, "tally-analytics: %s: %s\n", month_ends_path.c_str(), std::strerror(errno));
    return 5;
  }
  ProgramAnalytics* self = nullptr;  // the snapshot callback needs the money figure
  ProgramAnalytics analytics(ao, [&](const ProgramFigures& f) {
    if (month_ends) std::fprintf(month_ends, "%s\n", figures_json(f, self->money(f)).c_str());
  });
  self = &analytics;
  LogStream st;
  if (net::ClientError e = st.open(so)) {
    std::fprintf(stderr, "tally-analytics: %s:%u: %s\n", so.client.host.c_str(), so.client.port, e.message.c_str());
    return 3;
  }
  if (st.reply().start_lsn > 1) {
    std::fprintf(stderr,
                 "tally-analytics: the server's log starts at LSN %" PRIu64
                 " (the rest was trimmed): figures from the stream alone would be incomplete. Keep a consumer "
                 "cursor (retention) on servers whose statistics are computed this way\n",
                 st.reply().start_lsn);
    return 3;
  }
  const uint64_t end = follow ? UINT64_MAX : (to != 0 ? to : st.reply().durable_lsn);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto print_current = [&] {
    for (const ProgramFigures& f : analytics.current()) std::printf("%s\n", figures_json(f, analytics.money(f)).c_str());
    std::fflush(stdout);
    if (month_ends) std::fflush(month_ends);
  };
  StreamBatch b;
  int64_t last_print = 0;
  for (int64_t ticks = 0; !g_stop && st.next_lsn() <= end; ++ticks) {
    bool got = false;
    if (net::ClientError e = st.next(&b, 100, &got)) {
      std::fprintf(stderr, "tally-analytics: %s\n", e.message.c_str());
      return 4;
    }
    for (uint32_t i = 0; got && i < b.records.size(); ++i) analytics.apply(b.records[i], RecordPos{b.header.lsn, i, b.header.epoch});
    if (follow && !got && ticks - last_print >= every_s * 10) {
      print_current();
      last_print = ticks;
    }
  }
  print_current();
  if (month_ends && std::fclose(month_ends) != 0) return 5;
  return 0;
}
