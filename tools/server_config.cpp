// tallyd's configuration file (docs/operations.md): [server], [storage], [limits], [tls], [[key]].
//
// The walk is strict like the program loader's: unknown keys and tables are errors, every value
// is range-checked, and the first error is reported with its position. toml++ reports parse
// errors as exceptions; they are caught here.
#include "tools/server_config.h"

#include <toml++/toml.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace tally {
namespace {

// Secrets of the embedded default's demo keys: printed at start-up, loopback only.
constexpr const char* kDemoPosSecret = "demo-pos-secret";
constexpr const char* kDemoOperatorSecret = "demo-operator-secret";

class Walker {
 public:
  Walker(std::string_view source, ConfigError* err) : source_(source), err_(err) {}

  bool fail(const toml::node* at, std::string field, std::string message) {
    *err_ = ConfigError{std::string(source_), at ? static_cast<int>(at->source().begin.line) : 0,
                        at ? static_cast<int>(at->source().begin.column) : 0, std::move(field),
                        std::move(message)};
    return false;
  }
  // Every key of `t` must be one of `known`.
  bool only(const toml::table& t, const std::string& path, std::initializer_list<std::string_view> known) {
    for (auto&& [k, v] : t) {
      bool ok = false;
      for (std::string_view n : known) ok |= k.str() == n;
      if (!ok) return fail(&v, path.empty() ? std::string(k.str()) : path + "." + std::string(k.str()), "unknown key");
    }
    return true;
  }
  template <class T>
  bool integer(const toml::table& t, const std::string& path, std::string_view key, int64_t lo, int64_t hi, T* out) {
    const toml::node* v = t.get(key);
    if (!v) return true;
    std::string f = path + "." + std::string(key);
    auto i = v->value<int64_t>();
    if (!v->is_integer() || !i) return fail(v, f, "must be an integer");
    if (*i < lo || *i > hi)
      return fail(v, f, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    *out = static_cast<T>(*i);
    return true;
  }
  bool string(const toml::table& t, const std::string& path, std::string_view key, std::string* out) {
    const toml::node* v = t.get(key);
    if (!v) return true;
    if (!v->is_string()) return fail(v, path + "." + std::string(key), "must be a string");
    *out = *v->value<std::string>();
    return true;
  }
  bool boolean(const toml::table& t, const std::string& path, std::string_view key, bool* out) {
    const toml::node* v = t.get(key);
    if (!v) return true;
    if (!v->is_boolean()) return fail(v, path + "." + std::string(key), "must be true or false");
    *out = *v->value<bool>();
    return true;
  }
  bool bytes(const toml::table& t, const std::string& path, std::string_view key, uint64_t lo, uint64_t hi, uint64_t* out) {
    const toml::node* v = t.get(key);
    if (!v) return true;
    std::string f = path + "." + std::string(key);
    uint64_t b = 0;
    if (v->is_integer() && *v->value<int64_t>() >= 0) {
      b = static_cast<uint64_t>(*v->value<int64_t>());
    } else if (!v->is_string() || !parse_bytes(*v->value<std::string>(), &b)) {
      return fail(v, f, "must be a byte size: an integer or a string such as \"64KiB\", \"16MiB\", \"1GiB\"");
    }
    if (b < lo || b > hi) return fail(v, f, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " bytes");
    *out = b;
    return true;
  }
  bool duration(const toml::table& t, const std::string& path, std::string_view key, int64_t lo, int64_t hi, int64_t* out) {
    const toml::node* v = t.get(key);
    if (!v) return true;
    std::string f = path + "." + std::string(key);
    int64_t ms = 0;
    if (!v->is_string() || !parse_duration_ms(*v->value<std::string>(), &ms))
      return fail(v, f, "must be a duration such as \"500ms\", \"5s\", \"10m\"");
    if (ms < lo || ms > hi) return fail(v, f, "out of range (" + std::to_string(lo) + " ms to " + std::to_string(hi) + " ms)");
    *out = ms;
    return true;
  }

 private:
  std::string_view source_;
  ConfigError* err_;
};

bool load_tables(Walker& w, const toml::table& root, const std::string& base_dir, TallydConfig* c) {
  if (!w.only(root, "", {"server", "storage", "replication", "limits", "tls", "key"})) return false;
  if (const toml::node* n = root.get("server")) {
    if (!n->is_table()) return w.fail(n, "server", "must be a table");
    const toml::table& t = *n->as_table();
    if (!w.only(t, "server", {"listen", "workers", "backend", "programs"})) return false;
    std::string listen, backend;
    if (!w.string(t, "server", "listen", &listen)) return false;
    if (!listen.empty() && !parse_listen(listen, &c->listen_host, &c->port))
      return w.fail(t.get("listen"), "server.listen", "must be HOST:PORT, e.g. \"127.0.0.1:7411\" or \"[::1]:7411\"");
    if (!w.integer(t, "server", "workers", 1, 64, &c->workers)) return false;
    if (!w.string(t, "server", "backend", &backend)) return false;
    if (backend == "asio") {
      c->backend = net::BackendKind::kAsio;
    } else if (backend == "io_uring") {
      c->backend = net::BackendKind::kUring;
    } else if (!backend.empty()) {
      return w.fail(t.get("backend"), "server.backend", "must be \"io_uring\" or \"asio\"");
    }
    std::string programs;
    if (!w.string(t, "server", "programs", &programs)) return false;
    if (!programs.empty()) c->programs_file = std::filesystem::path(programs).is_absolute() ? programs : base_dir + "/" + programs;
  }
  if (const toml::node* n = root.get("storage")) {
    if (!n->is_table()) return w.fail(n, "storage", "must be a table");
    const toml::table& t = *n->as_table();
    if (!w.only(t, "storage", {"data_dir", "shards", "references_max", "commit_bytes_max", "commit_events_max",
                               "checkpoint_interval", "history_index", "unsafe_no_sync"}))
      return false;
    std::string dir;
    if (!w.string(t, "storage", "data_dir", &dir)) return false;
    if (!dir.empty()) c->data_dir = std::filesystem::path(dir).is_absolute() ? dir : base_dir + "/" + dir;
    if (!w.integer(t, "storage", "shards", 1, 256, &c->shards)) return false;
    if (!w.integer(t, "storage", "references_max", 1024, int64_t{1} << 36, &c->references_max)) return false;
    if (!w.bytes(t, "storage", "commit_bytes_max", 64u << 10, 1u << 30, &c->txn_bytes_max)) return false;
    if (!w.integer(t, "storage", "commit_events_max", 1, 1 << 24, &c->txn_effects_max)) return false;
    if (!w.bytes(t, "storage", "checkpoint_interval", 1u << 20, uint64_t{1} << 40, &c->checkpoint_interval_bytes)) return false;
    if (!w.boolean(t, "storage", "history_index", &c->history_index)) return false;
    if (!w.boolean(t, "storage", "unsafe_no_sync", &c->unsafe_no_sync)) return false;
  }
  if (const toml::node* n = root.get("replication")) {
    if (!n->is_table()) return w.fail(n, "replication", "must be a table");
    const toml::table& t = *n->as_table();
    if (!w.only(t, "replication", {"sync_followers", "degrade_after"})) return false;
    if (!w.integer(t, "replication", "sync_followers", 0, 16, &c->sync_followers)) return false;
    if (!w.duration(t, "replication", "degrade_after", 0, 7 * kMsPerDay, &c->sync_degrade_after_ms)) return false;
  }
  if (const toml::node* n = root.get("limits")) {
    if (!n->is_table()) return w.fail(n, "limits", "must be a table");
    const toml::table& t = *n->as_table();
    net::ServerLimits& l = c->limits;
    if (!w.only(t, "limits", {"frame_bytes_max", "events_per_frame_max", "connections_max",
                              "connection_inflight_bytes_max", "memory_budget", "requests_inflight_max",
                              "program_inflight_events_max", "handshake_timeout", "idle_timeout",
                              "frame_timeout", "auth_failures_per_minute_max"}))
      return false;
    uint64_t b = l.frame.body_bytes_max;
    if (!w.bytes(t, "limits", "frame_bytes_max", 4096, net::kBodyBytesLimit, &b)) return false;
    l.frame.body_bytes_max = static_cast<uint32_t>(b);
    if (!w.integer(t, "limits", "events_per_frame_max", 1, net::kBodyBytesLimit / net::kEventRecordBytes,
                   &l.frame.events_per_frame_max))
      return false;
    if (!w.integer(t, "limits", "connections_max", 1, 1'000'000, &l.connections_max)) return false;
    b = l.connection_inflight_bytes_max;
    if (!w.bytes(t, "limits", "connection_inflight_bytes_max", 64u << 10, uint64_t{1} << 34, &b)) return false;
    l.connection_inflight_bytes_max = b;
    b = l.memory_budget_bytes;
    if (!w.bytes(t, "limits", "memory_budget", 1u << 20, uint64_t{1} << 40, &b)) return false;
    l.memory_budget_bytes = b;
    if (!w.integer(t, "limits", "requests_inflight_max", 16, 1 << 24, &l.requests_inflight_max)) return false;
    if (!w.integer(t, "limits", "program_inflight_events_max", 1, int64_t{1} << 40, &l.program_inflight_events_max))
      return false;
    if (!w.duration(t, "limits", "handshake_timeout", 100, 3'600'000, &l.handshake_timeout_ms)) return false;
    if (!w.duration(t, "limits", "idle_timeout", 1000, 7 * kMsPerDay, &l.idle_timeout_ms)) return false;
    if (!w.duration(t, "limits", "frame_timeout", 100, 3'600'000, &l.frame_timeout_ms)) return false;
    if (!w.integer(t, "limits", "auth_failures_per_minute_max", 1, 1'000'000, &l.auth_failures_per_minute_max))
      return false;
    if (size_t{l.frame.events_per_frame_max} * net::kEventRecordBytes > l.frame.body_bytes_max)
      return w.fail(t.get("events_per_frame_max"), "limits.events_per_frame_max",
                    "that many events do not fit in frame_bytes_max (96 bytes each)");
  }
  if (const toml::node* n = root.get("tls")) {
    if (!n->is_table()) return w.fail(n, "tls", "must be a table");
    const toml::table& t = *n->as_table();
    if (!w.only(t, "tls", {"cert", "key"})) return false;
    for (const char* req : {"cert", "key"})
      if (!t.get(req))
        return w.fail(&t, std::string("tls.") + req, "missing ([tls] needs both cert and key)");
    std::string cert, key;
    if (!w.string(t, "tls", "cert", &cert) || !w.string(t, "tls", "key", &key)) return false;
    if (cert.empty()) return w.fail(t.get("cert"), "tls.cert", "must be a path");
    if (key.empty()) return w.fail(t.get("key"), "tls.key", "must be a path");
    auto resolve = [&](const std::string& p) {
      return std::filesystem::path(p).is_absolute() ? p : base_dir + "/" + p;
    };
    c->tls_cert_file = resolve(cert);
    c->tls_key_file = resolve(key);
    // Loaded now, so that a file that is unreadable, not PEM or not a pair stops the start with
    // its name, instead of failing every client's handshake later.
    std::string why;
    net::TlsServerContext::Input culprit = net::TlsServerContext::Input::kNone;
    c->tls = net::TlsServerContext::from_files(c->tls_cert_file, c->tls_key_file, &why, &culprit);
    if (!c->tls) {
      bool key_at_fault = culprit == net::TlsServerContext::Input::kPrivateKey;
      return w.fail(t.get(key_at_fault ? "key" : "cert"), key_at_fault ? "tls.key" : "tls.cert",
                    why);
    }
  }
  if (const toml::node* n = root.get("key")) {
    const toml::array* keys = n->as_array();
    if (!keys || !keys->is_array_of_tables()) return w.fail(n, "key", "must be a list of [[key]] tables");
    std::set<uint32_t> seen;
    for (size_t i = 0; i < keys->size(); ++i) {
      const toml::table& t = *keys->get(i)->as_table();
      std::string path = "key[" + std::to_string(i) + "]";
      if (!w.only(t, path, {"id", "program", "role", "verifier"})) return false;
      net::ApiKey k;
      for (const char* req : {"id", "program", "role", "verifier"})
        if (!t.get(req)) return w.fail(&t, path + "." + req, "missing (this key is required)");
      if (!w.integer(t, path, "id", 1, UINT32_MAX, &k.id)) return false;
      if (!seen.insert(k.id).second) return w.fail(t.get("id"), path + ".id", "another key has this id");
      if (!w.integer(t, path, "program", 1, UINT32_MAX, &k.program)) return false;
      std::string role, verifier;
      if (!w.string(t, path, "role", &role) || !w.string(t, path, "verifier", &verifier)) return false;
      if (role == "pos") {
        k.role = net::Role::kPos;
      } else if (role == "operator") {
        k.role = net::Role::kOperator;
      } else if (role == "reader") {
        k.role = net::Role::kReader;
      } else if (role == "replica") {
        k.role = net::Role::kReplica;
      } else {
        return w.fail(t.get("role"), path + ".role", "must be \"pos\", \"operator\", \"reader\" or \"replica\"");
      }
      std::optional<net::scram::Verifier> v = net::scram::parse_verifier(verifier);
      if (!v)
        return w.fail(t.get("verifier"), path + ".verifier",
                      "not a SCRAM-SHA-256 verifier (make one with `tallyd make-key`; never put a secret here)");
      k.verifier = *v;
      c->keys.push_back(k);
    }
  }
  return true;
}

}  // namespace

TallydConfig default_tallyd_config() {
  TallydConfig c;
  c.programs = {default_program()};
  auto demo = [&](uint32_t id, net::Role role, const char* secret) {
    // The demo salt is fixed so that start-up is deterministic; these keys are for loopback demos.
    std::optional<net::scram::Verifier> v = net::scram::make_verifier(secret, "tally-demo-salt!", net::scram::kIterationsDefault);
    c.keys.push_back({id, c.programs[0].id, role, *v});
    c.demo_secrets.emplace_back(id, secret);
  };
  demo(1, net::Role::kPos, kDemoPosSecret);
  demo(2, net::Role::kOperator, kDemoOperatorSecret);
  return c;
}

bool parse_listen(std::string_view text, std::string* host, uint16_t* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return false;
  std::string_view h = text.substr(0, colon), p = text.substr(colon + 1);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string_view::npos) {
    return false;  // an IPv6 address needs brackets
  }
  uint32_t v = 0;
  for (char ch : p) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + static_cast<uint32_t>(ch - '0');
    if (v > 65535) return false;
  }
  *host = std::string(h);
  *port = static_cast<uint16_t>(v);
  return true;
}

bool parse_bytes(std::string_view text, uint64_t* bytes) {
  size_t i = 0;
  uint64_t v = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (i == 0) return false;
  std::string_view unit = text.substr(i);
  uint64_t mul = unit.empty() || unit == "B" ? 1 : unit == "KiB" ? 1ull << 10 : unit == "MiB" ? 1ull << 20 : unit == "GiB" ? 1ull << 30 : unit == "TiB" ? 1ull << 40 : 0;
  if (mul == 0 || v > UINT64_MAX / mul) return false;
  *bytes = v * mul;
  return true;
}

std::string check_tallyd_config(const TallydConfig& c) {
  if (c.keys.empty()) return "no [[key]] is configured: no client could connect";
  for (const net::ApiKey& k : c.keys) {
    bool found = false;
    for (const Program& p : c.programs) found |= p.id == k.program;
    if (!found) return "key " + std::to_string(k.id) + " names program " + std::to_string(k.program) + ", which is not defined";
  }
  return "";
}

bool load_tallyd_config_string(std::string_view toml, std::string_view source_name, const std::string& base_dir,
                               TallydConfig* out, ConfigError* err) {
  Walker w(source_name, err);
  TallydConfig c;
  c.source = std::string(source_name);
  c.data_dir = base_dir + "/tally-data";
  if (toml.size() > kConfigBytesMax) return w.fail(nullptr, "", "larger than " + std::to_string(kConfigBytesMax) + " bytes");
  try {
    toml::table root = toml::parse(toml, source_name);
    if (!load_tables(w, root, base_dir, &c)) return false;
  } catch (const toml::parse_error& e) {
    *err = ConfigError{std::string(source_name), static_cast<int>(e.source().begin.line),
                       static_cast<int>(e.source().begin.column), "", std::string(e.description())};
    return false;
  }
  if (c.programs_file.empty()) {
    c.programs = {default_program()};
  } else if (!load_programs_file(c.programs_file, &c.programs, err)) {
    return false;
  }
  if (std::string why = check_tallyd_config(c); !why.empty()) {
    *err = ConfigError{std::string(source_name), 0, 0, "", why};
    return false;
  }
  *out = std::move(c);
  return true;
}

bool load_tallyd_config_file(const std::string& path, TallydConfig* out, ConfigError* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = ConfigError{path, 0, 0, "", std::string("cannot open: ") + std::strerror(errno)};
    return false;
  }
  std::string text(kConfigBytesMax + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  std::string base = std::filesystem::absolute(path).parent_path().string();
  return load_tallyd_config_string(text, path, base, out, err);
}

}  // namespace tally
