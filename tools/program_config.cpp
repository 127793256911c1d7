// Loading programs from TOML (docs/programs.md).
//
// Map of this file:
//   1. the currency table;
//   2. exact text parsers: decimals, durations, UTC offsets;
//   3. Loader: walks the parsed TOML tree, converts each key, and stops at the first error, which
//      it reports with the position toml++ recorded for the key or value;
//   4. the writer (programs_to_toml), the loader's inverse.
//
// toml++ is built with exceptions on Debian: its parse errors arrive as toml::parse_error and are
// caught here, so callers only ever see a ConfigError.
#include "tools/program_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>

namespace tally {

// ---- 1. Currencies -----------------------------------------------------------------------------

namespace {

// Common ISO 4217 currencies: alphabetic code, numeric code, decimals of the minor unit.
constexpr CurrencyInfo kCurrencies[] = {
    {"AED", 784, 2}, {"ARS", 32, 2},  {"AUD", 36, 2},  {"BGN", 975, 2}, {"BHD", 48, 3},
    {"BRL", 986, 2}, {"CAD", 124, 2}, {"CHF", 756, 2}, {"CLP", 152, 0}, {"CNY", 156, 2},
    {"COP", 170, 2}, {"CZK", 203, 2}, {"DKK", 208, 2}, {"EGP", 818, 2}, {"EUR", 978, 2},
    {"GBP", 826, 2}, {"HKD", 344, 2}, {"HUF", 348, 2}, {"IDR", 360, 2}, {"ILS", 376, 2},
    {"INR", 356, 2}, {"ISK", 352, 0}, {"JOD", 400, 3}, {"JPY", 392, 0}, {"KES", 404, 2},
    {"KRW", 410, 0}, {"KWD", 414, 3}, {"MAD", 504, 2}, {"MXN", 484, 2}, {"MYR", 458, 2},
    {"NGN", 566, 2}, {"NOK", 578, 2}, {"NZD", 554, 2}, {"OMR", 512, 3}, {"PHP", 608, 2},
    {"PLN", 985, 2}, {"QAR", 634, 2}, {"RON", 946, 2}, {"SAR", 682, 2}, {"SEK", 752, 2},
    {"SGD", 702, 2}, {"THB", 764, 2}, {"TND", 788, 3}, {"TRY", 949, 2}, {"TWD", 901, 2},
    {"UAH", 980, 2}, {"USD", 840, 2}, {"VND", 704, 0}, {"ZAR", 710, 2},
};

}  // namespace

const CurrencyInfo* find_currency(std::string_view code) {
  for (const CurrencyInfo& c : kCurrencies) {
    if (c.code == code) return &c;
  }
  return nullptr;
}

const CurrencyInfo* find_currency_numeric(uint16_t numeric) {
  for (const CurrencyInfo& c : kCurrencies) {
    if (c.numeric == numeric) return &c;
  }
  return nullptr;
}

// ---- 2. Text parsers ---------------------------------------------------------------------------

namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

enum class DecimalStatus { kOk, kSyntax, kTooManyDecimals, kTooLarge };

// The work of parse_decimal_scaled, telling apart why it refused.
DecimalStatus parse_decimal(std::string_view text, int scale_digits, int64_t* scaled) {
  assert(scale_digits >= 0 && scale_digits <= 18);
  size_t i = 0;
  int128 value = 0;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    value = value * 10 + (text[i] - '0');
    if (value > kInt64Max) return DecimalStatus::kTooLarge;
  }
  if (i == 0) return DecimalStatus::kSyntax;
  int decimals = 0;
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && is_digit(text[i]); ++i) {
      ++decimals;
      if (decimals <= scale_digits) value = value * 10 + (text[i] - '0');
    }
    if (decimals == 0) return DecimalStatus::kSyntax;
  }
  if (i != text.size()) return DecimalStatus::kSyntax;
  if (decimals > scale_digits) return DecimalStatus::kTooManyDecimals;
  for (; decimals < scale_digits; ++decimals) value *= 10;
  if (value > kInt64Max) return DecimalStatus::kTooLarge;
  *scaled = static_cast<int64_t>(value);
  return DecimalStatus::kOk;
}

}  // namespace

bool parse_decimal_scaled(std::string_view text, int scale_digits, int64_t* scaled) {
  return parse_decimal(text, scale_digits, scaled) == DecimalStatus::kOk;
}

bool parse_duration_ms(std::string_view text, int64_t* ms) {
  size_t i = 0;
  int128 count = 0;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    count = count * 10 + (text[i] - '0');
    if (count > kInt64Max) return false;
  }
  if (i == 0) return false;
  std::string_view unit = text.substr(i);
  int64_t unit_ms = 0;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = kMsPerMinute;
  } else if (unit == "h") {
    unit_ms = 60 * kMsPerMinute;
  } else if (unit == "d") {
    unit_ms = kMsPerDay;
  } else {
    return false;
  }
  int128 total = count * unit_ms;
  if (total > kInt64Max) return false;
  *ms = static_cast<int64_t>(total);
  return true;
}

bool parse_utc_offset_minutes(std::string_view text, int32_t* minutes) {
  if (text.size() != 6 || (text[0] != '+' && text[0] != '-') || text[3] != ':') return false;
  if (!is_digit(text[1]) || !is_digit(text[2]) || !is_digit(text[4]) || !is_digit(text[5])) {
    return false;
  }
  int32_t hours = (text[1] - '0') * 10 + (text[2] - '0');
  int32_t mins = (text[4] - '0') * 10 + (text[5] - '0');
  int32_t total = hours * 60 + mins;
  if (mins > 59 || total > 14 * 60) return false;
  *minutes = text[0] == '-' ? -total : total;
  return true;
}

// ---- 3. Loader ---------------------------------------------------------------------------------

std::string ConfigError::to_string() const {
  std::string s = file;
  if (line > 0) {
    s += ':' + std::to_string(line);
    if (column > 0) s += ':' + std::to_string(column);
  }
  s += ": ";
  if (!field.empty()) s += field + ": ";
  s += message;
  return s;
}

namespace {

const char* type_phrase(toml::node_type type) {
  switch (type) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a decimal number";
    case toml::node_type::boolean:
      return "true/false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string join(const std::string& path, std::string_view key) {
  return path + "." + std::string(key);
}

constexpr std::string_view kActionKeys[kActionKindCount] = {"",         "review", "referral",
                                                            "birthday", "social", "custom"};

// One load: the document text (to read numbers exactly as written), the error to fill.
class Loader {
 public:
  Loader(std::string_view doc, std::string_view file, ConfigError* err)
      : doc_(doc), file_(file), err_(err) {}

  bool load(const toml::table& root, std::vector<Program>* programs);
  bool fail(const toml::source_position& pos, std::string field, std::string message);

 private:
  bool check_keys(const toml::table& t, const std::string& path,
                  std::initializer_list<std::string_view> allowed);
  bool require(const toml::table& t, std::string_view key, const std::string& path);
  bool expect_type(const toml::node& v, toml::node_type type, const std::string& field,
                   std::string_view hint);
  bool read_int(const toml::table& t, std::string_view key, const std::string& path, int64_t min,
                int64_t max, int64_t* out);
  bool read_name(const toml::table& t, std::string_view key, const std::string& path,
                 std::string* out);
  bool read_duration(const toml::table& t, std::string_view key, const std::string& path,
                     int64_t* ms);
  bool read_table(const toml::table& t, std::string_view key, const std::string& path,
                  std::initializer_list<std::string_view> allowed, const toml::table** out);

  bool read_program(const toml::table& t, const std::string& path, Program* p);
  bool read_currency(const toml::table& t, const std::string& path, Program* p, int* digits);
  bool read_utc_offset(const toml::table& t, const std::string& path, Program* p);
  bool read_earn(const toml::table& t, const std::string& path, int digits, Program* p);
  bool read_earn_per(const toml::node& v, const std::string& field, int digits, int64_t* minor);
  bool read_money(const toml::node& v, const std::string& field, int digits, int64_t min, int64_t max, int64_t* minor);
  bool read_stamp_cards(const toml::table& t, const std::string& path, int digits, Program* p);
  bool read_campaigns(const toml::table& t, const std::string& path, Program* p);
  bool read_date(const toml::table& t, std::string_view key, const std::string& path, int64_t* day);
  bool read_actions(const toml::table& t, const std::string& path, Program* p);
  bool read_tiers(const toml::table& t, const std::string& path, Program* p);
  bool read_multiplier(const toml::node& v, const std::string& field, uint32_t* permille);
  bool read_sections(const toml::table& t, const std::string& path, Program* p);
  bool read_expiry(const toml::table& t, const std::string& path, Program* p);
  bool read_tier_window(const toml::table& t, const std::string& path, Program* p);
  bool read_days(const toml::table& t, std::string_view key, const std::string& path, int64_t max, uint32_t* days);

  std::string_view value_text(const toml::source_region& r) const;

  std::string_view doc_;
  std::string_view file_;
  ConfigError* err_;
};

bool Loader::fail(const toml::source_position& pos, std::string field, std::string message) {
  err_->file = std::string(file_);
  err_->line = static_cast<int>(pos.line);
  err_->column = static_cast<int>(pos.column);
  err_->field = std::move(field);
  err_->message = std::move(message);
  return false;
}

// Unknown keys are errors, reported at the first one in the document, so a typo never silently
// leaves a default in place.
bool Loader::check_keys(const toml::table& t, const std::string& path,
                        std::initializer_list<std::string_view> allowed) {
  const toml::key* first = nullptr;
  for (auto&& [key, value] : t) {
    (void)value;
    if (std::find(allowed.begin(), allowed.end(), key.str()) != allowed.end()) continue;
    const toml::source_position& at = key.source().begin;
    if (first == nullptr || at.line < first->source().begin.line ||
        (at.line == first->source().begin.line && at.column < first->source().begin.column)) {
      first = &key;
    }
  }
  if (first == nullptr) return true;
  std::string expected;
  for (std::string_view k : allowed) expected += (expected.empty() ? "" : ", ") + std::string(k);
  return fail(first->source().begin, join(path, first->str()),
              "unknown key (expected one of: " + expected + ")");
}

bool Loader::require(const toml::table& t, std::string_view key, const std::string& path) {
  if (t.contains(key)) return true;
  return fail(t.source().begin, join(path, key), "missing (this key is required)");
}

bool Loader::expect_type(const toml::node& v, toml::node_type type, const std::string& field,
                         std::string_view hint) {
  if (v.type() == type) return true;
  std::string message = "must be " + std::string(type_phrase(type));
  if (!hint.empty()) message += " " + std::string(hint);
  return fail(v.source().begin, field, message + ", not " + type_phrase(v.type()));
}

// Reads an optional integer key: an absent key leaves *out as it was.
bool Loader::read_int(const toml::table& t, std::string_view key, const std::string& path,
                      int64_t min, int64_t max, int64_t* out) {
  const toml::node* v = t.get(key);
  if (v == nullptr) return true;
  std::string field = join(path, key);
  if (!expect_type(*v, toml::node_type::integer, field, "")) return false;
  int64_t value = v->as_integer()->get();
  if (value < min) return fail(v->source().begin, field, "must be at least " + std::to_string(min));
  if (value > max) return fail(v->source().begin, field, "must be at most " + std::to_string(max));
  *out = value;
  return true;
}

bool Loader::read_name(const toml::table& t, std::string_view key, const std::string& path,
                       std::string* out) {
  const toml::node* v = t.get(key);
  if (v == nullptr) return true;
  std::string field = join(path, key);
  if (!expect_type(*v, toml::node_type::string, field, "")) return false;
  const std::string& s = v->as_string()->get();
  if (s.empty() || s.size() > kConfigNameBytesMax) {
    return fail(v->source().begin, field,
                "must be 1 to " + std::to_string(kConfigNameBytesMax) + " bytes long");
  }
  *out = s;
  return true;
}

bool Loader::read_duration(const toml::table& t, std::string_view key, const std::string& path,
                           int64_t* ms) {
  const toml::node* v = t.get(key);
  if (v == nullptr) return true;
  std::string field = join(path, key);
  constexpr std::string_view kHint = "with its unit, such as \"45s\", \"30m\", \"12h\" or \"90d\"";
  if (!expect_type(*v, toml::node_type::string, field, kHint)) return false;
  if (!parse_duration_ms(v->as_string()->get(), ms)) {
    return fail(v->source().begin, field,
                "must be a whole number and a unit (ms, s, m, h or d), such as \"30m\" or \"90d\"");
  }
  return true;
}

// Reads an optional sub-table and checks its keys; *out is nullptr when the key is absent.
bool Loader::read_table(const toml::table& t, std::string_view key, const std::string& path,
                        std::initializer_list<std::string_view> allowed, const toml::table** out) {
  *out = nullptr;
  const toml::node* v = t.get(key);
  if (v == nullptr) return true;
  std::string field = join(path, key);
  if (!expect_type(*v, toml::node_type::table, field, "")) return false;
  *out = v->as_table();
  return check_keys(**out, field, allowed);
}

// The exact text of a one-line value, as written in the document. toml++ counts columns in
// code points, so the walk skips UTF-8 continuation bytes.
std::string_view Loader::value_text(const toml::source_region& r) const {
  if (r.begin.line == 0 || r.begin.line != r.end.line || r.end.column <= r.begin.column) return {};
  size_t pos = 0;
  for (toml::source_index line = 1; line < r.begin.line; ++line) {
    pos = doc_.find('\n', pos);
    if (pos == std::string_view::npos) return {};
    ++pos;
  }
  auto advance = [this](size_t p, toml::source_index code_points) {
    for (; code_points > 0 && p < doc_.size(); --code_points) {
      ++p;
      while (p < doc_.size() && (static_cast<unsigned char>(doc_[p]) & 0xC0) == 0x80) ++p;
    }
    return p;
  };
  size_t begin = advance(pos, r.begin.column - 1);
  size_t end = advance(begin, r.end.column - r.begin.column);
  return doc_.substr(begin, end - begin);
}

bool Loader::load(const toml::table& root, std::vector<Program>* programs) {
  if (!check_keys(root, "", {"program"})) {
    err_->field.erase(0, 1);  // the root's path is empty: drop the leading dot
    return false;
  }
  const toml::node* list = root.get("program");
  if (list == nullptr) {
    return fail({}, "program", "no program defined: the file needs at least one [[program]] table");
  }
  if (!list->is_array()) {
    return fail(list->source().begin, "program",
                "write [[program]] with double brackets: the file holds a list of programs");
  }
  const toml::array& array = *list->as_array();
  // id -> index of the program that has it, to name both in a duplicate-id error.
  std::map<uint32_t, size_t> ids;
  std::vector<Program> result;
  for (size_t i = 0; i < array.size(); ++i) {
    const toml::node& node = array[i];
    std::string path = "program[" + std::to_string(i) + "]";
    if (i == kConfigProgramsMax) {
      return fail(node.source().begin, path,
                  "too many programs (at most " + std::to_string(kConfigProgramsMax) + ")");
    }
    if (!expect_type(node, toml::node_type::table, path, "")) return false;
    const toml::table& table = *node.as_table();
    Program p;
    if (!read_program(table, path, &p)) return false;
    auto [it, inserted] = ids.emplace(p.id, i);
    if (!inserted) {
      const toml::node& first = array[it->second];
      return fail(table.get("id")->source().begin, join(path, "id"),
                  "duplicate id " + std::to_string(p.id) + ": program[" +
                      std::to_string(it->second) + "] (line " +
                      std::to_string(first.source().begin.line) + ") has it too");
    }
    result.push_back(std::move(p));
  }
  *programs = std::move(result);
  return true;
}

bool Loader::read_program(const toml::table& t, const std::string& path, Program* p) {
  if (!check_keys(t, path,
                  {"id", "name", "currency", "utc_offset", "earn", "earn_points_max",
                   "signup_bonus", "redeem_points_min", "hold_timeout", "refund_window",
                   "dedup_window", "future_skew_max", "caps", "actions", "tiers", "capacity", "expiry",
                   "membership", "tier_window", "stamp_cards", "unit", "bonuses", "campaigns"})) {
    return false;
  }
  if (!require(t, "id", path) || !require(t, "currency", path)) return false;
  int64_t id = 0;
  if (!read_int(t, "id", path, 1, std::numeric_limits<uint32_t>::max(), &id)) return false;
  p->id = static_cast<uint32_t>(id);
  if (!read_name(t, "name", path, &p->name)) return false;
  if (const toml::node* u = t.get("unit")) {
    const std::string field = join(path, "unit");
    if (!expect_type(*u, toml::node_type::string, field, "\"points\" or \"cashback\"")) return false;
    const std::string& unit = u->as_string()->get();
    if (unit != "points" && unit != "cashback") return fail(u->source().begin, field, "must be \"points\" or \"cashback\"");
    p->unit = unit == "cashback" ? Unit::kCashback : Unit::kPoints;
  }
  int digits = -1;  // decimals of the currency's minor unit; -1 = a currency not in the table
  if (!read_currency(t, path, p, &digits) || !read_utc_offset(t, path, p)) return false;
  if (!read_earn(t, path, digits, p) || !read_stamp_cards(t, path, digits, p) || !read_campaigns(t, path, p)) return false;
  if (!read_int(t, "earn_points_max", path, 0, kPointsMax, &p->earn_points_max) ||
      !read_int(t, "signup_bonus", path, 0, kPointsMax, &p->signup_bonus_points) ||
      !read_int(t, "redeem_points_min", path, 0, kPointsMax, &p->redeem_points_min)) {
    return false;
  }
  if (!read_duration(t, "hold_timeout", path, &p->hold_timeout_ms) ||
      !read_duration(t, "refund_window", path, &p->refund_window_ms) ||
      !read_duration(t, "dedup_window", path, &p->dedup_window_ms) ||
      !read_duration(t, "future_skew_max", path, &p->future_skew_ms_max)) {
    return false;
  }
  if (!read_sections(t, path, p) || !read_actions(t, path, p) || !read_tiers(t, path, p)) {
    return false;
  }
  // Rules that span several keys (tier thresholds increasing, windows nested) are the engine's:
  // its sentence is reported at the program's [[program]] line.
  std::string why = validate(*p);
  if (!why.empty()) return fail(t.source().begin, path, why);
  return true;
}

bool Loader::read_currency(const toml::table& t, const std::string& path, Program* p, int* digits) {
  const toml::node& v = *t.get("currency");
  std::string field = join(path, "currency");
  if (v.is_integer()) {
    int64_t numeric = v.as_integer()->get();
    if (numeric < 1 || numeric > 999) {
      return fail(v.source().begin, field, "an ISO 4217 numeric code is between 1 and 999");
    }
    p->currency = static_cast<uint16_t>(numeric);
    const CurrencyInfo* c = find_currency_numeric(p->currency);
    *digits = c != nullptr ? c->minor_digits : -1;
    return true;
  }
  if (!expect_type(v, toml::node_type::string, field,
                   "code such as \"EUR\" (or its number, 978)")) {
    return false;
  }
  const std::string& code = v.as_string()->get();
  const CurrencyInfo* c = find_currency(code);
  if (c == nullptr) {
    return fail(v.source().begin, field,
                "unknown currency \"" + code +
                    "\": use an upper-case ISO 4217 code from docs/programs.md, such as \"EUR\", "
                    "or the code's number (978)");
  }
  p->currency = c->numeric;
  *digits = c->minor_digits;
  return true;
}

bool Loader::read_utc_offset(const toml::table& t, const std::string& path, Program* p) {
  const toml::node* v = t.get("utc_offset");
  if (v == nullptr) return true;
  std::string field = join(path, "utc_offset");
  if (!expect_type(*v, toml::node_type::string, field, "such as \"+01:00\"")) return false;
  const std::string& text = v->as_string()->get();
  int32_t minutes = 0;
  if (!parse_utc_offset_minutes(text, &minutes)) {
    bool looks_like_zone = std::any_of(text.begin(), text.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    });
    return fail(v->source().begin, field,
                looks_like_zone
                    ? "only fixed offsets such as \"+01:00\" are supported, not time-zone names: "
                      "the engine does not follow daylight-saving changes"
                    : "must be \"+HH:MM\" or \"-HH:MM\", at most 14 hours from UTC");
  }
  p->utc_offset_minutes = minutes;
  return true;
}

bool Loader::read_earn(const toml::table& t, const std::string& path, int digits, Program* p) {
  const toml::table* earn = nullptr;
  if (!read_table(t, "earn", path, {"points", "per", "per_minor", "percent"}, &earn)) return false;
  if (earn == nullptr) return true;
  std::string earn_path = join(path, "earn");
  if (const toml::node* pc = earn->get("percent")) {
    // Cashback's usual way to say it: percent = "2.5" earns 25 minor units per 1000.
    const std::string field = join(earn_path, "percent");
    for (const char* other : {"points", "per", "per_minor"})
      if (earn->contains(other))
        return fail(earn->get(other)->source().begin, join(earn_path, other), "give either percent, or points and per, not both");
    if (!expect_type(*pc, toml::node_type::string, field, "a decimal string such as \"2.5\"")) return false;
    int64_t scaled = 0;  // percent x 10^4
    if (!parse_decimal_scaled(pc->as_string()->get(), 4, &scaled) || scaled < 1 || scaled > 100 * 10'000)
      return fail(pc->source().begin, field, "must be a decimal percentage above 0 and at most 100, with at most 4 decimals");
    int64_t per = 100 * 10'000;
    while (scaled % 10 == 0 && per % 10 == 0 && per > 100) scaled /= 10, per /= 10;  // the smallest exact pair
    p->earn_points = scaled;
    p->earn_per_minor = per;
    return true;
  }
  if (!require(*earn, "points", earn_path)) return false;
  if (!read_int(*earn, "points", earn_path, 0, 1'000'000, &p->earn_points)) return false;
  const toml::node* per = earn->get("per");
  if (per != nullptr && earn->contains("per_minor")) {
    return fail(earn->get("per_minor")->source().begin, join(earn_path, "per_minor"),
                "give either per or per_minor, not both");
  }
  if (per != nullptr)
    return read_earn_per(*per, join(earn_path, "per"), digits, &p->earn_per_minor);
  if (!earn->contains("per_minor")) {
    return fail(
        earn->source().begin, join(earn_path, "per"),
        "missing: the amount that earns the points, e.g. per = \"1.00\" (or per_minor = 100)");
  }
  return read_int(*earn, "per_minor", earn_path, 1, 1'000'000'000, &p->earn_per_minor);
}

// `per` is an amount in the currency's main unit, written as a string ("1.00", "0.50") or a whole
// number; it becomes minor units by the currency's decimals, exactly.
bool Loader::read_earn_per(const toml::node& v, const std::string& field, int digits,
                           int64_t* minor) {
  return read_money(v, field, digits, 1, 1'000'000'000, minor);
}

// An amount of money in the currency's main unit ("3.00"), into minor units in [min, max].
bool Loader::read_money(const toml::node& v, const std::string& field, int digits, int64_t min, int64_t max,
                        int64_t* minor) {
  const toml::source_position& at = v.source().begin;
  if (digits < 0) {
    return fail(at, field,
                "the currency's decimals are not known to the loader: give per_minor (the amount "
                "in minor units) instead");
  }
  std::string text;
  if (v.is_integer()) {
    text = std::to_string(v.as_integer()->get());
  } else if (v.is_floating_point()) {
    return fail(at, field,
                "write the amount as a string, such as \"1.00\": money is never read "
                "as a floating-point number");
  } else if (!expect_type(v, toml::node_type::string, field, "such as \"1.00\"")) {
    return false;
  } else {
    text = v.as_string()->get();
  }
  int64_t value = 0;
  switch (parse_decimal(text, digits, &value)) {
    case DecimalStatus::kOk:
      break;
    case DecimalStatus::kTooManyDecimals:
      return fail(
          at, field,
          "\"" + text + "\" has more decimals than the currency (" + std::to_string(digits) + ")");
    case DecimalStatus::kSyntax:
    case DecimalStatus::kTooLarge:
      return fail(at, field,
                  "must be a plain decimal amount such as \"1.00\", not \"" + text + "\"");
  }
  if (value < min || value > max) {
    return fail(at, field,
                (min == 1 ? std::string("must be more than 0") : "must be at least " + std::to_string(min)) +
                    " and at most " + std::to_string(max) + " minor units");
  }
  *minor = value;
  return true;
}

bool Loader::read_stamp_cards(const toml::table& t, const std::string& path, int digits, Program* p) {
  const toml::node* v = t.get("stamp_cards");
  if (v == nullptr) return true;
  const std::string cards_path = join(path, "stamp_cards");
  if (!expect_type(*v, toml::node_type::array, cards_path, "of [[program.stamp_cards]] tables")) return false;
  const toml::array& cards = *v->as_array();
  for (size_t i = 0; i < cards.size(); ++i) {
    const std::string card_path = cards_path + "[" + std::to_string(i) + "]";
    if (i == kStampCardsMax)
      return fail(cards[i].source().begin, card_path, "too many stamp cards (at most " + std::to_string(kStampCardsMax) + ")");
    if (!expect_type(cards[i], toml::node_type::table, card_path, "")) return false;
    const toml::table& card = *cards[i].as_table();
    if (!check_keys(card, card_path, {"name", "stamps", "min_purchase", "min_purchase_minor", "reward"}) ||
        !require(card, "name", card_path) || !require(card, "stamps", card_path) || !require(card, "reward", card_path)) {
      return false;
    }
    StampCard c;
    int64_t stamps = 0;
    if (!read_name(card, "name", card_path, &c.name) || !read_int(card, "stamps", card_path, 2, 100, &stamps) ||
        !read_int(card, "reward", card_path, 0, kPointsMax / static_cast<int64_t>(kStampCardsMax), &c.reward_points)) {
      return false;
    }
    c.stamps = static_cast<uint32_t>(stamps);
    if (card.contains("min_purchase") && card.contains("min_purchase_minor"))
      return fail(card.get("min_purchase_minor")->source().begin, join(card_path, "min_purchase_minor"),
                  "give either min_purchase or min_purchase_minor, not both");
    if (const toml::node* m = card.get("min_purchase")) {
      if (digits < 0)
        return fail(m->source().begin, join(card_path, "min_purchase"),
                    "the currency's decimals are not known to the loader: give min_purchase_minor instead");
      if (!read_money(*m, join(card_path, "min_purchase"), digits, 0, kPointsMax, &c.min_purchase_minor)) return false;
    }
    if (!read_int(card, "min_purchase_minor", card_path, 0, kPointsMax, &c.min_purchase_minor)) return false;
    p->stamp_cards[i] = std::move(c);
  }
  p->stamp_card_count = static_cast<uint8_t>(cards.size());
  return true;
}

// A TOML local date (2026-12-24, unquoted) as a day number.
bool Loader::read_date(const toml::table& t, std::string_view key, const std::string& path, int64_t* day) {
  const toml::node* v = t.get(key);
  const std::string field = join(path, key);
  if (v == nullptr) return fail(t.source().begin, field, "missing: a date such as 2026-12-24");
  if (!expect_type(*v, toml::node_type::date, field, "a date such as 2026-12-24 (not quoted)")) return false;
  const toml::date& d = v->as_date()->get();
  if (d.year < 1970 || d.year > 2148) return fail(v->source().begin, field, "must be between 1970 and 2148");
  *day = days_from_civil(d.year, d.month, d.day);
  return true;
}

bool Loader::read_campaigns(const toml::table& t, const std::string& path, Program* p) {
  const toml::node* v = t.get("campaigns");
  if (v == nullptr) return true;
  const std::string list_path = join(path, "campaigns");
  if (!expect_type(*v, toml::node_type::array, list_path, "of [[program.campaigns]] tables")) return false;
  const toml::array& list = *v->as_array();
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string c_path = list_path + "[" + std::to_string(i) + "]";
    if (i == kCampaignsMax)
      return fail(list[i].source().begin, c_path, "too many campaigns (at most " + std::to_string(kCampaignsMax) + ")");
    if (!expect_type(list[i], toml::node_type::table, c_path, "")) return false;
    const toml::table& c = *list[i].as_table();
    if (!check_keys(c, c_path, {"name", "from", "until", "multiplier"}) || !require(c, "name", c_path) ||
        !require(c, "multiplier", c_path)) {
      return false;
    }
    Campaign campaign;
    if (!read_name(c, "name", c_path, &campaign.name) || !read_date(c, "from", c_path, &campaign.first_day) ||
        !read_date(c, "until", c_path, &campaign.last_day) ||
        !read_multiplier(*c.get("multiplier"), join(c_path, "multiplier"), &campaign.multiplier_permille)) {
      return false;
    }
    if (campaign.last_day < campaign.first_day)
      return fail(c.get("until")->source().begin, join(c_path, "until"), "must not be before `from`");
    p->campaigns[i] = std::move(campaign);
  }
  p->campaign_count = static_cast<uint8_t>(list.size());
  return true;
}

bool Loader::read_sections(const toml::table& t, const std::string& path, Program* p) {
  const toml::table* caps = nullptr;
  if (!read_table(t, "caps", path, {"points_per_day", "events_per_minute"}, &caps)) return false;
  if (caps != nullptr) {
    std::string caps_path = join(path, "caps");
    int64_t events = p->events_per_minute_max;
    if (!read_int(*caps, "points_per_day", caps_path, 0, kPointsMax, &p->points_per_day_max) ||
        !read_int(*caps, "events_per_minute", caps_path, 0, 1'000'000, &events)) {
      return false;
    }
    p->events_per_minute_max = static_cast<uint32_t>(events);
  }
  const toml::table* capacity = nullptr;
  if (!read_table(t, "capacity", path, {"accounts_max", "holds_open_max", "orders_max", "lots_max"},
                  &capacity)) {
    return false;
  }
  if (capacity != nullptr) {
    std::string cap_path = join(path, "capacity");
    constexpr int64_t kMax = std::numeric_limits<uint32_t>::max();
    auto accounts = static_cast<int64_t>(p->accounts_max);
    auto holds = static_cast<int64_t>(p->holds_open_max);
    auto orders = static_cast<int64_t>(p->orders_max);
    auto lots = static_cast<int64_t>(p->lots_max);
    if (!read_int(*capacity, "accounts_max", cap_path, 1, kMax, &accounts) ||
        !read_int(*capacity, "holds_open_max", cap_path, 1, kMax, &holds) ||
        !read_int(*capacity, "orders_max", cap_path, 1, kMax, &orders) ||
        !read_int(*capacity, "lots_max", cap_path, 0, kMax, &lots)) {
      return false;
    }
    p->accounts_max = static_cast<uint64_t>(accounts);
    p->holds_open_max = static_cast<uint64_t>(holds);
    p->orders_max = static_cast<uint64_t>(orders);
    p->lots_max = static_cast<uint64_t>(lots);
  }
  if (!read_expiry(t, path, p) || !read_tier_window(t, path, p)) return false;
  const toml::table* bonuses = nullptr;
  if (!read_table(t, "bonuses", path, {"first_purchase", "comeback", "comeback_after"}, &bonuses)) return false;
  if (bonuses != nullptr) {
    const std::string b_path = join(path, "bonuses");
    if (!read_int(*bonuses, "first_purchase", b_path, 0, kPointsMax / 8, &p->first_purchase_bonus_points) ||
        !read_int(*bonuses, "comeback", b_path, 0, kPointsMax / 8, &p->comeback_bonus_points) ||
        !read_days(*bonuses, "comeback_after", b_path, 36'500, &p->comeback_days)) {
      return false;
    }
    if ((p->comeback_bonus_points > 0) != (p->comeback_days > 0))
      return fail(bonuses->source().begin, b_path, "comeback and comeback_after go together (points, and the days away)");
  }
  const toml::table* m = nullptr;
  if (!read_table(t, "membership", path, {"days", "multiplier"}, &m)) return false;
  if (m != nullptr) {
    const std::string m_path = join(path, "membership");
    if (!require(*m, "days", m_path) || !read_days(*m, "days", m_path, 3660, &p->membership_days)) return false;
    if (p->membership_days == 0)
      return fail(m->get("days")->source().begin, join(m_path, "days"), "must be at least \"1d\"");
    if (const toml::node* v = m->get("multiplier")) {
      if (!read_multiplier(*v, join(m_path, "multiplier"), &p->membership_multiplier_permille)) return false;
    }
  }
  return true;
}

// A duration in whole days ("30d").
bool Loader::read_days(const toml::table& t, std::string_view key, const std::string& path, int64_t max,
                       uint32_t* days) {
  int64_t ms = -1;
  if (!read_duration(t, key, path, &ms)) return false;
  if (ms < 0) return true;  // absent
  const toml::node* v = t.get(key);
  if (ms % kMsPerDay != 0)
    return fail(v->source().begin, join(path, key), "must be whole days, such as \"30d\" (lots are dated by day)");
  if (ms / kMsPerDay > max)
    return fail(v->source().begin, join(path, key), "must be at most \"" + std::to_string(max) + "d\"");
  *days = static_cast<uint32_t>(ms / kMsPerDay);
  return true;
}

bool Loader::read_expiry(const toml::table& t, const std::string& path, Program* p) {
  const toml::table* e = nullptr;
  if (!read_table(t, "expiry", path, {"after", "end_of_month_after", "pending", "inactivity", "date_by"}, &e))
    return false;
  if (e == nullptr) return true;
  const std::string e_path = join(path, "expiry");
  LotPolicy& l = p->lots;
  if (e->contains("after") && e->contains("end_of_month_after"))
    return fail(e->get("end_of_month_after")->source().begin, join(e_path, "end_of_month_after"),
                "give either after (days) or end_of_month_after (months), not both");
  if (e->contains("after")) {
    if (!read_days(*e, "after", e_path, 36'500, &l.expiry_days)) return false;
    if (l.expiry_days == 0) return fail(e->get("after")->source().begin, join(e_path, "after"), "must be at least \"1d\"");
    l.expiry = ExpiryKind::kDays;
  }
  if (e->contains("end_of_month_after")) {
    int64_t months = 0;
    if (!read_int(*e, "end_of_month_after", e_path, 0, 1200, &months)) return false;
    l.expiry = ExpiryKind::kEndOfMonth;
    l.expiry_months = static_cast<uint32_t>(months);
  }
  if (!read_days(*e, "pending", e_path, 365, &l.pending_days) ||
      !read_days(*e, "inactivity", e_path, 36'500, &l.inactivity_days)) {
    return false;
  }
  if (const toml::node* v = e->get("date_by")) {
    const std::string field = join(e_path, "date_by");
    if (!expect_type(*v, toml::node_type::string, field, "\"purchase\" or \"arrival\"")) return false;
    const std::string& d = v->as_string()->get();
    if (d != "purchase" && d != "arrival") return fail(v->source().begin, field, "must be \"purchase\" or \"arrival\"");
    l.date_by_purchase = d == "purchase";
  }
  return true;
}

bool Loader::read_tier_window(const toml::table& t, const std::string& path, Program* p) {
  const toml::table* w = nullptr;
  if (!read_table(t, "tier_window", path, {"period", "months", "grace"}, &w)) return false;
  if (w == nullptr) return true;
  const std::string w_path = join(path, "tier_window");
  TierPolicy& tp = p->tier_policy;
  if (!require(*w, "period", w_path)) return false;
  const toml::node* v = w->get("period");
  const std::string field = join(w_path, "period");
  if (!expect_type(*v, toml::node_type::string, field, "\"calendar_year\", \"rolling\" or \"lifetime\"")) return false;
  const std::string& period = v->as_string()->get();
  if (period == "calendar_year") tp.period = TierPeriod::kCalendarYear;
  else if (period == "rolling") tp.period = TierPeriod::kRollingMonths;
  else if (period == "lifetime") tp.period = TierPeriod::kLifetime;
  else return fail(v->source().begin, field, "must be \"calendar_year\", \"rolling\" or \"lifetime\"");
  if (const toml::node* m = w->get("months")) {
    if (tp.period != TierPeriod::kRollingMonths)
      return fail(m->source().begin, join(w_path, "months"), "is for period = \"rolling\" only");
    int64_t months = 0;
    if (!read_int(*w, "months", w_path, 1, 12, &months)) return false;
    tp.window_months = static_cast<uint32_t>(months);
  }
  if (tp.period == TierPeriod::kLifetime && w->contains("grace"))
    return fail(w->get("grace")->source().begin, join(w_path, "grace"), "needs period = \"calendar_year\" or \"rolling\"");
  const int64_t grace_max = tp.period == TierPeriod::kCalendarYear ? 364 : tp.period == TierPeriod::kRollingMonths ? 27 : 0;
  if (!read_days(*w, "grace", w_path, grace_max, &tp.grace_days)) return false;
  return true;
}

bool Loader::read_actions(const toml::table& t, const std::string& path, Program* p) {
  const toml::table* actions = nullptr;
  if (!read_table(t, "actions", path, {"review", "referral", "birthday", "social", "custom"},
                  &actions)) {
    return false;
  }
  if (actions == nullptr) return true;
  std::string actions_path = join(path, "actions");
  for (size_t kind = 1; kind < kActionKindCount; ++kind) {
    const toml::table* a = nullptr;
    if (!read_table(*actions, kActionKeys[kind], actions_path, {"points", "limit", "per_days"},
                    &a)) {
      return false;
    }
    if (a == nullptr) continue;
    std::string a_path = join(actions_path, kActionKeys[kind]);
    int64_t points = 0;
    int64_t limit = 0;
    int64_t per_days = 0;
    if (!require(*a, "points", a_path) || !read_int(*a, "points", a_path, 0, kPointsMax, &points) ||
        !read_int(*a, "limit", a_path, 0, 65535, &limit) ||
        !read_int(*a, "per_days", a_path, 0, 3660, &per_days)) {
      return false;
    }
    if (limit > 0 && per_days == 0) {
      return fail(a->source().begin, a_path, "a limit needs per_days, the window it counts in");
    }
    if (limit == 0 && per_days > 0) {
      return fail(a->source().begin, a_path, "per_days without a limit has no effect: set limit");
    }
    p->actions[kind] = {points, static_cast<uint32_t>(limit), static_cast<uint32_t>(per_days)};
  }
  return true;
}

bool Loader::read_tiers(const toml::table& t, const std::string& path, Program* p) {
  const toml::node* v = t.get("tiers");
  if (v == nullptr) return true;
  std::string tiers_path = join(path, "tiers");
  if (!expect_type(*v, toml::node_type::array, tiers_path, "of [[program.tiers]] tables")) {
    return false;
  }
  const toml::array& tiers = *v->as_array();
  if (tiers.empty()) return fail(v->source().begin, tiers_path, "needs at least one tier");
  for (size_t i = 0; i < tiers.size(); ++i) {
    std::string tier_path = tiers_path + "[" + std::to_string(i) + "]";
    if (i == kTiersMax) {
      return fail(tiers[i].source().begin, tier_path,
                  "too many tiers (at most " + std::to_string(kTiersMax) + ")");
    }
    if (!expect_type(tiers[i], toml::node_type::table, tier_path, "")) return false;
    const toml::table& tier = *tiers[i].as_table();
    if (!check_keys(tier, tier_path, {"name", "threshold", "multiplier", "bonus"}) ||
        !require(tier, "name", tier_path) || !require(tier, "threshold", tier_path)) {
      return false;
    }
    TierRule rule;
    if (!read_name(tier, "name", tier_path, &rule.name) ||
        !read_int(tier, "threshold", tier_path, 0, kPointsMax, &rule.threshold_points) ||
        !read_int(tier, "bonus", tier_path, 0, kPointsMax / static_cast<int64_t>(kTiersMax), &rule.bonus_points)) {
      return false;
    }
    if (i == 0 && rule.bonus_points != 0)
      return fail(tier.get("bonus")->source().begin, join(tier_path, "bonus"),
                  "the first tier has no upgrade bonus: nobody is upgraded into it");
    const toml::node* m = tier.get("multiplier");
    if (m != nullptr &&
        !read_multiplier(*m, join(tier_path, "multiplier"), &rule.multiplier_permille)) {
      return false;
    }
    p->tiers[i] = std::move(rule);
  }
  p->tier_count = static_cast<uint8_t>(tiers.size());
  return true;
}

// A multiplier is a TOML number, read from its text as written (toml++ keeps only a double), so
// 1.25 is exactly 1250 permille and 1.2505 is refused rather than rounded.
bool Loader::read_multiplier(const toml::node& v, const std::string& field, uint32_t* permille) {
  const toml::source_position& at = v.source().begin;
  if (!v.is_number()) return expect_type(v, toml::node_type::floating_point, field, "such as 1.25");
  std::string_view text = value_text(v.source());
  int64_t value = 0;
  switch (parse_decimal(text, 3, &value)) {
    case DecimalStatus::kOk:
      break;
    case DecimalStatus::kTooManyDecimals:
      return fail(at, field, "at most 3 decimals (steps of 0.001)");
    case DecimalStatus::kSyntax:
    case DecimalStatus::kTooLarge:
      return fail(at, field, "must be a plain decimal such as 1.25 (no sign or exponent)");
  }
  // The text and toml++'s value must agree; if not, the text was not found where expected.
  double parsed = v.value<double>().value_or(0);
  if (std::fabs(parsed - static_cast<double>(value) / 1000) > 1e-9 * std::max(1.0, parsed)) {
    return fail(at, field, "could not read the number's text; write it as a plain decimal");
  }
  if (value < 1 || value > 100'000) return fail(at, field, "must be between 0.001 and 100");
  *permille = static_cast<uint32_t>(value);
  return true;
}

}  // namespace

bool load_programs_string(std::string_view toml, std::string_view source_name,
                          std::vector<Program>* out, ConfigError* err) {
  // toml++ skips a byte-order mark without counting it; dropping it here keeps the columns it
  // reports aligned with the text value_text() reads.
  if (toml.substr(0, 3) == "\xEF\xBB\xBF") toml.remove_prefix(3);
  Loader loader(toml, source_name, err);
  if (toml.size() > kConfigBytesMax) {
    return loader.fail({}, "", "larger than " + std::to_string(kConfigBytesMax) + " bytes");
  }
  try {
    toml::table root = toml::parse(toml, source_name);
    return loader.load(root, out);
  } catch (const toml::parse_error& e) {
    return loader.fail(e.source().begin, "", std::string(e.description()));
  } catch (const std::exception& e) {
    return loader.fail({}, "", e.what());
  }
}

bool load_programs_file(const std::string& path, std::vector<Program>* out, ConfigError* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = ConfigError{path, 0, 0, "", std::string("cannot open: ") + std::strerror(errno)};
    return false;
  }
  std::string text(kConfigBytesMax + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    *err = ConfigError{path, 0, 0, "", "cannot read the file"};
    return false;
  }
  text.resize(static_cast<size_t>(in.gcount()));
  return load_programs_string(text, path, out, err);
}

// ---- 4. Writer ---------------------------------------------------------------------------------

namespace {

std::string quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string q = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      q += '\\';
      q += c;
    } else if (u < 0x20 || u == 0x7f) {
      q += "\\u00";
      q += kHex[u >> 4];
      q += kHex[u & 15];
    } else {
      q += c;
    }
  }
  return q + "\"";
}

// `value` scaled by 10^digits as a decimal: 1250 with 3 digits is "1.25" (trailing zeros dropped,
// at least `digits_min` decimals kept).
std::string decimal_text(int64_t value, int digits, int digits_min) {
  int64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  std::string frac = std::to_string(value % scale + scale).substr(1);
  while (static_cast<int>(frac.size()) > digits_min && !frac.empty() && frac.back() == '0') {
    frac.pop_back();
  }
  std::string s = std::to_string(value / scale);
  return frac.empty() ? s : s + "." + frac;
}

std::string duration_text(int64_t ms) {
  struct Unit {
    int64_t ms;
    const char* suffix;
  };
  constexpr Unit kUnits[] = {
      {kMsPerDay, "d"}, {60 * kMsPerMinute, "h"}, {kMsPerMinute, "m"}, {1000, "s"}};
  for (const Unit& u : kUnits) {
    if (ms != 0 && ms % u.ms == 0) return quoted(std::to_string(ms / u.ms) + u.suffix);
  }
  return quoted(std::to_string(ms) + (ms == 0 ? "s" : "ms"));
}

std::string offset_text(int32_t minutes) {
  int32_t m = minutes < 0 ? -minutes : minutes;
  std::string hh = std::to_string(100 + m / 60).substr(1);
  std::string mm = std::to_string(100 + m % 60).substr(1);
  return quoted((minutes < 0 ? "-" : "+") + hh + ":" + mm);
}

void write_program(const Program& p, std::string* s) {
  auto line = [s](std::string_view key, const std::string& value) {
    *s += std::string(key) + " = " + value + "\n";
  };
  *s += "[[program]]\n";
  line("id", std::to_string(p.id));
  if (!p.name.empty()) line("name", quoted(p.name));
  const CurrencyInfo* c = find_currency_numeric(p.currency);
  line("currency", c != nullptr ? quoted(c->code) : std::to_string(p.currency));
  line("utc_offset", offset_text(p.utc_offset_minutes));
  if (p.unit == Unit::kCashback) line("unit", quoted("cashback"));
  line("earn",
       "{ points = " + std::to_string(p.earn_points) +
           (c != nullptr ? ", per = " + quoted(decimal_text(p.earn_per_minor, c->minor_digits,
                                                            c->minor_digits))
                         : ", per_minor = " + std::to_string(p.earn_per_minor)) +
           " }");
  line("earn_points_max", std::to_string(p.earn_points_max));
  line("signup_bonus", std::to_string(p.signup_bonus_points));
  line("redeem_points_min", std::to_string(p.redeem_points_min));
  line("hold_timeout", duration_text(p.hold_timeout_ms));
  line("refund_window", duration_text(p.refund_window_ms));
  line("dedup_window", duration_text(p.dedup_window_ms));
  line("future_skew_max", duration_text(p.future_skew_ms_max));
  *s += "\n[program.caps]\n";
  line("points_per_day", std::to_string(p.points_per_day_max));
  line("events_per_minute", std::to_string(p.events_per_minute_max));
  *s += "\n[program.capacity]\n";
  line("accounts_max", std::to_string(p.accounts_max));
  line("holds_open_max", std::to_string(p.holds_open_max));
  line("orders_max", std::to_string(p.orders_max));
  line("lots_max", std::to_string(p.lots_max));
  const LotPolicy& l = p.lots;
  if (l.expiry != ExpiryKind::kNever || l.pending_days > 0 || l.inactivity_days > 0 || !l.date_by_purchase) {
    *s += "\n[program.expiry]\n";
    if (l.expiry == ExpiryKind::kDays) line("after", quoted(std::to_string(l.expiry_days) + "d"));
    if (l.expiry == ExpiryKind::kEndOfMonth) line("end_of_month_after", std::to_string(l.expiry_months));
    if (l.pending_days > 0) line("pending", quoted(std::to_string(l.pending_days) + "d"));
    if (l.inactivity_days > 0) line("inactivity", quoted(std::to_string(l.inactivity_days) + "d"));
    line("date_by", quoted(l.date_by_purchase ? "purchase" : "arrival"));
  }
  if (p.first_purchase_bonus_points > 0 || p.comeback_days > 0) {
    *s += "\n[program.bonuses]\n";
    if (p.first_purchase_bonus_points > 0) line("first_purchase", std::to_string(p.first_purchase_bonus_points));
    if (p.comeback_days > 0) {
      line("comeback", std::to_string(p.comeback_bonus_points));
      line("comeback_after", quoted(std::to_string(p.comeback_days) + "d"));
    }
  }
  const TierPolicy& tp = p.tier_policy;
  if (tp.windowed()) {
    *s += "\n[program.tier_window]\n";
    line("period", quoted(tp.period == TierPeriod::kCalendarYear ? "calendar_year" : "rolling"));
    if (tp.period == TierPeriod::kRollingMonths) line("months", std::to_string(tp.window_months));
    line("grace", quoted(std::to_string(tp.grace_days) + "d"));
  }
  if (p.membership_days > 0) {
    *s += "\n[program.membership]\n";
    line("days", quoted(std::to_string(p.membership_days) + "d"));
    line("multiplier", decimal_text(p.membership_multiplier_permille, 3, 1));
  }
  for (size_t i = 0; i < p.stamp_card_count; ++i) {
    const StampCard& card = p.stamp_cards[i];
    *s += "\n[[program.stamp_cards]]\n";
    line("name", quoted(card.name));
    line("stamps", std::to_string(card.stamps));
    if (c != nullptr) line("min_purchase", quoted(decimal_text(card.min_purchase_minor, c->minor_digits, c->minor_digits)));
    else line("min_purchase_minor", std::to_string(card.min_purchase_minor));
    line("reward", std::to_string(card.reward_points));
  }
  for (size_t i = 0; i < p.campaign_count; ++i) {
    const Campaign& c = p.campaigns[i];
    *s += "\n[[program.campaigns]]\n";
    line("name", quoted(c.name));
    line("from", format_day(c.first_day));
    line("until", format_day(c.last_day));
    line("multiplier", decimal_text(c.multiplier_permille, 3, 1));
  }
  *s += "\n[program.actions]\n";
  for (size_t kind = 1; kind < kActionKindCount; ++kind) {
    const ActionRule& a = p.actions[kind];
    if (a.points == 0 && a.limit_count == 0) continue;
    std::string value = "{ points = " + std::to_string(a.points);
    if (a.limit_count > 0) {
      value += ", limit = " + std::to_string(a.limit_count) +
               ", per_days = " + std::to_string(a.limit_period_days);
    }
    line(kActionKeys[kind], value + " }");
  }
  // A lone unnamed x1 base tier is what the loader assumes when tiers are left out.
  const TierRule& base = p.tiers[0];
  if (p.tier_count == 1 && base.name.empty() && base.multiplier_permille == 1000) return;
  for (size_t i = 0; i < p.tier_count; ++i) {
    *s += "\n[[program.tiers]]\n";
    line("name", quoted(p.tiers[i].name));
    line("threshold", std::to_string(p.tiers[i].threshold_points));
    line("multiplier", decimal_text(p.tiers[i].multiplier_permille, 3, 1));
    if (p.tiers[i].bonus_points > 0) line("bonus", std::to_string(p.tiers[i].bonus_points));
  }
}

}  // namespace

std::string programs_to_toml(const std::vector<Program>& programs) {
  std::string s = "# Tally loyalty programs (docs/programs.md).\n";
  for (const Program& p : programs) {
    s += "\n";
    write_program(p, &s);
  }
  return s;
}

}  // namespace tally
