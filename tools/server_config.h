// Tally tools: tallyd's configuration — a TOML file (docs/operations.md), command-line
// overrides, and the embedded default it runs on when given nothing.
//
// Errors are values: the loaders return false and fill a ConfigError naming file, line, column
// and the dotted key, like the program loader (tools/program_config.h). Stateless; any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/program.h"
#include "net/server.h"
#include "tools/program_config.h"

namespace tally {

struct TallydConfig {
  std::string source = "embedded default";  // the file it came from
  // [server]
  std::string listen_host = "127.0.0.1";
  uint16_t port = 7411;
  uint16_t workers = 1;
  net::BackendKind backend = net::BackendKind::kUring;
  std::string programs_file;  // empty: the built-in demo program
  // [storage]
  std::string data_dir = "tally-data";
  uint16_t shards = 1;
  uint64_t references_max = 10'000'000;
  uint64_t txn_bytes_max = 8u << 20;
  uint64_t txn_effects_max = 65536;
  uint64_t checkpoint_interval_bytes = 512ull << 20;
  bool history_index = true;  // statements and order lookups that outlive trimming (docs/history.md)
  bool unsafe_no_sync = false;
  // [replication] (docs/replication.md)
  uint32_t sync_followers = 0;        // 0: asynchronous; N: a reply waits for N followers' fsync
  int64_t sync_degrade_after_ms = 0;  // 0: wait for them forever (block); else degrade, loudly
  // [limits]
  net::ServerLimits limits;
  // [tls]: both paths, or neither (plain TCP). Loaded with the file: a certificate or key that
  // cannot be used is a configuration error naming it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::shared_ptr<net::TlsServerContext> tls;
  // [[key]]
  std::vector<net::ApiKey> keys;
  // Loaded from programs_file (or the demo program).
  std::vector<Program> programs;
  // The embedded default only: the demo keys' secrets, printed at start-up.
  std::vector<std::pair<uint32_t, std::string>> demo_secrets;
};

// The embedded default: loopback, ./tally-data, one shard, the demo program and two demo keys
// (pos and operator) whose secrets are printed at start-up.
TallydConfig default_tallyd_config();

// Reads a tallyd TOML file. Relative paths in it (programs, data_dir, tls) are relative to the
// file's directory. Loads the programs file and the TLS files it names. On failure *out is
// untouched.
[[nodiscard]] bool load_tallyd_config_file(const std::string& path, TallydConfig* out, ConfigError* err);
[[nodiscard]] bool load_tallyd_config_string(std::string_view toml, std::string_view source_name,
                                             const std::string& base_dir, TallydConfig* out, ConfigError* err);

// "HOST:PORT" or "[V6]:PORT"; port 0 = any free port.
[[nodiscard]] bool parse_listen(std::string_view text, std::string* host, uint16_t* port);
// A byte size: an integer, or a string with a unit: "64KiB", "16MiB", "1GiB".
[[nodiscard]] bool parse_bytes(std::string_view text, uint64_t* bytes);
// Every key's program is among the programs; ids distinct; at least one key. Empty when fine,
// else a sentence.
std::string check_tallyd_config(const TallydConfig& c);

}  // namespace tally
