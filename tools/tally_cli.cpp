// tally: the command-line client of a Tally server (docs/protocol.md). Each run sends one event
// (enroll, earn, award, redeem, hold, capture, void, reverse, adjust, transfer, balance) or one
// query (history, lookup) through net::Client, which reconnects and resends on a broken
// connection (safe: every mutating event carries its reference, so a resend is a replay), and
// prints the answer: a short line or a small table for people, JSON Lines with --json.
// The exit status says what happened (kUsageFooter). Nothing here throws on purpose; main()
// catches whatever the standard library might.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "net/client.h"
#include "net/scram.h"
#include "tools/program_config.h"

namespace {

using namespace tally;

// Exit statuses.
constexpr int kExitOk = 0;       // the result was ok (a replay of an ok included)
constexpr int kExitRefused = 1;  // the server answered with another result (or refused a query)
constexpr int kExitUsage = 2;    // bad arguments
constexpr int kExitConnect = 3;  // cannot connect or authenticate
constexpr int kExitServer = 4;   // another protocol or server error, or a timeout

constexpr uint32_t kHistoryLimitDefault = 20;

// One command: how it is written, what it takes, what it does.
struct Command {
  std::string_view name;
  EventKind kind;      // kInvalid: a query (history, lookup)
  size_t positionals;  // exactly this many
  std::string_view synopsis;
  std::vector<std::string_view> options;  // every one takes a value
  std::string_view about;                 // lines separated by '\n'
  std::string_view example;
};

const std::vector<Command>& commands() {
  static const std::vector<Command> kCommands = {
      {"enroll",
       EventKind::kEnroll,
       1,
       "enroll ACCOUNT [--ref ID]",
       {"--ref", "--store", "--terminal", "--at"},
       "Enrol a member: creates the account with the program's sign-up bonus.\n"
       "--ref defaults to enroll:ACCOUNT, so running it again is a replay.",
       "tally enroll 42"},
      {"earn",
       EventKind::kEarn,
       2,
       "earn ACCOUNT AMOUNT --order ID [--store N] [--terminal N] [--currency CODE] [--at TIME]",
       {"--order", "--store", "--terminal", "--currency", "--at"},
       "Credit points for a purchase of AMOUNT: money in the program's currency, a decimal\n"
       "like 12.50 (at most 2 decimals, converted exactly to cents). An order ID is credited\n"
       "once, ever: the same command again is a replay, another event with it duplicate_order.",
       "tally earn 42 12.50 --order till7-000123 --store 7"},
      {"award",
       EventKind::kAward,
       2,
       "award ACCOUNT ACTION --ref ID",
       {"--ref", "--store", "--terminal", "--at"},
       "Credit the program's points for an action: review, referral, birthday, social, custom.",
       "tally award 42 review --ref review-42-2026-01"},
      {"redeem",
       EventKind::kRedeem,
       2,
       "redeem ACCOUNT POINTS --ref ID",
       {"--ref", "--store", "--terminal", "--at"},
       "Spend POINTS of the member's available points.",
       "tally redeem 42 100 --ref reward-555"},
      {"hold",
       EventKind::kHold,
       2,
       "hold ACCOUNT POINTS --ref HOLD_ID",
       {"--ref", "--store", "--terminal", "--at"},
       "Reserve POINTS at checkout (available -> held) under HOLD_ID; capture or void it\n"
       "before the program's hold timeout (default 30 minutes), or it expires.",
       "tally hold 42 100 --ref basket-9"},
      {"capture",
       EventKind::kCapture,
       1,
       "capture ACCOUNT --hold HOLD_ID [--points N] --ref ID",
       {"--hold", "--points", "--ref", "--store", "--terminal", "--at"},
       "Settle a hold: N points (default: the whole hold) are redeemed, the rest returns.",
       "tally capture 42 --hold basket-9 --points 80 --ref basket-9-paid"},
      {"void",
       EventKind::kVoid,
       1,
       "void ACCOUNT --hold HOLD_ID --ref ID",
       {"--hold", "--ref", "--store", "--terminal", "--at"},
       "Release a hold: all its points return to available.",
       "tally void 42 --hold basket-9 --ref basket-9-cancelled"},
      {"reverse",
       EventKind::kReverse,
       1,
       "reverse ACCOUNT --order ORDER_ID [--amount MONEY] --ref ID",
       {"--order", "--amount", "--ref", "--currency", "--store", "--terminal", "--at"},
       "Refund MONEY of an earned order (default: all that is left): claws back its points\n"
       "pro rata, even below zero if the member has spent them.",
       "tally reverse 42 --order till7-000123 --amount 5.00 --ref refund-77"},
      {"adjust",
       EventKind::kAdjust,
       2,
       "adjust ACCOUNT POINTS --reason CODE --ref ID",
       {"--reason", "--ref", "--store", "--terminal", "--at"},
       "Operator correction: add POINTS (or remove them: a negative number); CODE is your\n"
       "reason code (1-65535), kept in the log with the key that made it. Operator keys only.",
       "tally adjust 42 -25 --reason 3 --ref ticket-1234"},
      {"transfer",
       EventKind::kTransfer,
       3,
       "transfer FROM TO POINTS --ref ID",
       {"--ref", "--store", "--terminal", "--at"},
       "Move POINTS from member FROM to member TO (who is credited right after; if TO is not\n"
       "a member, the points come back to FROM).",
       "tally transfer 42 43 50 --ref gift-42-43-1"},
      {"membership",
       EventKind::kMembership,
       1,
       "membership ACCOUNT [--periods N] --ref ID",
       {"--periods", "--ref", "--store", "--terminal", "--at"},
       "Buy or renew the member's paid membership: N periods (default 1) of the program's\n"
       "membership days, from the day after the one it covers now (or from today). While it\n"
       "covers a purchase's day, the purchase earns the membership multiplier too.",
       "tally membership 42 --ref sub-42-2027"},
      {"balance",
       EventKind::kBalance,
       1,
       "balance ACCOUNT",
       {},
       "The member's points: available, held, lifetime earned and redeemed, tier.",
       "tally balance 42"},
      {"statement",
       EventKind::kInvalid,
       1,
       "statement ACCOUNT",
       {},
       "The member's points as of now, lot by lot: what is pending and until when, what is\n"
       "spendable and the day it expires (\"120 points expire on 2027-01-31\"), and when\n"
       "everything lapses without activity. Days are the program's local days.",
       "tally statement 42"},
      {"history",
       EventKind::kInvalid,
       1,
       "history ACCOUNT [--limit N] [--before LSN:INDEX]",
       {"--limit", "--before"},
       "A page of the member's statement, newest first: N entries (default 20, at most 10000)\n"
       "before log position LSN:INDEX. When there is more, the last line gives the --before\n"
       "of the next page.",
       "tally history 42 --limit 10"},
      {"lookup",
       EventKind::kInvalid,
       1,
       "lookup ORDER_ID   (or: lookup --hex REF)",
       {"--hex"},
       "What happened to an order (or a hold, or any ID): every effect whose reference or\n"
       "target it is, oldest first: the decision, retries, duplicates, refunds. --hex takes\n"
       "the 32 hex digits (hi then lo) that --json and tally-admin dump print.",
       "tally lookup till7-000123"},
      {"stats",
       EventKind::kInvalid,
       0,
       "stats",
       {},
       "The key's program's totals: points issued, redeemed, clawed back, adjusted and in\n"
       "transit, members, duplicate orders refused, retries replayed, events; then the\n"
       "server's log since it started: durable LSN, commits, records per commit, commit time.",
       "tally stats"},
      {"info",
       EventKind::kInvalid,
       0,
       "info",
       {},
       "What the server is: role=primary or role=follower (then primary=HOST:PORT, whom it\n"
       "follows, and whether it is connected), its epoch and durable LSN; a semi-synchronous\n"
       "primary also its followers and the LSN they have (docs/replication.md).",
       "tally info"},
  };
  return kCommands;
}

const Command* find_command(std::string_view name) {
  for (const Command& c : commands())
    if (c.name == name) return &c;
  return nullptr;
}

constexpr const char* kUsageHeader = R"(Usage: tally [global options] COMMAND [arguments]
       tally help COMMAND    (or: tally COMMAND --help)

Sends one event or query to a Tally server (docs/protocol.md) and prints its answer. Running
the same command line again is safe: the server answers it as a replay of the first, never as
a second credit. IDs (orders, holds, --ref) are your strings: each maps to a 128-bit reference
(XXH3-128), scoped by program.

Commands:
)";

constexpr const char* kUsageFooter = R"(
Every event command also takes --store N and --terminal N (for settlement and fraud
analysis) and --at TIME: when it happened at the till, ISO 8601 (2026-01-15T10:30:00Z, an
offset like +01:00, or a date; UTC when no zone is given) or ms since the epoch; default:
when the server receives it. A retry must repeat the same --at to be a replay.
--currency CODE (earn, reverse): ISO 4217, EUR or 978; default: the program's. AMOUNT and
MONEY are read with 2 decimals whatever the currency.

Global options (before or after the command):
  --host H         server address (default 127.0.0.1)
  --port N         server port (default 7411)
  --key ID         API key id (default: $TALLY_KEY)
  --secret S       the key's secret (default: $TALLY_SECRET). A secret on the command line
                   is visible to other users in `ps` and lands in your shell history: prefer
                   the environment variable.
  --program P      the program to act in (default: the one the key is bound to)
  --json           JSON Lines on stdout: one object per result or statement entry, stable
                   field names, flags as booleans, references as 32 hex digits (hi then lo)
  --timeout MS     wait at most MS for the connection and for each reply (defaults 5000 and
                   30000); a reply that does not come in time is asked again, on a new
                   connection, up to 5 attempts in all
  --tls            speak TLS (a server with a [tls] table accepts nothing else)
  --tls-ca FILE    with --tls: the CA certificate(s) that signed the server's (PEM; default:
                   the system's trust store)
  --tls-name NAME  with --tls: the name the server's certificate must carry (default: --host)
  -h, --help       this text

Exit status:
  0  the result was ok (a replay of an earlier ok included); a query was answered
  1  the server answered with another result (insufficient_points, duplicate_order,
     forbidden, ...), or refused the query
  2  usage error: bad or missing arguments
  3  cannot connect or authenticate
  4  another protocol or server error, or a timeout
Messages for people go to stderr; results to stdout.

Try it: `tools/quickstart run` starts tallyd on its embedded default (127.0.0.1:7411,
program 1 in EUR), with two demo keys: 1 (pos), secret demo-pos-secret, and 2 (operator),
secret demo-operator-secret. In another terminal:
  export TALLY_KEY=1 TALLY_SECRET=demo-pos-secret
  tally enroll 42 && tally earn 42 12.50 --order demo-1 && tally balance 42
  TALLY_KEY=2 TALLY_SECRET=demo-operator-secret tally adjust 42 10 --reason 1 --ref fix-1
)";

void print_command_entry(const Command& c, FILE* out, bool synopsis = true) {
  if (synopsis)
    std::fprintf(out, "  %.*s\n", static_cast<int>(c.synopsis.size()), c.synopsis.data());
  std::string_view about = c.about;
  while (!about.empty()) {
    size_t nl = about.find('\n');
    std::string_view line = about.substr(0, nl);
    std::fprintf(out, "      %.*s\n", static_cast<int>(line.size()), line.data());
    about = nl == std::string_view::npos ? std::string_view() : about.substr(nl + 1);
  }
  std::fprintf(out, "      e.g. %.*s\n", static_cast<int>(c.example.size()), c.example.data());
}

void print_usage() {
  std::fputs(kUsageHeader, stdout);
  for (const Command& c : commands()) print_command_entry(c, stdout);
  std::fputs(kUsageFooter, stdout);
}

void print_command_help(const Command& c) {
  std::printf("Usage: tally [global options] %.*s\n\n", static_cast<int>(c.synopsis.size()),
              c.synopsis.data());
  print_command_entry(c, stdout, false);
  bool event = c.kind != EventKind::kInvalid && c.kind != EventKind::kBalance;
  if (event && c.synopsis.find("--store") == std::string_view::npos)
    std::printf("\n  Also takes --store N, --terminal N, --at TIME (see tally --help).\n");
  std::printf("\n  Global options, exit status and demo keys: tally --help\n");
}

int usage_error(const std::string& what, const Command* c = nullptr) {
  if (c != nullptr)
    std::fprintf(stderr, "tally: %s (see tally help %.*s)\n", what.c_str(),
                 static_cast<int>(c->name.size()), c->name.data());
  else
    std::fprintf(stderr, "tally: %s (see tally --help)\n", what.c_str());
  return kExitUsage;
}

// ---- Parsing values: exact, no locale, no floating point ---------------------------------------

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A decimal number in [lo, hi], digits only.
std::optional<uint64_t> parse_unsigned(std::string_view s, uint64_t lo, uint64_t hi) {
  if (!all_digits(s)) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

// A signed decimal: optional + or -, then digits.
std::optional<int64_t> parse_signed(std::string_view s) {
  bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  std::optional<uint64_t> v =
      parse_unsigned(s, 0, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (!v) return std::nullopt;
  return negative ? -static_cast<int64_t>(*v) : static_cast<int64_t>(*v);
}

// Money as decimal text ("12.50", "12.5", "12", "0.99") to minor units (cents): exact.
std::optional<int64_t> parse_money(std::string_view s) {
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (dot != std::string_view::npos && (frac.empty() || frac.size() > 2 || !all_digits(frac)))
    return std::nullopt;
  constexpr uint64_t kWholeMax =
      (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - 99) / 100;
  std::optional<uint64_t> units = parse_unsigned(whole, 0, kWholeMax);
  if (!units) return std::nullopt;
  int64_t cents = 0;
  if (frac.size() == 1) cents = (frac[0] - '0') * 10;
  if (frac.size() == 2) cents = (frac[0] - '0') * 10 + (frac[1] - '0');
  return static_cast<int64_t>(*units) * 100 + cents;
}

std::string format_money(int64_t minor) {
  char buf[32];
  uint64_t m = minor < 0 ? 0 - static_cast<uint64_t>(minor) : static_cast<uint64_t>(minor);
  std::snprintf(buf, sizeof buf, "%s%" PRIu64 ".%02" PRIu64, minor < 0 ? "-" : "", m / 100,
                m % 100);
  return buf;
}

// ISO 4217: numeric, or the alphabetic code of a few currencies with 2 decimals (the only kind
// AMOUNT's conversion supports).
std::optional<uint16_t> parse_currency(std::string_view s) {
  static constexpr std::pair<std::string_view, uint16_t> kCodes[] = {
      {"EUR", 978}, {"USD", 840}, {"GBP", 826}, {"CHF", 756}, {"SEK", 752}, {"NOK", 578},
      {"DKK", 208}, {"PLN", 985}, {"CZK", 203}, {"CAD", 124}, {"AUD", 36},  {"NZD", 554}};
  for (const auto& [alpha, numeric] : kCodes)
    if (alpha == s) return numeric;
  if (std::optional<uint64_t> v = parse_unsigned(s, 1, 999)) return static_cast<uint16_t>(*v);
  return std::nullopt;
}

// Parses exactly `n` digits at `*s`, advancing it.
bool take_digits(std::string_view* s, size_t n, int* out) {
  if (s->size() < n || !all_digits(s->substr(0, n))) return false;
  *out = 0;
  for (size_t i = 0; i < n; ++i) *out = *out * 10 + ((*s)[i] - '0');
  s->remove_prefix(n);
  return true;
}

bool take_char(std::string_view* s, char c) {
  if (s->empty() || s->front() != c) return false;
  s->remove_prefix(1);
  return true;
}

// --at: ms since the epoch, or ISO 8601: YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM].
std::optional<int64_t> parse_time(std::string_view s) {
  if (all_digits(s)) {
    std::optional<uint64_t> ms =
        parse_unsigned(s, 1, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    if (!ms) return std::nullopt;
    return static_cast<int64_t>(*ms);
  }
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0;
  if (!take_digits(&s, 4, &y) || !take_char(&s, '-') || !take_digits(&s, 2, &mo) ||
      !take_char(&s, '-') || !take_digits(&s, 2, &d))
    return std::nullopt;
  using namespace std::chrono;
  year_month_day date{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!date.ok()) return std::nullopt;
  if (take_char(&s, 'T') || take_char(&s, ' ')) {
    if (!take_digits(&s, 2, &h) || !take_char(&s, ':') || !take_digits(&s, 2, &mi))
      return std::nullopt;
    if (take_char(&s, ':')) {
      if (!take_digits(&s, 2, &sec)) return std::nullopt;
      if (take_char(&s, '.')) {
        size_t n = 0;
        while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
        if (n == 0) return std::nullopt;
        for (size_t i = 0; i < 3; ++i) ms = ms * 10 + (i < n ? s[i] - '0' : 0);  // truncated
        s.remove_prefix(n);
      }
    }
    if (h > 23 || mi > 59 || sec > 59) return std::nullopt;
  }
  int offset_minutes = 0;
  if (!s.empty() && !take_char(&s, 'Z')) {
    int sign = s.front() == '+' ? 1 : s.front() == '-' ? -1 : 0;
    if (sign == 0) return std::nullopt;
    s.remove_prefix(1);
    int oh = 0, om = 0;
    if (!take_digits(&s, 2, &oh)) return std::nullopt;
    take_char(&s, ':');
    if (!take_digits(&s, 2, &om) || oh > 23 || om > 59) return std::nullopt;
    offset_minutes = sign * (oh * 60 + om);
  }
  if (!s.empty()) return std::nullopt;
  int64_t days = sys_days{date}.time_since_epoch().count();
  int64_t t = ((days * 24 + h) * 60 + mi - offset_minutes) * 60'000 + int64_t{sec} * 1000 + ms;
  if (t <= 0) return std::nullopt;  // 0 means "now" on the wire
  return t;
}

std::string format_time(int64_t ms) {
  using namespace std::chrono;
  int64_t days = ms >= 0 ? ms / kMsPerDay : (ms - kMsPerDay + 1) / kMsPerDay;
  int64_t in_day = ms - days * kMsPerDay;
  year_month_day d{sys_days{std::chrono::days{days}}};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()),
                static_cast<int>(in_day / 3'600'000), static_cast<int>(in_day / 60'000 % 60),
                static_cast<int>(in_day / 1000 % 60), static_cast<int>(in_day % 1000));
  return buf;
}

std::string hex(const Ref128& r) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, r.hi, r.lo);
  return buf;
}

std::optional<Ref128> parse_hex_ref(std::string_view s) {
  if (s.size() != 32 || s.find_first_not_of("0123456789abcdefABCDEF") != std::string_view::npos)
    return std::nullopt;
  Ref128 r;
  std::from_chars(s.data(), s.data() + 16, r.hi, 16);
  std::from_chars(s.data() + 16, s.data() + 32, r.lo, 16);
  if (r.empty()) return std::nullopt;
  return r;
}

// ---- Results for people -------------------------------------------------------------------------

// A short explanation of every result (docs/engine.md).
std::string_view explain(Result r) {
  static constexpr std::string_view kWhy[kResultCount] = {
      "done",
      "the program is not configured on this server",
      "the server does not take this kind of event",
      "account 0 is not a member ID",
      "the event lacks its reference, or the target it acts on",
      "the amount is zero, negative, out of range, or more than the hold or order has left",
      "an unknown action, one the program does not award, or a reason code of 0",
      "the amount is not in the program's currency",
      "a transfer to the sender itself",
      "the business time (--at) is too far in the future",
      "the business time (--at) is older than the program's dedup window: it cannot be checked",
      "no such member in this program",
      "the member is already enrolled",
      "the member is over the program's events-per-minute limit: retry in a minute",
      "fewer points than the program's minimum redemption",
      "the member has fewer available points than that",
      "the member has reached the program's daily points cap",
      "the program's limit for this action is reached for now (e.g. one birthday a year)",
      "no such hold on this account",
      "the hold timed out; its points went back to available",
      "the hold was already captured or voided",
      "no such earn on this account (or it is too old to be remembered)",
      "that order is not an earn",
      "the order was already refunded in full",
      "the order is older than the program's refund window",
      "the result would exceed the largest balance allowed",
      "the order ID was already used by a different event",
      "a pre-sized table of the server (accounts, orders, references, holds) is full",
      "this key may not do that: another program, or a role without this operation",
      "the program has too many events in flight: retry later",
      "the server's durable log failed; nothing was recorded: retry once it has restarted",
      "this server is a follower and takes no writes: send them to its primary",
  };
  auto i = static_cast<uint8_t>(r);
  return i < kResultCount ? kWhy[i] : std::string_view("unknown result");
}

std::string str(std::string_view s) {
  return std::string(s);
}

// "+12", "-12", "12" (sign 0), or, for adjust (sign '~'), the number with its own sign.
// What the key's program counts (the session info): points, or for a cashback program money in
// its currency. Human output reads amounts in it; JSON output keeps the integers (minor units).
struct Units {
  bool cashback = false;
  int digits = 2;
  std::string code;
};
Units g_units;

void set_units(const net::SessionInfo& s) {
  g_units = {};
  if (s.unit != Unit::kCashback) return;
  g_units.cashback = true;
  if (const CurrencyInfo* c = find_currency_numeric(s.currency)) {
    g_units.digits = c->minor_digits;
    g_units.code = std::string(c->code);
  } else {
    g_units.digits = 0;
    g_units.code = "minor units of currency " + std::to_string(s.currency);
  }
}

// "150" (points), or "1.50 EUR" (cashback).
std::string amount_text(int64_t v) {
  if (!g_units.cashback) return std::to_string(v);
  const uint64_t mag = v < 0 ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  uint64_t scale = 1;
  for (int i = 0; i < g_units.digits; ++i) scale *= 10;
  std::string frac = std::to_string(mag % scale + scale).substr(1);
  return (v < 0 ? "-" : "") + std::to_string(mag / scale) + (g_units.digits > 0 ? "." + frac : "") + " " + g_units.code;
}
// " points", or nothing for cashback (amount_text names the currency).
const char* unit_word() { return g_units.cashback ? "" : " points"; }

std::string with_sign(char sign, int64_t points) {
  if (sign == '~') sign = points > 0 ? '+' : 0;
  return sign == 0 ? amount_text(points) : std::string(1, sign) + amount_text(points);
}

// How an ok event of `kind` changes the member's points (available + held): '+', '-', or 0
// when points only move between available and held ('h' held, 'f' freed); '~' adjust.
char direction(EventKind kind) {
  switch (kind) {
    case EventKind::kRedeem:
    case EventKind::kCapture:
    case EventKind::kReverse:
    case EventKind::kTransfer:
    case EventKind::kExpire:
      return '-';
    case EventKind::kHold:
      return 'h';
    case EventKind::kVoid:
    case EventKind::kHoldExpire:
      return 'f';
    case EventKind::kAdjust:
      return '~';
    default:
      return '+';  // enroll, earn, award, transfer_in, transfer_bounce
  }
}

// What an ok event did to the member's points, for people.
std::string movement(EventKind kind, int64_t points, uint64_t counterparty) {
  char d = direction(kind);
  std::string s = with_sign(d == 'h' || d == 'f' ? 0 : d, points);
  s += g_units.cashback ? " cashback" : " points";
  if (d == 'h') s += " held";
  if (d == 'f') s += " released";
  if (kind == EventKind::kCapture) s += " (captured)";
  if (kind == EventKind::kReverse) s += " clawed back";
  if (kind == EventKind::kExpire) s += " expired";
  if (kind == EventKind::kMature) s += " no longer pending";
  if (kind == EventKind::kTier) s += " (tier change)";
  if (kind == EventKind::kStampCard) s += " (stamp card completed)";
  if (kind == EventKind::kBonus) s += " (purchase bonus)";
  if (kind == EventKind::kTransfer) s += " to " + std::to_string(counterparty);
  return s;
}

// The same in a table cell.
std::string points_cell(EventKind kind, Result result, int64_t points) {
  if (result != Result::kOk) return std::to_string(points);
  char d = direction(kind);
  std::string s = with_sign(d == 'h' || d == 'f' ? 0 : d, points);
  if (d == 'h') s += " held";
  if (d == 'f') s += " freed";
  return s;
}

const char* json_bool(bool b) {
  return b ? "true" : "false";
}

std::string json_ref(const Ref128& r) {
  if (r.empty()) return "null";
  std::string s = "\"";
  s += hex(r);
  s += '"';
  return s;
}

std::string json_flags(uint8_t flags) {
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "\"replay\":%s,\"claimed\":%s,\"capped\":%s,\"bounced\":%s,\"no_account\":%s,\"stamped\":%s,"
                "\"campaign\":%s",
                json_bool(flags & kEffectReplay), json_bool(flags & kEffectClaimed),
                json_bool(flags & kEffectCapped), json_bool(flags & kEffectBounced),
                json_bool(flags & kEffectNoAccount), json_bool(flags & kEffectStamped),
                json_bool(flags & kEffectCampaign));
  return buf;
}

void print_statement(uint64_t account, const net::StatementReply& r, bool json) {
  const Statement& s = r.statement;
  auto day = [](uint16_t d) { return d == kNeverDay ? std::string("never") : format_day(d); };
  if (r.result != Result::kOk) {
    if (json) {
      std::printf("{\"account\":%" PRIu64 ",\"result\":\"%s\"}\n", account, str(to_string(r.result)).c_str());
    } else {
      std::printf("statement: %s (account %" PRIu64 ")\n", str(to_string(r.result)).c_str(), account);
    }
    return;
  }
  if (json) {
    std::string lots;
    for (const LotLine& l : s.lots) {
      if (!lots.empty()) lots += ',';
      lots += "{\"points\":" + std::to_string(l.points);
      if (l.mature_day != 0) lots += ",\"pending_until\":\"" + format_day(l.mature_day) + "\"";
      lots += l.expiry_day == kNeverDay ? std::string(",\"expires\":null") : ",\"expires\":\"" + format_day(l.expiry_day) + "\"";
      lots += "}";
    }
    std::printf("{\"account\":%" PRIu64 ",\"result\":\"ok\",\"available\":%" PRId64 ",\"held\":%" PRId64
                ",\"pending\":%" PRId64 ",\"lifetime_earned\":%" PRId64 ",\"lifetime_redeemed\":%" PRId64
                ",\"qualifying\":%" PRId64 ",\"tier\":%u,\"tier_until\":%s,\"as_of_ms\":%" PRId64
                ",\"member_until\":%s,\"last_activity\":\"%s\",\"lapses_after\":%s,"
                "\"stamps\":[%d,%d,%d,%d],\"truncated\":%s,\"lots\":[%s]}\n",
                account, s.state.available, s.state.held, s.state.pending, s.state.lifetime_earned,
                s.state.lifetime_redeemed, s.state.qualifying, s.state.tier,
                s.tier_until_day != 0 ? ("\"" + format_day(s.tier_until_day) + "\"").c_str() : "null", s.as_of_ms,
                s.state.member_until != 0 ? ("\"" + format_day(s.state.member_until) + "\"").c_str() : "null",
                format_day(s.last_activity_day).c_str(),
                s.inactivity_lapse_day != 0 ? ("\"" + format_day(s.inactivity_lapse_day) + "\"").c_str() : "null",
                s.stamps[0], s.stamps[1], s.stamps[2], s.stamps[3], r.truncated ? "true" : "false", lots.c_str());
    return;
  }
  const char* w = unit_word();
  std::printf("account %" PRIu64 ": %s%s available, %s pending, %s held; tier %u (as of %s)\n", account,
              amount_text(s.state.available).c_str(), w, amount_text(s.state.pending).c_str(),
              amount_text(s.state.held).c_str(), s.state.tier, format_time(s.as_of_ms).c_str());
  for (const LotLine& l : s.lots) {
    if (l.mature_day != 0) {
      std::printf("  %s%s pending until %s, then spendable %s\n", amount_text(l.points).c_str(), w,
                  format_day(l.mature_day).c_str(),
                  l.expiry_day == kNeverDay ? "with no expiry" : ("until " + day(l.expiry_day)).c_str());
    } else if (l.expiry_day == kNeverDay) {
      std::printf("  %s%s never expire\n", amount_text(l.points).c_str(), w);
    } else {
      std::printf("  %s%s expire on %s\n", amount_text(l.points).c_str(), w, format_day(l.expiry_day).c_str());
    }
  }
  if (r.truncated) std::printf("  (more lots: the statement shows the first %u)\n", net::kLotsPerStatementMax);
  if (s.state.available < 0)
    std::printf("  %s%s owed (a refund of %s already spent)\n", amount_text(-s.state.available).c_str(), w,
                g_units.cashback ? "cashback" : "points");
  for (size_t c = 0; c < kStampCardsMax; ++c)
    if (s.stamps[c] != 0) std::printf("stamp card %zu: %d stamps%s\n", c + 1, s.stamps[c], s.stamps[c] < 0 ? " owed" : "");
  if (s.tier_until_day != 0)
    std::printf("tier %u held through %s unless more points qualify (%" PRId64 " qualifying now)\n", s.state.tier,
                format_day(s.tier_until_day).c_str(), s.state.qualifying);
  if (s.state.member_until != 0)
    std::printf("paid membership %s %s\n", (s.state.flags & kAccountPaidMember) ? "through" : "lapsed after",
                format_day(s.state.member_until).c_str());
  if (s.inactivity_lapse_day != 0)
    std::printf("every point lapses after %s without activity (last activity %s)\n",
                format_day(s.inactivity_lapse_day).c_str(), format_day(s.last_activity_day).c_str());
}

void print_result(const Command& c, const Event& e, const net::WireResult& r, bool json) {
  if (json) {
    std::printf(
        "{\"command\":\"%s\",\"account\":%" PRIu64
        ",\"ref\":%s,\"result\":\"%s\",%s,"
        "\"points\":%" PRId64 ",\"available\":%" PRId64 ",\"held\":%" PRId64
        ",\"lifetime_earned\":%" PRId64 ",\"lifetime_redeemed\":%" PRId64 ",\"qualifying\":%" PRId64
        ",\"tier\":%u,\"time_ms\":%" PRId64 ",\"shard\":%u,\"seq\":%" PRIu64 "}\n",
        str(c.name).c_str(), e.account, json_ref(e.ref).c_str(), str(to_string(r.result)).c_str(),
        json_flags(r.flags).c_str(), r.points, r.available, r.held, r.lifetime_earned,
        r.lifetime_redeemed, r.qualifying, r.tier, r.time_ms, r.shard, r.seq);
    return;
  }
  const char* replay = (r.flags & kEffectReplay) ? " (replay of an earlier identical request)" : "";
  if (r.result != Result::kOk) {
    std::string state;
    if (r.result == Result::kInsufficientPoints && !(r.flags & kEffectNoAccount))
      state = "; available " + amount_text(r.available) + ", held " + amount_text(r.held);
    std::printf("%s: %s (%s)%s%s\n", str(c.name).c_str(), str(to_string(r.result)).c_str(),
                str(explain(r.result)).c_str(), state.c_str(), replay);
    return;
  }
  if (c.kind == EventKind::kBalance) {
    std::printf("balance: account %" PRIu64 ": available %s, held %s, tier %u; lifetime earned %s, redeemed %s; "
                "qualifying %s\n",
                e.account, amount_text(r.available).c_str(), amount_text(r.held).c_str(), r.tier,
                amount_text(r.lifetime_earned).c_str(), amount_text(r.lifetime_redeemed).c_str(),
                amount_text(r.qualifying).c_str());
    return;
  }
  std::printf("%s: ok, %s%s; available %s, held %s, tier %u%s\n", str(c.name).c_str(),
              movement(c.kind, r.points, e.counterparty).c_str(),
              (r.flags & kEffectCapped) ? " (capped by the program's limits)" : "", amount_text(r.available).c_str(),
              amount_text(r.held).c_str(), r.tier, replay);
}

void print_entry_json(const HistoryEntry& h) {
  std::printf("{\"lsn\":%" PRIu64 ",\"index\":%u,\"program\":%u,\"account\":%" PRIu64
              ",\"kind\":\"%s\",\"result\":\"%s\",%s,\"tier\":%u,\"store\":%u,\"ref\":%s,"
              "\"target\":%s,\"amount\":%" PRId64 ",\"points\":%" PRId64 ",\"time_ms\":%" PRId64
              ",\"available\":%" PRId64 ",\"held\":%" PRId64 ",\"counterparty\":%" PRIu64 "}\n",
              h.at.lsn, h.at.index, h.program, h.account, str(to_string(h.kind)).c_str(),
              str(to_string(h.result)).c_str(), json_flags(h.flags).c_str(), h.tier, h.store,
              json_ref(h.ref).c_str(), json_ref(h.target).c_str(), h.amount, h.points, h.time_ms,
              h.available, h.held, h.counterparty);
}

void print_stats(uint32_t program, const net::StatsRecord& st, bool json) {
  const ProgramStats& p = st.program;
  const LogSummary& l = st.log;
  if (json) {
    std::printf("{\"program\":%u,\"issued\":%" PRId64 ",\"redeemed\":%" PRId64 ",\"expired\":%" PRId64
                ",\"clawed_back\":%" PRId64 ",\"adjusted\":%" PRId64 ",\"in_transit\":%" PRId64
                ",\"outstanding\":%" PRId64 ",\"members\":%" PRIu64 ",\"duplicates\":%" PRIu64
                ",\"replays\":%" PRIu64 ",\"events\":%" PRIu64 ",\"durable_lsn\":%" PRIu64
                ",\"commits\":%" PRIu64 ",\"log_records\":%" PRIu64 ",\"log_bytes\":%" PRIu64
                ",\"records_per_commit\":{\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64
                "},\"commit_us\":{\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 "}}\n",
                program, p.issued, p.redeemed, p.expired, p.clawed_back, p.adjusted, p.in_transit(),
                p.expected_balances(), p.members, p.duplicates, p.replays, p.events, l.durable_lsn, l.commits,
                l.records, l.bytes, l.records_per_commit_p50, l.records_per_commit_p99, l.records_per_commit_max,
                l.commit_us_p50, l.commit_us_p99, l.commit_us_max);
    return;
  }
  std::printf("program %u\n", program);
  std::printf("  points     issued %" PRId64 "  redeemed %" PRId64 "  expired %" PRId64 "  clawed back %" PRId64
              "  adjusted %" PRId64 "  in transit %" PRId64 "\n",
              p.issued, p.redeemed, p.expired, p.clawed_back, p.adjusted, p.in_transit());
  std::printf("  outstanding %" PRId64 " points (what the members hold, available + held)\n", p.expected_balances());
  if (p.issued > 0)
    std::printf("  redemption rate %.2f%% (redeemed / issued)\n", 100.0 * static_cast<double>(p.redeemed) / static_cast<double>(p.issued));
  std::printf("  members    %" PRIu64 "\n", p.members);
  std::printf("  events     %" PRIu64 "  (%" PRIu64 " duplicate orders refused, %" PRIu64 " retries replayed)\n",
              p.events, p.duplicates, p.replays);
  std::printf("server log since start\n");
  std::printf("  durable LSN %" PRIu64 "  commits %" PRIu64 "  records %" PRIu64 "  bytes %" PRIu64 "\n",
              l.durable_lsn, l.commits, l.records, l.bytes);
  std::printf("  records per commit p50 %" PRIu64 "  p99 %" PRIu64 "  max %" PRIu64 "\n", l.records_per_commit_p50,
              l.records_per_commit_p99, l.records_per_commit_max);
  std::printf("  commit (write + fsync) p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", l.commit_us_p50 / 1000.0,
              l.commit_us_p99 / 1000.0, l.commit_us_max / 1000.0);
}

void print_entries_table(const std::vector<HistoryEntry>& entries, size_t count, bool account) {
  std::printf("%-12s %-24s %s%-15s %-20s %9s %9s %6s %10s  %s\n", "LSN:INDEX", "TIME (UTC)",
              account ? "ACCOUNT    " : "", "KIND", "RESULT", "POINTS", "AVAILABLE", "HELD",
              "AMOUNT", "NOTE");
  for (size_t i = 0; i < count; ++i) {
    const HistoryEntry& h = entries[i];
    std::string pos = std::to_string(h.at.lsn) + ":" + std::to_string(h.at.index);
    std::string acc = account ? std::to_string(h.account) : "";
    if (account) acc.resize(std::max<size_t>(acc.size(), 10), ' '), acc += ' ';
    bool money = h.kind == EventKind::kEarn || h.kind == EventKind::kReverse;
    std::string amount = money ? format_money(h.amount) : std::to_string(h.amount);
    std::string note;
    auto add = [&note](const std::string& s) { note += (note.empty() ? "" : ", ") + s; };
    if (h.flags & kEffectReplay) add("replay");
    if (h.flags & kEffectCapped) add("capped");
    if (h.flags & kEffectBounced) add("bounced");
    if (h.kind == EventKind::kTransfer) add("to " + std::to_string(h.counterparty));
    if (h.kind == EventKind::kTransferIn || h.kind == EventKind::kTransferBounce)
      add("from " + std::to_string(h.counterparty));
    if (h.store != 0) add("store " + std::to_string(h.store));
    std::printf("%-12s %-24s %s%-15s %-20s %9s %9" PRId64 " %6" PRId64 " %10s  %s\n", pos.c_str(),
                format_time(h.time_ms).c_str(), acc.c_str(), str(to_string(h.kind)).c_str(),
                str(to_string(h.result)).c_str(), points_cell(h.kind, h.result, h.points).c_str(),
                h.available, h.held, amount.c_str(), note.c_str());
  }
}

// ---- Arguments ----------------------------------------------------------------------------------

struct Invocation {
  const Command* command = nullptr;
  std::vector<std::string> positionals;
  std::map<std::string, std::string, std::less<>> options;  // command options by name ("--ref")
  std::map<std::string, std::string, std::less<>> globals;  // global options by name
  bool json = false;
  bool tls = false;
};

constexpr std::string_view kGlobalOptions[] = {"--host",    "--port",    "--key",
                                               "--secret",  "--program", "--timeout",
                                               "--tls-ca",  "--tls-name"};

bool is_global(std::string_view name) {
  return std::find(std::begin(kGlobalOptions), std::end(kGlobalOptions), name) !=
         std::end(kGlobalOptions);
}

// An option, not a value: "--x", or "-x" that is not a negative number ("-25" is POINTS).
bool looks_like_option(std::string_view a) {
  return a.size() >= 2 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9');
}

// A request, built from the arguments before anything touches the network.
struct Request {
  Event event;  // events; program filled in once the session tells the key's
  bool history = false;
  bool lookup = false;
  bool statement = false;
  bool stats = false;
  bool info = false;
  uint32_t limit = kHistoryLimitDefault;
  LogPos before{UINT64_MAX, UINT32_MAX};
  Ref128 ref;  // lookup
  std::string lookup_name;
};

class Builder {
 public:
  explicit Builder(const Invocation& inv) : inv_(inv), c_(*inv.command) {}
  const std::string& error() const { return error_; }

  const std::string* option(std::string_view name) const {
    auto it = inv_.options.find(name);
    return it == inv_.options.end() ? nullptr : &it->second;
  }

  bool fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }

  bool account(size_t i, const char* what, uint64_t* out) {
    std::optional<uint64_t> v = parse_unsigned(inv_.positionals[i], 0, UINT64_MAX);
    if (!v)
      return fail(std::string(what) + " must be a member number, not '" + inv_.positionals[i] +
                  "'");
    *out = *v;
    return true;
  }

  // A required string ID, mapped to its reference.
  bool id(std::string_view name, std::string_view what, Ref128* out) {
    const std::string* v = option(name);
    if (v == nullptr) return fail(str(c_.name) + " needs " + str(name) + " " + str(what));
    if (v->empty()) return fail(str(name) + " needs a non-empty ID");
    *out = reference_from_string(*v);
    return true;
  }

  bool points(size_t i, int64_t* out) {
    std::optional<uint64_t> v = parse_unsigned(inv_.positionals[i], 0, INT64_MAX);
    if (!v)
      return fail("POINTS must be a whole number of points, not '" + inv_.positionals[i] + "'");
    *out = static_cast<int64_t>(*v);
    return true;
  }

  bool money(std::string_view text, int64_t* out) {
    std::optional<int64_t> v = parse_money(text);
    if (!v)
      return fail("bad amount '" + str(text) + "': expected money like 12.50 (at most 2 decimals)");
    *out = *v;
    return true;
  }

  bool u32_option(std::string_view name, uint32_t* out) {
    const std::string* v = option(name);
    if (v == nullptr) return true;
    std::optional<uint64_t> n = parse_unsigned(*v, 0, UINT32_MAX);
    if (!n) return fail("bad " + str(name) + " '" + *v + "': expected a number (0-4294967295)");
    *out = static_cast<uint32_t>(*n);
    return true;
  }

  bool build(Request* r) {
    Event& e = r->event;
    e.kind = c_.kind;
    if (c_.name == "history") return build_history(r);
    if (c_.name == "statement") return r->statement = true, account(0, "ACCOUNT", &r->event.account);
    if (c_.name == "lookup") return build_lookup(r);
    if (c_.name == "stats") return r->stats = true;
    if (c_.name == "info") return r->info = true;
    if (!account(0, c_.kind == EventKind::kTransfer ? "FROM" : "ACCOUNT", &e.account)) return false;
    const std::string* v = nullptr;
    switch (c_.kind) {
      case EventKind::kEnroll:
        if (option("--ref") == nullptr)
          e.ref = reference_from_string("enroll:" + std::to_string(e.account));
        else if (!id("--ref", "ID", &e.ref))
          return false;
        break;
      case EventKind::kEarn:
        if (!money(inv_.positionals[1], &e.amount) || !id("--order", "ID", &e.ref)) return false;
        break;
      case EventKind::kAward: {
        static constexpr std::string_view kActions[] = {"review", "referral", "birthday", "social",
                                                        "custom"};
        const std::string& a = inv_.positionals[1];
        auto it = std::find(std::begin(kActions), std::end(kActions), a);
        if (it == std::end(kActions))
          return fail("ACTION must be review, referral, birthday, social or custom, not '" + a +
                      "'");
        e.code = static_cast<uint16_t>(it - std::begin(kActions) + 1);  // ActionKind values
        if (!id("--ref", "ID", &e.ref)) return false;
        break;
      }
      case EventKind::kRedeem:
        if (!points(1, &e.amount) || !id("--ref", "ID", &e.ref)) return false;
        break;
      case EventKind::kHold:
        if (!points(1, &e.amount) || !id("--ref", "HOLD_ID", &e.ref)) return false;
        break;
      case EventKind::kCapture:
        if (!id("--hold", "HOLD_ID", &e.target)) return false;
        if ((v = option("--points")) != nullptr) {
          std::optional<uint64_t> n = parse_unsigned(*v, 0, INT64_MAX);
          if (!n) return fail("bad --points '" + *v + "': expected a whole number of points");
          e.amount = static_cast<int64_t>(*n);
        }
        if (!id("--ref", "ID", &e.ref)) return false;
        break;
      case EventKind::kVoid:
        if (!id("--hold", "HOLD_ID", &e.target) || !id("--ref", "ID", &e.ref)) return false;
        break;
      case EventKind::kReverse:
        if (!id("--order", "ORDER_ID", &e.target)) return false;
        if ((v = option("--amount")) != nullptr && !money(*v, &e.amount)) return false;
        if (!id("--ref", "ID", &e.ref)) return false;
        break;
      case EventKind::kAdjust: {
        std::optional<int64_t> n = parse_signed(inv_.positionals[1]);
        if (!n)
          return fail("POINTS must be a whole number, + or -, not '" + inv_.positionals[1] + "'");
        e.amount = *n;
        if ((v = option("--reason")) == nullptr) return fail("adjust needs --reason CODE");
        std::optional<uint64_t> code = parse_unsigned(*v, 0, UINT16_MAX);
        if (!code) return fail("bad --reason '" + *v + "': expected a reason code (1-65535)");
        e.code = static_cast<uint16_t>(*code);
        if (!id("--ref", "ID", &e.ref)) return false;
        break;
      }
      case EventKind::kTransfer:
        if (!account(1, "TO", &e.counterparty) || !points(2, &e.amount) ||
            !id("--ref", "ID", &e.ref))
          return false;
        break;
      case EventKind::kMembership:
        if ((v = option("--periods")) != nullptr) {
          std::optional<uint64_t> n = parse_unsigned(*v, 1, 100);
          if (!n) return fail("bad --periods '" + *v + "': expected 1-100");
          e.amount = static_cast<int64_t>(*n);
        }
        if (!id("--ref", "ID", &e.ref)) return false;
        break;
      default:  // balance
        break;
    }
    if ((v = option("--currency")) != nullptr) {
      std::optional<uint16_t> cur = parse_currency(*v);
      if (!cur) return fail("bad --currency '" + *v + "': expected an ISO 4217 code (EUR or 978)");
      e.currency = *cur;
    }
    if ((v = option("--at")) != nullptr) {
      std::optional<int64_t> t = parse_time(*v);
      if (!t) return fail("bad --at '" + *v + "': expected ISO 8601 (2026-01-15T10:30:00Z) or ms");
      e.business_time_ms = *t;
    }
    return u32_option("--store", &e.store) && u32_option("--terminal", &e.terminal);
  }

 private:
  bool build_history(Request* r) {
    r->history = true;
    if (!account(0, "ACCOUNT", &r->event.account)) return false;
    if (const std::string* v = option("--limit")) {
      std::optional<uint64_t> n = parse_unsigned(*v, 1, net::kEntriesPerReplyMax);
      if (!n) return fail("bad --limit '" + *v + "': expected 1-10000");
      r->limit = static_cast<uint32_t>(*n);
    }
    if (const std::string* v = option("--before")) {
      size_t colon = v->find(':');
      std::optional<uint64_t> lsn, index;
      if (colon != std::string::npos) {
        lsn = parse_unsigned(std::string_view(*v).substr(0, colon), 0, UINT64_MAX);
        index = parse_unsigned(std::string_view(*v).substr(colon + 1), 0, UINT32_MAX);
      }
      if (!lsn || !index) return fail("bad --before '" + *v + "': expected LSN:INDEX, as printed");
      r->before = LogPos{*lsn, static_cast<uint32_t>(*index)};
    }
    return true;
  }

  bool build_lookup(Request* r) {
    r->lookup = true;
    const std::string* h = option("--hex");
    if (h != nullptr && !inv_.positionals.empty())
      return fail("lookup takes an ORDER_ID or --hex REF, not both");
    if (h != nullptr) {
      std::optional<Ref128> ref = parse_hex_ref(*h);
      if (!ref) return fail("--hex needs 32 hex digits (hi then lo), not '" + *h + "'");
      r->ref = *ref;
      r->lookup_name = *h;
      return true;
    }
    if (inv_.positionals.empty()) return fail("lookup needs an ORDER_ID (or --hex REF)");
    if (inv_.positionals[0].empty()) return fail("ORDER_ID must not be empty");
    r->ref = reference_from_string(inv_.positionals[0]);
    r->lookup_name = inv_.positionals[0];
    return true;
  }

  const Invocation& inv_;
  const Command& c_;
  std::string error_;
};

// Splits "--name=value" (value set) or "--name" (value taken from the next argument).
bool take_value(const std::vector<std::string>& args, size_t* i, std::string* name,
                std::string* value) {
  const std::string& a = args[*i];
  size_t eq = a.find('=');
  if (eq != std::string::npos) {
    *name = a.substr(0, eq);
    *value = a.substr(eq + 1);
    return true;
  }
  *name = a;
  if (*i + 1 >= args.size()) return false;
  *value = args[++*i];
  return true;
}

// ---- Talking to the server ----------------------------------------------------------------------

int client_failure(const Command& c, const net::ClientError& e, bool connecting,
                   const net::ClientOptions& o) {
  using Kind = net::ClientError::Kind;
  std::string name = str(c.name);
  bool auth = e.kind == Kind::kAuth || e.server_code == net::ErrorCode::kAuthFailed;
  if (auth) {
    std::fprintf(stderr,
                 "tally %s: authentication failed for key %u at %s:%u: check --key and --secret "
                 "(or TALLY_KEY, TALLY_SECRET) (%s)\n",
                 name.c_str(), o.key_id, o.host.c_str(), o.port, e.message.c_str());
    return kExitConnect;
  }
  if (e.server_code == net::ErrorCode::kTooManyFailures) {
    std::fprintf(stderr, "tally %s: %s: too many failed logins from this address; try later\n",
                 name.c_str(), e.message.c_str());
    return kExitConnect;
  }
  if (e.kind == Kind::kServer && e.server_code == net::ErrorCode::kForbidden) {
    std::fprintf(stderr, "tally %s: forbidden: %s\n", name.c_str(), e.message.c_str());
    return kExitRefused;
  }
  if (e.kind == Kind::kTimeout) {
    std::fprintf(stderr, "tally %s: no answer in time (--timeout %" PRId64 " ms): %s\n",
                 name.c_str(), connecting ? o.connect_timeout_ms : o.request_timeout_ms,
                 e.message.c_str());
    return connecting ? kExitConnect : kExitServer;
  }
  std::fprintf(stderr, "tally %s: %s%s\n", name.c_str(), e.message.c_str(),
               connecting && !o.tls && e.kind == Kind::kClosed ? " (a TLS-only server does this: try --tls)" : "");
  if (e.kind == Kind::kUsage) return kExitUsage;
  if (e.kind == Kind::kProtocol) return kExitServer;
  if (e.kind == Kind::kConnect || connecting) return kExitConnect;
  return kExitServer;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  Invocation inv;
  // Global options, up to the command word.
  size_t i = 0;
  // -1: a global option, taken; 0: not one; otherwise the exit status of a usage error.
  auto global = [&](size_t* at) -> int {
    const std::string& a = args[*at];
    if (a == "--json") {
      inv.json = true;
      return -1;
    }
    if (a == "--tls") {
      inv.tls = true;
      return -1;
    }
    if (!is_global(std::string_view(a).substr(0, a.find('=')))) return 0;
    std::string name, value;
    if (!take_value(args, at, &name, &value)) return usage_error(a + " needs a value");
    inv.globals[name] = value;  // the last one wins, as after an alias
    return -1;
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      print_usage();
      return kExitOk;
    }
    if (!looks_like_option(a)) break;
    size_t at = i;
    int rc = global(&at);
    if (rc == 0)
      return usage_error("unknown option " + a.substr(0, a.find('=')) + " before the command");
    if (rc != -1) return rc;
    i = at;
  }
  if (i >= args.size()) return usage_error("a command is needed");
  const std::string& word = args[i++];
  if (word == "help") {
    if (i >= args.size()) {
      print_usage();
      return kExitOk;
    }
    const Command* c = find_command(args[i]);
    if (c == nullptr) return usage_error("no command named '" + args[i] + "'");
    print_command_help(*c);
    return kExitOk;
  }
  inv.command = find_command(word);
  if (inv.command == nullptr) return usage_error("unknown command '" + word + "'");
  const Command& c = *inv.command;
  for (size_t j = i; j < args.size() && args[j] != "--"; ++j) {
    if (args[j] == "-h" || args[j] == "--help") {
      print_command_help(c);
      return kExitOk;
    }
  }
  // The command's arguments; global options may follow the command too.
  bool only_positionals = false;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!only_positionals && a == "--") {
      only_positionals = true;
      continue;
    }
    if (only_positionals || !looks_like_option(a)) {
      inv.positionals.push_back(a);
      continue;
    }
    size_t at = i;
    int rc = global(&at);
    if (rc > 0) return rc;
    if (rc == -1) {
      i = at;
      continue;
    }
    std::string name, value;
    at = i;
    bool has_value = take_value(args, &at, &name, &value);
    if (std::find(c.options.begin(), c.options.end(), name) == c.options.end())
      return usage_error(str(c.name) + " takes no option " + name, &c);
    if (!has_value) return usage_error(name + " needs a value", &c);
    if (!inv.options.emplace(name, value).second) return usage_error(name + " given twice", &c);
    i = at;
  }
  size_t want = c.name == "lookup" && inv.options.count("--hex") ? 0 : c.positionals;
  if (inv.positionals.size() != want)
    return usage_error(str(c.name) + " takes " + std::to_string(want) + " argument(s) (" +
                           str(c.synopsis) + "), not " + std::to_string(inv.positionals.size()),
                       &c);

  Request req;
  Builder b(inv);
  if (!b.build(&req)) return usage_error(b.error(), &c);

  // Where and who.
  net::ClientOptions o;
  auto g = [&](std::string_view name) -> const std::string* {
    auto it = inv.globals.find(name);
    return it == inv.globals.end() ? nullptr : &it->second;
  };
  if (const std::string* v = g("--host")) {
    if (v->empty()) return usage_error("--host needs a host name or address");
    o.host = *v;
  }
  if (const std::string* v = g("--port")) {
    std::optional<uint64_t> p = parse_unsigned(*v, 1, 65535);
    if (!p) return usage_error("bad --port '" + *v + "' (1-65535)");
    o.port = static_cast<uint16_t>(*p);
  }
  const std::string* key = g("--key");
  std::string key_env;
  if (key == nullptr && std::getenv("TALLY_KEY") != nullptr)
    key = &(key_env = std::getenv("TALLY_KEY"));
  if (key == nullptr) return usage_error("--key ID is needed (or TALLY_KEY in the environment)");
  std::optional<uint64_t> key_id = parse_unsigned(*key, 1, UINT32_MAX);
  if (!key_id) return usage_error("bad key id '" + *key + "': expected a number");
  o.key_id = static_cast<uint32_t>(*key_id);
  if (const std::string* v = g("--secret")) {
    o.secret = *v;
  } else if (const char* env = std::getenv("TALLY_SECRET")) {
    o.secret = env;
  } else {
    return usage_error("--secret S is needed (or, better, TALLY_SECRET in the environment)");
  }
  if (!net::scram::is_printable_ascii(o.secret))
    return usage_error("the secret must be printable ASCII, without spaces");
  // Narrows, does not close, the window in which `ps` shows a secret given as an argument.
  for (int a = 1; a < argc; ++a) {
    std::string_view arg = argv[a];
    if (arg == "--secret" && a + 1 < argc) std::memset(argv[a + 1], 'x', std::strlen(argv[a + 1]));
    if (arg.rfind("--secret=", 0) == 0) std::memset(argv[a] + 9, 'x', arg.size() - 9);
  }
  std::optional<uint32_t> program;
  if (const std::string* v = g("--program")) {
    std::optional<uint64_t> p = parse_unsigned(*v, 1, UINT32_MAX);
    if (!p) return usage_error("bad --program '" + *v + "'");
    program = static_cast<uint32_t>(*p);
  }
  if (const std::string* v = g("--timeout")) {
    std::optional<uint64_t> t = parse_unsigned(*v, 1, 3'600'000);
    if (!t) return usage_error("bad --timeout '" + *v + "' (1-3600000 ms)");
    o.connect_timeout_ms = o.request_timeout_ms = static_cast<int64_t>(*t);
  }

  if (inv.tls) {
    o.tls = true;
    if (const std::string* v = g("--tls-ca")) o.tls_ca_file = *v;
    if (const std::string* v = g("--tls-name")) o.tls_server_name = *v;
  } else if (g("--tls-ca") || g("--tls-name")) {
    return usage_error("--tls-ca and --tls-name go with --tls");
  }
  net::Client client(o);
  if (net::ClientError e = client.connect()) return client_failure(c, e, true, o);
  const uint32_t in_program = program.value_or(client.session()->program);
  set_units(*client.session());

  if (req.history) {
    // One more than asked: tells whether there is a next page.
    uint32_t fetch = std::min<uint32_t>(req.limit + 1, net::kEntriesPerReplyMax);
    std::vector<HistoryEntry> page;
    if (net::ClientError e =
            client.history(in_program, req.event.account, fetch, req.before, &page))
      return client_failure(c, e, false, o);
    size_t shown = std::min<size_t>(page.size(), req.limit);
    bool more = page.size() > req.limit || (page.size() == req.limit && fetch == req.limit);
    if (inv.json) {
      for (size_t k = 0; k < shown; ++k) print_entry_json(page[k]);
    } else if (shown == 0) {
      std::printf("history: no entries for account %" PRIu64 "%s\n", req.event.account,
                  inv.options.count("--before") ? " before that position" : "");
    } else {
      print_entries_table(page, shown, false);
    }
    if (more && shown > 0) {
      const LogPos& last = page[shown - 1].at;
      if (inv.json)
        std::printf("{\"next_before\":\"%" PRIu64 ":%u\"}\n", last.lsn, last.index);
      else
        std::printf("next page: --before %" PRIu64 ":%u\n", last.lsn, last.index);
    }
    return kExitOk;
  }
  if (req.statement) {
    net::StatementReply st;
    if (net::ClientError e = client.statement(in_program, req.event.account, &st)) return client_failure(c, e, false, o);
    print_statement(req.event.account, st, inv.json);
    return st.result == Result::kOk ? kExitOk : kExitRefused;
  }
  if (req.lookup) {
    std::vector<HistoryEntry> found;
    if (net::ClientError e = client.lookup(in_program, req.ref, &found))
      return client_failure(c, e, false, o);
    if (inv.json) {
      for (const HistoryEntry& h : found) print_entry_json(h);
    } else if (found.empty()) {
      std::printf("lookup: no effect names '%s'\n", req.lookup_name.c_str());
    } else {
      print_entries_table(found, found.size(), true);
    }
    return kExitOk;
  }
  if (req.info) {
    std::string text;
    if (net::ClientError e = client.info(&text)) return client_failure(c, e, false, o);
    if (inv.json) {
      std::string j = "{";
      for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(at, nl - at);
        size_t eq = line.find('=');
        if (eq != std::string::npos) {
          if (j.size() > 1) j += ',';
          std::string v;
          for (char ch : line.substr(eq + 1)) {
            if (ch == '"' || ch == '\\') v += '\\';
            v += ch;
          }
          bool number = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
          j += "\"" + line.substr(0, eq) + "\":" + (number ? v : "\"" + v + "\"");
        }
        at = nl + 1;
      }
      std::printf("%s}\n", j.c_str());
    } else {
      std::fputs(text.c_str(), stdout);
    }
    return kExitOk;
  }
  if (req.stats) {
    if (in_program != client.session()->program)
      return usage_error("stats answers for the key's program (" + std::to_string(client.session()->program) +
                             "), not --program " + std::to_string(in_program),
                         &c);
    net::StatsRecord st;
    if (net::ClientError e = client.stats(&st)) return client_failure(c, e, false, o);
    print_stats(in_program, st, inv.json);
    return kExitOk;
  }
  req.event.program = in_program;
  std::vector<net::WireResult> results;
  if (net::ClientError e = client.submit(std::span(&req.event, 1), &results))
    return client_failure(c, e, false, o);
  const net::WireResult& r = results.front();
  print_result(c, req.event, r, inv.json);
  return r.result == Result::kOk ? kExitOk : kExitRefused;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int rc = run(argc, argv);
    if (std::fflush(stdout) != 0 && rc == kExitOk) return kExitServer;  // e.g. a closed pipe
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally: %s\n", e.what());
    return kExitServer;
  }
}
