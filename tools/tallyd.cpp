// tallyd: the Tally server. Opens (and recovers) the durable ledger, listens for clients of the
// binary protocol (docs/protocol.md), and runs until SIGTERM or SIGINT, when it stops accepting,
// answers and commits everything in flight, and exits 0. SIGHUP re-reads the configuration
// file's keys (rotation and revocation without a restart). If the durable log fails, every
// unanswered request gets storage_failed, every client an error, and tallyd exits 1.
//
// Threads: the main thread handles signals and sends the shards their clock ticks; the network
// workers and the ledger's threads do the rest.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "net/scram.h"
#include "net/tcp_server.h"
#include "tools/follower.h"
#include "tools/ledger_service.h"
#include "tools/server_config.h"

namespace {

using namespace tally;

constexpr const char* kUsage = R"(Usage: tallyd [options]
       tallyd make-key --id N --program P --role pos|operator|reader|replica

Runs the Tally server: a durable, sharded loyalty-points ledger behind the binary TCP protocol
(docs/protocol.md). Every acknowledged event is in the durable log (LMDB, fsync) first.

With no --config it runs on its embedded default: listens on 127.0.0.1:7411, keeps its data in
./tally-data, one shard, the built-in demo program (id 1, EUR, 1 point per euro, 50 points
sign-up bonus) and two demo keys whose secrets it prints. For anything but a demo, write a
configuration file (docs/operations.md; an example is tools/tallyd.example.toml).

Options (each overrides the configuration file):
  --config FILE      TOML configuration: [server], [storage], [limits], [tls], [[key]]
  --listen HOST:PORT address to listen on (port 0: any free port, printed at start-up)
  --data DIR         data directory (created if missing)
  --shards N         shard threads (1-256); a data directory keeps the count it was made with
  --workers N        network threads (1-64)
  --backend NAME     io_uring (default; falls back to asio, loudly, where the kernel refuses it)
                     or asio
  --programs FILE    program definitions (docs/programs.md)
  --follow HOST:PORT run as a follower of that primary (docs/replication.md): replicate its
                     log into --data, serve reads, answer writes not_primary. Needs a replica
                     key of the primary: --follow-key ID and its secret in $TALLY_FOLLOW_SECRET
                     (or --follow-secret-file FILE). Shards and programs must be the primary's.
  --follow-key ID
  --follow-secret-file FILE
  --sync-followers N a primary: release each reply only once N followers have its batch on
                     their disk (semi-synchronous; 0, the default, is asynchronous)
  -h, --help         this text

Signals: SIGTERM/SIGINT stop gracefully (exit 0); SIGHUP reloads the keys of --config.

make-key: prints a [[key]] block for the configuration, with a fresh random secret that is
shown once and never stored (the server keeps only its SCRAM-SHA-256 verifier). Give the secret
to the client; `tally --key N --secret S` uses it. To keep a secret you chose, pipe it in:
  echo -n 'my-secret' | tallyd make-key --id 7 --program 1 --role pos --secret-stdin
)";

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "tallyd: %s (see tallyd --help)\n", what.c_str());
  std::exit(2);
}

bool parse_u64(const char* text, uint64_t lo, uint64_t hi, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi || text[0] == '-') return false;
  *out = v;
  return true;
}

int make_key(int argc, char** argv) {
  uint64_t id = 0, program = 0;
  std::string role;
  bool from_stdin = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--secret-stdin") {
      from_stdin = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) usage_error(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--id") {
      if (!parse_u64(v, 1, UINT32_MAX, &id)) usage_error("bad --id '" + std::string(v) + "'");
    } else if (a == "--program") {
      if (!parse_u64(v, 1, UINT32_MAX, &program)) usage_error("bad --program '" + std::string(v) + "'");
    } else if (a == "--role") {
      role = v;
    } else {
      usage_error("unknown option " + a);
    }
  }
  if (id == 0 || program == 0) usage_error("make-key needs --id and --program");
  if (role != "pos" && role != "operator" && role != "reader" && role != "replica")
    usage_error("--role must be pos, operator, reader or replica");
  std::string secret;
  if (from_stdin) {
    char buf[1100];
    size_t n = std::fread(buf, 1, sizeof buf, stdin);
    secret.assign(buf, n);
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (!net::scram::is_printable_ascii(secret) || secret.size() < 12)
      usage_error("the secret must be at least 12 printable ASCII characters");
  } else {
    unsigned char raw[24];
    FILE* r = std::fopen("/dev/urandom", "rb");
    if (r == nullptr || std::fread(raw, 1, sizeof raw, r) != sizeof raw) usage_error("cannot read /dev/urandom");
    std::fclose(r);
    secret = net::scram::base64_encode(std::span<const uint8_t>(raw, sizeof raw));
  }
  std::optional<net::scram::Verifier> v = net::scram::make_verifier(secret);
  if (!v) usage_error("cannot make a verifier");
  std::printf("[[key]]\nid = %llu\nprogram = %llu\nrole = \"%s\"\nverifier = \"%s\"\n",
              static_cast<unsigned long long>(id), static_cast<unsigned long long>(program), role.c_str(),
              net::scram::encode_verifier(*v).c_str());
  if (!from_stdin) std::fprintf(stderr, "secret (shown once, give it to the client): %s\n", secret.c_str());
  return 0;
}

struct Overrides {
  std::string config, listen, data, programs, backend;
  uint64_t shards = 0, workers = 0;
  std::string follow, follow_secret_file;
  uint64_t follow_key = 0;
  int64_t sync_followers = -1;
};

TallydConfig load_config(const Overrides& o) {
  TallydConfig c = default_tallyd_config();
  ConfigError err;
  if (!o.config.empty() && !load_tallyd_config_file(o.config, &c, &err)) {
    std::fprintf(stderr, "tallyd: %s\n", err.to_string().c_str());
    std::exit(2);
  }
  if (!o.listen.empty() && !parse_listen(o.listen, &c.listen_host, &c.port))
    usage_error("bad --listen '" + o.listen + "': expected HOST:PORT");
  if (!o.data.empty()) c.data_dir = o.data;
  if (o.shards) c.shards = static_cast<uint16_t>(o.shards);
  if (o.workers) c.workers = static_cast<uint16_t>(o.workers);
  if (o.backend == "asio") c.backend = net::BackendKind::kAsio;
  else if (o.backend == "io_uring") c.backend = net::BackendKind::kUring;
  else if (!o.backend.empty()) usage_error("--backend must be io_uring or asio");
  if (!o.programs.empty()) {
    if (!load_programs_file(o.programs, &c.programs, &err)) {
      std::fprintf(stderr, "tallyd: %s\n", err.to_string().c_str());
      std::exit(2);
    }
    c.programs_file = o.programs;
    if (!c.demo_secrets.empty())
      for (net::ApiKey& k : c.keys) k.program = c.programs.front().id;  // demo keys follow the programs
  }
  if (std::string why = check_tallyd_config(c); !why.empty()) {
    std::fprintf(stderr, "tallyd: %s\n", why.c_str());
    std::exit(2);
  }
  return c;
}

storage::LedgerOptions ledger_options(const TallydConfig& c) {
  storage::LedgerOptions o;
  o.store.dir = c.data_dir;
  o.store.unsafe_no_sync = c.unsafe_no_sync;
  o.committer.txn_bytes_max = c.txn_bytes_max;
  o.committer.txn_effects_max = c.txn_effects_max;
  o.pipeline.shard_count = c.shards;
  o.pipeline.producer_count = static_cast<uint16_t>(c.workers + 1);  // + the ticking main thread
  o.pipeline.programs = c.programs;
  o.pipeline.references_max = c.references_max;
  o.checkpoint.interval_log_bytes = c.checkpoint_interval_bytes;
  o.history.enabled = c.history_index;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "make-key") return make_key(argc, argv);
  Overrides o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) usage_error(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--config") o.config = v;
    else if (a == "--listen") o.listen = v;
    else if (a == "--data") o.data = v;
    else if (a == "--programs") o.programs = v;
    else if (a == "--backend") o.backend = v;
    else if (a == "--follow") o.follow = v;
    else if (a == "--follow-secret-file") o.follow_secret_file = v;
    else if (a == "--sync-followers") {
      uint64_t n = 0;
      if (!parse_u64(v, 0, 16, &n)) usage_error("bad --sync-followers '" + std::string(v) + "' (0-16)");
      o.sync_followers = static_cast<int64_t>(n);
    } else if (a == "--follow-key") {
      if (!parse_u64(v, 1, UINT32_MAX, &o.follow_key)) usage_error("bad --follow-key '" + std::string(v) + "'");
    }
    else if (a == "--shards") {
      if (!parse_u64(v, 1, 256, &o.shards)) usage_error("bad --shards '" + std::string(v) + "' (1-256)");
    } else if (a == "--workers") {
      if (!parse_u64(v, 1, 64, &o.workers)) usage_error("bad --workers '" + std::string(v) + "' (1-64)");
    } else {
      usage_error("unknown option " + a);
    }
  }
  TallydConfig cfg = load_config(o);

  // Signals go to this thread only: block them before any thread exists, wait for them below.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<DurableService> service;
  std::unique_ptr<FollowerService> follower;
  LedgerService* ledger = nullptr;
  if (!o.follow.empty()) {
    FollowerOptions fo;
    if (!parse_listen(o.follow, &fo.primary.host, &fo.primary.port) || fo.primary.port == 0)
      usage_error("bad --follow '" + o.follow + "': expected HOST:PORT");
    if (o.follow_key == 0) usage_error("--follow needs --follow-key ID (a replica key of the primary)");
    fo.primary.key_id = static_cast<uint32_t>(o.follow_key);
    if (!o.follow_secret_file.empty()) {
      FILE* f = std::fopen(o.follow_secret_file.c_str(), "r");
      if (!f) usage_error("--follow-secret-file " + o.follow_secret_file + ": " + std::strerror(errno));
      char buf[1100] = {};
      size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      fo.primary.secret.assign(buf, n);
      while (!fo.primary.secret.empty() && (fo.primary.secret.back() == '\n' || fo.primary.secret.back() == '\r'))
        fo.primary.secret.pop_back();
    } else if (const char* s = std::getenv("TALLY_FOLLOW_SECRET")) {
      fo.primary.secret = s;
    } else {
      usage_error("--follow needs the replica key's secret: $TALLY_FOLLOW_SECRET or --follow-secret-file");
    }
    storage::LedgerOptions lo = ledger_options(cfg);
    fo.store = lo.store;
    fo.shard_count = cfg.shards;
    fo.programs = cfg.programs;
    fo.references_max = cfg.references_max;
    fo.history = lo.history;
    try {
      follower = std::make_unique<FollowerService>(fo);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tallyd: cannot open the follower's ledger in %s: %s\n", cfg.data_dir.c_str(), e.what());
      return 1;
    }
    std::printf("tallyd: follower of %s: %s holds LSN 1..%llu\n", o.follow.c_str(), cfg.data_dir.c_str(),
                static_cast<unsigned long long>(follower->status().applied_lsn));
    ledger = follower.get();
  } else {
    try {
      ReplicationOptions ro;
      ro.sync_followers = o.sync_followers >= 0 ? static_cast<uint32_t>(o.sync_followers) : cfg.sync_followers;
      ro.degrade_after_ms = cfg.sync_degrade_after_ms;
      service = std::make_unique<DurableService>(ledger_options(cfg), ro);
      if (ro.sync_followers > 0)
        std::printf("tallyd: semi-synchronous: each reply waits for %u follower(s)%s\n", ro.sync_followers,
                    ro.degrade_after_ms > 0 ? ", degrading to asynchronous when they are away" : ", blocking while they are away");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tallyd: cannot open the ledger in %s: %s\n", cfg.data_dir.c_str(), e.what());
      return 1;
    }
    const storage::RecoveryReport& rec = service->ledger().recovery();
    if (rec.fresh) {
      std::printf("tallyd: new ledger in %s\n", cfg.data_dir.c_str());
    } else {
      std::printf("tallyd: recovered %s: checkpoint %u, %llu log records replayed and verified in %.2f s\n",
                  cfg.data_dir.c_str(), rec.checkpoint_round, static_cast<unsigned long long>(rec.records), rec.seconds);
    }
    ledger = service.get();
  }

  net::ServerConfig sc;
  sc.listen_host = cfg.listen_host;
  sc.port = cfg.port;
  sc.workers = cfg.workers;
  sc.first_producer = 0;
  sc.backend = cfg.backend;
  sc.limits = cfg.limits;
  sc.keys = cfg.keys;
  sc.tls = cfg.tls;
  std::unique_ptr<net::Server> server;
  try {
    server = std::make_unique<net::Server>(sc, ledger);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tallyd: %s\n", e.what());
    return 1;
  }
  if (service) service->attach(&server->listener());
  if (follower) follower->attach(&server->listener());
  server->start();
  std::printf("tallyd: listening on %s:%u (%s%s back end, %u worker(s), %u shard(s), config: %s)\n",
              cfg.listen_host.c_str(), server->port(), cfg.tls ? "TLS only, " : "",
              std::string(net::to_string(server->backend())).c_str(),
              cfg.workers, cfg.shards, cfg.source.c_str());
  for (const Program& p : cfg.programs) std::printf("tallyd: program %u '%s'\n", p.id, p.name.c_str());
  for (auto& [id, secret] : cfg.demo_secrets)
    std::printf("tallyd: demo key %u (%s): secret '%s'   e.g. tally --key %u --secret %s balance 1\n", id,
                id == 1 ? "pos" : "operator", secret.c_str(), id, secret.c_str());
  std::fflush(stdout);

  const uint16_t tick_producer = cfg.workers;
  int exit_code = 0;
  for (;;) {
    timespec one_second{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &one_second);
    if (follower && !follower->status().failure.empty()) {
      std::fprintf(stderr, "tallyd: FATAL: the follower stopped: %s\n", follower->status().failure.c_str());
      server->shutdown(5'000);
      follower->attach(nullptr);
      return 1;
    }
    if (server->ledger_failed()) {
      std::string why = server->ledger_failure();
      std::fprintf(stderr, "tallyd: FATAL: the durable log failed: %s. Writes stopped; nothing after it was "
                           "acknowledged. Restart to recover what is durable.\n", why.c_str());
      server->fail_all(why);
      server->wait_open_at_most(0, 5'000);
      std::fflush(stderr);
      _exit(1);  // the ledger's threads cannot finish cleanly on a failed log
    }
    if (sig == SIGHUP) {
      if (o.config.empty()) {
        std::fprintf(stderr, "tallyd: SIGHUP: no --config file to reload keys from\n");
        continue;
      }
      TallydConfig fresh;
      ConfigError err;
      if (!load_tallyd_config_file(o.config, &fresh, &err)) {
        std::fprintf(stderr, "tallyd: SIGHUP: keeping the old keys: %s\n", err.to_string().c_str());
      } else {
        server->set_keys(fresh.keys);
        std::fprintf(stderr, "tallyd: SIGHUP: %zu key(s) loaded from %s\n", fresh.keys.size(), o.config.c_str());
      }
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) {
      std::printf("tallyd: %s: stopping: answering what is in flight\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      std::fflush(stdout);
      if (!server->shutdown(30'000)) std::fprintf(stderr, "tallyd: some connections did not finish in 30 s\n");
      break;
    }
    if (service) service->ledger().pipeline().tick(tick_producer, server->clock_ms());
  }
  if (service) {
    service->ledger().drain();
    service->attach(nullptr);
  }
  if (follower) {
    follower->stop();
    follower->attach(nullptr);
  }
  server.reset();
  service.reset();
  std::printf("tallyd: stopped; everything acknowledged is durable\n");
  return exit_code;
}
