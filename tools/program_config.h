// Tally tools: loading loyalty program definitions (tally::Program) from TOML files.
//
// The engine takes a Program as plain data and knows nothing of files or parsers; this loader, used
// by the tools that start a server, turns an operator's hand-written TOML file into Programs. The
// format, every key with its unit, default and range, is documented in docs/programs.md; a
// commented example is tools/programs.example.toml.
//
// Errors are values: every function here returns false and fills a ConfigError that names the
// file, line, column and the dotted path of the offending field. No exception escapes. Money and
// multipliers are parsed exactly from their decimal text, never through floating point. The
// functions are stateless and may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/program.h"

namespace tally {

// Why a configuration was refused, and where.
struct ConfigError {
  std::string file;     // the file name, or the source name given to load_programs_string
  int line = 0;         // 1-based; 0 = the error concerns the whole file (e.g. it cannot be read)
  int column = 0;       // 1-based; 0 = unknown
  std::string field;    // dotted path, e.g. "program[0].tiers[2].multiplier"; empty if none
  std::string message;  // a sentence saying what is wrong and, where it helps, what is expected

  // "programs.toml:12:14: program[0].tiers[2].multiplier: must be between 0.001 and 100"
  // (the line, column and field parts are left out when unknown).
  std::string to_string() const;
};

// Largest configuration file accepted, and the most programs one file may define.
constexpr size_t kConfigBytesMax = 1 << 20;
constexpr size_t kConfigProgramsMax = 1024;
// Longest program or tier name, in bytes of UTF-8.
constexpr size_t kConfigNameBytesMax = 64;

// Reads the programs defined in the TOML file at `path`. On success replaces *out with them, in
// the order of the file, each one accepted by validate(), with distinct ids. On failure leaves *out
// untouched (a reload that fails keeps the programs in use) and describes the first error in *err.
[[nodiscard]] bool load_programs_file(const std::string& path, std::vector<Program>* out,
                                      ConfigError* err);

// The same for TOML text held in memory; `source_name` stands for the file name in errors.
[[nodiscard]] bool load_programs_string(std::string_view toml, std::string_view source_name,
                                        std::vector<Program>* out, ConfigError* err);

// Writes programs in the format the loader reads, every key explicit: loading the text gives back
// equal programs. Programs must pass validate().
std::string programs_to_toml(const std::vector<Program>& programs);

// ---- Building blocks of the format, exposed for tests and other tools -------------------------

// An ISO 4217 currency the loader knows by its alphabetic code.
struct CurrencyInfo {
  std::string_view code;  // "EUR"
  uint16_t numeric;       // 978
  uint8_t minor_digits;   // decimals of the minor unit: 2 for EUR (cents), 0 for JPY, 3 for KWD
};
// The currency with this alphabetic code (upper case, exactly) or numeric code, or nullptr.
const CurrencyInfo* find_currency(std::string_view code);
const CurrencyInfo* find_currency_numeric(uint16_t numeric);

// Parses a plain decimal ("12", "1.25", "0.005": digits, optionally a point and more digits; no
// sign, exponent or separators) scaled by 10^scale_digits: "1.25" with 3 gives 1250. Refuses text
// with more than scale_digits decimals and results above INT64_MAX. Exact: no floating point.
[[nodiscard]] bool parse_decimal_scaled(std::string_view text, int scale_digits, int64_t* scaled);

// Parses a duration: a whole number and one unit, ms, s, m, h or d ("45s", "30m", "400d"), into
// milliseconds. Refuses anything else, and values above INT64_MAX milliseconds.
[[nodiscard]] bool parse_duration_ms(std::string_view text, int64_t* ms);

// Parses a fixed UTC offset "+HH:MM" or "-HH:MM" (hours 00-14, minutes 00-59) into minutes.
[[nodiscard]] bool parse_utc_offset_minutes(std::string_view text, int32_t* minutes);

}  // namespace tally
