// tally-export: committed events from a Tally server's change stream as JSON Lines or CSV
// (docs/events.md), from an LSN range or following live, exactly once into a file across
// restarts.
//
// Exactly once: with --out FILE the output's length and the last LSN written in it are recorded in
// a cursor file (FILE.cursor, or --cursor), made durable after the output (fdatasync of FILE, then
// the cursor written to a temporary file, fsynced and renamed over the old one). A restart reads
// the cursor, cuts FILE back to the recorded length (dropping lines written after the last cursor,
// which would otherwise appear twice), and resumes at the next LSN, checking that the server's
// next batch follows the hash recorded. So a kill at any moment leaves FILE, after the restart,
// holding every record exactly once, in log order.
//
// --name CONSUMER also keeps a durable cursor on the server (trimming waits for it, within the
// server's retention): acknowledged only after the local cursor is durable.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/event_format.h"
#include "tools/log_stream.h"

namespace {

using namespace tally;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitConnect = 3;
constexpr int kExitStream = 4;  // the stream failed or a check of it did
constexpr int kExitFile = 5;    // the output or cursor file could not be written

constexpr const char* kHelp = R"(tally-export: committed events of a Tally server as JSON Lines or CSV.

usage: tally-export [options]

Reads the server's change stream (docs/protocol.md, "Subscribe"): every committed event in log
order, each batch checked against the log's hash chain. A key of role replica reads every
program; a reader or operator key reads its own program's events only.

what to read:
  --from LSN        first log batch to export (default: the oldest the server holds)
  --to LSN          stop after this batch (default: the server's durable LSN at start)
  --follow          do not stop: follow the live log until SIGINT or SIGTERM
output:
  --format F        jsonl (default) or csv (with a header line)
  --out FILE        append to FILE (default: standard output, no cursor)
  --cursor FILE     where the position in FILE is kept (default: FILE.cursor). When it exists,
                    the export resumes after it, exactly: FILE is cut back to the length the
                    cursor recorded, and --from is ignored.
  --sync-ms N       with --follow, make FILE and its cursor durable at least every N ms
                    (default 200); always at the end
  --name CONSUMER   also keep a durable cursor on the server under this name, acknowledged
                    after each local sync, so the server keeps the log until it is exported
connection:
  --host H          server address (default 127.0.0.1)
  --port N          server port (default 7411)
  --key ID          API key id (default: $TALLY_KEY)
  --secret S        the key's secret (default: $TALLY_SECRET; prefer the environment)
  --tls             TLS, verifying the server (--tls-ca FILE, --tls-name NAME as for tally)
  --tls-ca FILE
  --tls-name NAME
  -h, --help        this text

exit status: 0 done; 2 usage; 3 cannot connect, authenticate or subscribe (a trimmed LSN says
which is the oldest available); 4 the stream broke or failed a check; 5 a file error.

examples:
  TALLY_KEY=5 TALLY_SECRET=... tally-export --out events.jsonl
  tally-export --follow --format csv --out events.csv --name warehouse
)";

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int usage_error(const std::string& m) {
  std::fprintf(stderr, "tally-export: %s (see --help)\n", m.c_str());
  return kExitUsage;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

struct Cursor {
  uint64_t lsn = 0;     // the last batch whose records are in the file
  uint64_t hash = 0;    // its hash (the next batch must follow it)
  uint64_t offset = 0;  // the file's length after it
  std::string format;
};

// "tally-export-cursor 1 lsn=N hash=H offset=O format=F\n"
std::optional<Cursor> read_cursor(const std::string& path, std::string* error) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) {
    if (errno != ENOENT) *error = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  char fmt[16] = {};
  Cursor c;
  int n = std::fscanf(f, "tally-export-cursor 1 lsn=%lu hash=%lu offset=%lu format=%15s", &c.lsn, &c.hash, &c.offset, fmt);
  std::fclose(f);
  if (n != 4) {
    *error = path + ": not a tally-export cursor file";
    return std::nullopt;
  }
  c.format = fmt;
  return c;
}

bool fsync_dir_of(const std::string& path) {
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

bool write_cursor(const std::string& path, const Cursor& c, std::string* error) {
  std::string tmp = path + ".tmp";
  char line[160];
  int n = std::snprintf(line, sizeof line, "tally-export-cursor 1 lsn=%lu hash=%lu offset=%lu format=%s\n", c.lsn,
                        c.hash, c.offset, c.format.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  bool ok = fd >= 0 && ::write(fd, line, static_cast<size_t>(n)) == n && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0 && fsync_dir_of(path);
  if (!ok) *error = path + ": " + std::strerror(errno);
  return ok;
}

bool write_all(int fd, const std::string& s) {
  size_t at = 0;
  while (at < s.size()) {
    ssize_t w = ::write(fd, s.data() + at, s.size() - at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    at += static_cast<size_t>(w);
  }
  return true;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int run(int argc, char** argv) {
  LogStreamOptions so;
  so.client.host = "127.0.0.1";
  so.client.port = 7411;
  std::optional<uint64_t> from, to;
  bool follow = false, csv = false;
  std::string out_path, cursor_path, name;
  int64_t sync_ms = 200;
  std::optional<std::string> key, secret;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return kExitOk;
    }
    if (a == "--follow") {
      follow = true;
      continue;
    }
    if (a == "--tls") {
      so.client.tls = true;
      continue;
    }
    std::optional<std::string> v = value();
    if (!v) return usage_error(std::string(a) + " needs a value, or is not an option");
    if (a == "--from" || a == "--to" || a == "--port" || a == "--sync-ms") {
      std::optional<uint64_t> n = parse_u64(*v);
      if (!n) return usage_error("bad " + std::string(a) + " '" + *v + "': a whole number");
      if (a == "--from") from = *n;
      if (a == "--to") to = *n;
      if (a == "--sync-ms") sync_ms = static_cast<int64_t>(*n);
      if (a == "--port") {
        if (*n == 0 || *n > 65535) return usage_error("bad --port '" + *v + "' (1-65535)");
        so.client.port = static_cast<uint16_t>(*n);
      }
    } else if (a == "--format") {
      if (*v != "jsonl" && *v != "csv") return usage_error("--format must be jsonl or csv");
      csv = *v == "csv";
    } else if (a == "--out") {
      out_path = *v;
    } else if (a == "--cursor") {
      cursor_path = *v;
    } else if (a == "--name") {
      if (!net::valid_consumer_name(*v)) return usage_error("--name: 1 to 64 of A-Z a-z 0-9 . _ -");
      name = *v;
    } else if (a == "--host") {
      so.client.host = *v;
    } else if (a == "--key") {
      key = *v;
    } else if (a == "--secret") {
      secret = *v;
      std::memset(argv[i], 'x', std::strlen(argv[i]));  // not left readable in /proc/PID/cmdline
    } else if (a == "--tls-ca") {
      so.client.tls_ca_file = *v;
    } else if (a == "--tls-name") {
      so.client.tls_server_name = *v;
    } else {
      return usage_error("unknown option " + std::string(a));
    }
  }
  if (!key && std::getenv("TALLY_KEY")) key = std::getenv("TALLY_KEY");
  if (!secret && std::getenv("TALLY_SECRET")) secret = std::getenv("TALLY_SECRET");
  if (!key) return usage_error("--key ID is needed (or TALLY_KEY in the environment)");
  if (!secret) return usage_error("--secret S is needed (or, better, TALLY_SECRET in the environment)");
  std::optional<uint64_t> key_id = parse_u64(*key);
  if (!key_id || *key_id > UINT32_MAX) return usage_error("bad --key '" + *key + "'");
  so.client.key_id = static_cast<uint32_t>(*key_id);
  so.client.secret = *secret;
  if (follow && to) return usage_error("--follow and --to exclude each other");
  if (!cursor_path.empty() && out_path.empty()) return usage_error("--cursor needs --out");
  if (!out_path.empty() && cursor_path.empty()) cursor_path = out_path + ".cursor";
  const std::string format = csv ? "csv" : "jsonl";

  // The output, cut back to the cursor when resuming.
  int out_fd = STDOUT_FILENO;
  std::optional<Cursor> cursor;
  if (!out_path.empty()) {
    std::string error;
    cursor = read_cursor(cursor_path, &error);
    if (!error.empty()) {
      std::fprintf(stderr, "tally-export: %s\n", error.c_str());
      return kExitFile;
    }
    if (cursor && cursor->format != format) {
      std::fprintf(stderr, "tally-export: %s was written as %s; resume it with --format %s\n", out_path.c_str(),
                   cursor->format.c_str(), cursor->format.c_str());
      return kExitUsage;
    }
    out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT, 0644);
    if (out_fd < 0) {
      std::fprintf(stderr, "tally-export: %s: %s\n", out_path.c_str(), std::strerror(errno));
      return kExitFile;
    }
    struct stat st {};
    ::fstat(out_fd, &st);
    uint64_t keep = cursor ? cursor->offset : 0;
    if (!cursor && st.st_size > 0) {
      std::fprintf(stderr, "tally-export: %s is not empty and has no cursor (%s): refusing to append to it\n",
                   out_path.c_str(), cursor_path.c_str());
      return kExitFile;
    }
    if (static_cast<uint64_t>(st.st_size) < keep) {
      std::fprintf(stderr, "tally-export: %s is shorter (%lld bytes) than its cursor says (%lu): it was changed\n",
                   out_path.c_str(), static_cast<long long>(st.st_size), keep);
      return kExitFile;
    }
    if (::ftruncate(out_fd, static_cast<off_t>(keep)) != 0 || ::lseek(out_fd, static_cast<off_t>(keep), SEEK_SET) < 0) {
      std::fprintf(stderr, "tally-export: %s: %s\n", out_path.c_str(), std::strerror(errno));
      return kExitFile;
    }
    if (cursor) {
      if (from) std::fprintf(stderr, "tally-export: resuming after LSN %lu from %s; --from ignored\n", cursor->lsn, cursor_path.c_str());
      so.request.from_lsn = cursor->lsn + 1;
      if (cursor->hash != 0) so.prev_hash = cursor->hash;  // 0: nothing exported yet
    }
  }
  if (!cursor) so.request.from_lsn = from.value_or(0);
  so.request.name = name;

  LogStream stream;
  if (net::ClientError e = stream.open(so)) {
    std::fprintf(stderr, "tally-export: %s:%u: %s\n", so.client.host.c_str(), so.client.port, e.message.c_str());
    return kExitConnect;
  }
  uint64_t end = follow ? UINT64_MAX : to.value_or(stream.reply().durable_lsn);
  if (!out_path.empty() && !cursor) {
    // Before the first byte: a kill from here on finds a cursor, and cuts the file back to it.
    std::string error;
    if (!write_cursor(cursor_path, Cursor{stream.reply().start_lsn - 1, 0, 0, format}, &error)) {
      std::fprintf(stderr, "tally-export: %s\n", error.c_str());
      return kExitFile;
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  Cursor pos = cursor.value_or(Cursor{stream.reply().start_lsn - 1, 0, 0, format});
  pos.format = format;
  uint64_t synced_lsn = pos.lsn;
  std::string buf;
  if (csv && pos.offset == 0) buf = csv_header() + "\n";
  uint64_t records = 0;
  int64_t last_sync = now_ms();
  auto sync = [&]() -> int {
    if (!buf.empty()) {
      if (!write_all(out_fd, buf)) {
        std::fprintf(stderr, "tally-export: writing %s: %s\n", out_path.empty() ? "stdout" : out_path.c_str(),
                     std::strerror(errno));
        return kExitFile;
      }
      pos.offset += buf.size();
      buf.clear();
    }
    last_sync = now_ms();
    if (out_path.empty() || pos.lsn == synced_lsn) return kExitOk;
    std::string error;
    if (::fdatasync(out_fd) != 0 || !write_cursor(cursor_path, pos, &error)) {
      std::fprintf(stderr, "tally-export: %s\n", error.empty() ? std::strerror(errno) : error.c_str());
      return kExitFile;
    }
    synced_lsn = pos.lsn;
    if (!name.empty()) (void)stream.ack(pos.lsn);  // best effort: the local cursor is what resumes
    return kExitOk;
  };
  StreamBatch b;
  while (!g_stop && stream.next_lsn() <= end) {
    bool got = false;
    net::ClientError e = stream.next(&b, 100, &got);
    if (e) {
      int rc = sync();
      std::fprintf(stderr, "tally-export: %s\n", e.message.c_str());
      return rc != kExitOk ? rc : kExitStream;
    }
    if (got) {
      for (uint32_t i = 0; i < b.records.size(); ++i) {
        // A filtered batch's records keep no index of their own batch: they count among the kept.
        RecordPos at{b.header.lsn, i, b.header.epoch};
        if (csv) {
          append_csv(buf, b.records[i], at);
        } else {
          append_json(buf, b.records[i], at);
        }
        buf += '\n';
      }
      records += b.records.size();
      pos.lsn = b.header.lsn;
      pos.hash = b.header.hash;
      if (out_path.empty() && buf.size() >= (64u << 10)) {
        if (int rc = sync()) return rc;
      }
    }
    if (buf.size() >= (1u << 20) || now_ms() - last_sync >= sync_ms || (!got && !buf.empty())) {
      if (int rc = sync()) return rc;
    }
  }
  if (int rc = sync()) return rc;
  std::fprintf(stderr, "tally-export: %lu records, through LSN %lu\n", records, pos.lsn);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally-export: %s\n", e.what());
    return kExitStream;
  }
}
