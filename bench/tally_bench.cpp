// tally-bench: a load generator that tells the truth about a running tallyd (docs/benchmarks.md).
//
// It speaks the real protocol to 127.0.0.1 (or starts its own tallyd with --spawn), enrolls the
// members, then runs the loyalty mix of shared/WORKLOAD.md in a closed loop (peak throughput) or
// an open loop at a fixed arrival rate (latency from each request's intended send time). Every
// reply is checked: a reused order ID must come back duplicate_order, an identical retry as a
// replay with the original result, nothing accepted may be lost; at the end every member's balance
// is read back and compared with what the replies said. Any mismatch fails the run (exit 1), so a
// fast wrong answer never counts.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/load.h"
#include "bench/workload.h"
#include "net/client.h"
#include "net/scram.h"

namespace {

using namespace tally;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(Usage: tally-bench [options]

Loads a tallyd with the loyalty mix (80% earn of 0.01-1000.00, 1% of earns reusing an accepted
order ID, 15% redeem of 1-1000 points, 5% balance; shared/WORKLOAD.md) and prints throughput and
latency. Checks every reply and, at the end, every member's balance: exit 1 on any mismatch.

Server:
  --spawn            start a private tallyd (in a temporary directory, on 127.0.0.1, a free
                     port) with the workload's program and a key, and stop it at the end
  --tallyd PATH      the tallyd binary for --spawn (default: next to this one, ../tools/tallyd)
  --shards N         --spawn: shard threads (default 1)
  --workers N        --spawn: network threads (default 1)
  --backend NAME     --spawn: io_uring or asio (default io_uring)
  --no-history-index --spawn: storage.history_index = false (docs/history.md)
  --host H --port N  a running tallyd (default 127.0.0.1:7411); its program 1 must be the
                     workload's (1 point per 100 cents, 500 points sign-up, no caps)
  --key ID --secret S  a pos key of program 1 (default: the embedded default's demo key 1)

Load:
  --accounts N       members, enrolled first (default 1000000)
  --zipf S           account choice Zipf with exponent S > 1 (default: uniform)
  --connections N    connections (default 4)
  --depth N          requests in flight per connection (default 4)
  --batch N          events per request frame (default 1000; 1 = the POS shape)
  --rate R           open loop at R events/s (default: closed loop)
  --warmup S         seconds not measured (default 2)
  --duration S       seconds measured (default 10)
  --events N         events planned (default 5000000): the run stops early when they run out
  --retries P        share of events re-sent identically (default 0.005)
  --seed N           workload seed (default 1)
  --no-balance-check skip reading every balance back at the end
  --negative-control expect one point more for member 1: the balance check and the server
                     totals check must both fail (exit 1), proving they are alive
  -h, --help         this text

Prints a line per second, then the summary and one JSON line (starting with {"tally_bench":).
)";

struct Options {
  bool spawn = false;
  std::string tallyd;
  uint16_t shards = 1;
  uint16_t workers = 1;
  std::string backend = "io_uring";
  bool history_index = true;
  std::string host = "127.0.0.1";
  uint16_t port = 7411;
  uint32_t key = 1;
  std::string secret = "demo-pos-secret";
  uint64_t accounts = 1'000'000;
  double zipf = 0;
  uint32_t connections = 4, depth = 4, batch = 1000;
  double rate = 0, warmup = 2, duration = 10;
  uint64_t events = 5'000'000;
  double retries = 0.005;
  uint64_t seed = 1;
  bool balance_check = true;
  bool negative_control = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "tally-bench: %s (see --help)\n", why.c_str());
  std::exit(2);
}

// A private tallyd: its own directory, config, program and key; SIGTERM at the end.
class Spawned {
 public:
  Spawned(const Options& o, uint64_t orders) {
    dir_ = std::filesystem::temp_directory_path() / ("tally-bench-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "programs.toml") << "[[program]]\nid = 1\nname = \"loyalty mix\"\ncurrency = \"EUR\"\n"
                                          << "earn = { points = 1, per = \"1.00\" }\nsignup_bonus = 500\n"
                                          << "[program.capacity]\naccounts_max = " << o.accounts + 1024
                                          << "\norders_max = " << orders << "\n";
    std::optional<net::scram::Verifier> v = net::scram::make_verifier(o.secret);
    std::ofstream(dir_ / "tallyd.toml") << "[server]\nlisten = \"127.0.0.1:0\"\nbackend = \"" << o.backend
                                        << "\"\nworkers = " << o.workers << "\nprograms = \"programs.toml\"\n[storage]\nshards = " << o.shards
                                        << "\nhistory_index = " << (o.history_index ? "true" : "false")
                                        << "\nreferences_max = " << 2 * orders << "\n[[key]]\nid = " << o.key
                                        << "\nprogram = 1\nrole = \"pos\"\nverifier = \""
                                        << net::scram::encode_verifier(*v) << "\"\n";
    int out[2];
    if (pipe(out) != 0) usage("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      std::string cfg = (dir_ / "tallyd.toml").string();
      execl(o.tallyd.c_str(), o.tallyd.c_str(), "--config", cfg.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    out_ = fdopen(out[0], "r");
    char line[1024];
    static const std::regex kListening("listening on [^ ]+:([0-9]+) ");
    std::cmatch m;
    while (std::fgets(line, sizeof line, out_) != nullptr) {
      if (std::regex_search(line, m, kListening)) {
        port_ = static_cast<uint16_t>(std::stoi(m[1]));
        std::fprintf(stderr, "tally-bench: spawned %s", line);
        break;
      }
    }
    if (port_ == 0) usage("the spawned tallyd did not start (" + o.tallyd + ")");
  }
  ~Spawned() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    if (out_) std::fclose(out_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  uint16_t port() const { return port_; }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  uint16_t port_ = 0;
};

// What the replies must say, checked as they come and once more at the end.
struct Checker {
  struct Seen {
    uint64_t fingerprint;
    net::WireResult first;
  };
  std::unordered_map<uint64_t, Seen> winners;  // by reference (lo ^ hi): the accepted event
  // References the plan uses more than once (duplicates, retries and their originals): only
  // these need remembering, which keeps the checker from limiting the load.
  std::unordered_set<uint64_t> repeated;
  std::vector<int64_t> balances;               // [account]: what the accepted replies imply
  uint64_t accepted = 0, duplicates = 0, replays = 0, reads = 0, rejected = 0;
  int64_t issued = 0, redeemed = 0;  // points, by the accepted replies
  uint64_t mismatches = 0;
  std::string first_mismatch;

  struct Pending {
    uint64_t key, fingerprint;
    int64_t points;
  };
  std::vector<Pending> pending_replays;

  // Replays whose original had not been answered yet when they were checked.
  void finish() {
    for (const Pending& p : pending_replays) {
      auto it = winners.find(p.key);
      if (it == winners.end() || it->second.fingerprint != p.fingerprint || it->second.first.points != p.points)
        fail("a replay that does not match the original");
    }
    pending_replays.clear();
  }
  void accept(const Event& e, const net::WireResult& r) {
    ++accepted;
    (e.kind == EventKind::kRedeem ? redeemed : issued) += r.points;
    if (e.account < balances.size()) balances[e.account] += e.kind == EventKind::kRedeem ? -r.points : r.points;
  }
  void fail(const std::string& what) {
    if (mismatches++ == 0) first_mismatch = what;
  }
  void check(std::span<const Event> events, std::span<const net::WireResult> results) {
    for (size_t i = 0; i < events.size(); ++i) {
      const Event& e = events[i];
      const net::WireResult& r = results[i];
      if (r.result == Result::kStorageFailed || r.result == Result::kBusy || r.result == Result::kForbidden)
        fail(std::string("an event was answered ") + std::string(to_string(r.result)));
      if (e.kind == EventKind::kBalance) {
        ++reads;
        continue;
      }
      uint64_t key = e.ref.lo ^ e.ref.hi;
      bool replay = r.flags & kEffectReplay;
      if (!repeated.count(key)) {
        // Used once in the plan: it cannot be a duplicate; a replay only once the plan wrapped.
        if (r.result == Result::kOk && !replay) {
          accept(e, r);
        } else if (replay) {
          ++replays;
        } else if (r.result == Result::kDuplicateOrder) {
          fail("an order ID the plan uses once was answered duplicate_order");
        } else {
          ++rejected;
        }
        continue;
      }
      uint64_t fp = fingerprint(e);
      auto it = winners.find(key);
      if (r.result == Result::kOk && !replay) {
        if (it != winners.end()) fail("a reference was accepted twice");
        winners.emplace(key, Seen{fp, r});
        accept(e, r);
      } else if (replay) {
        ++replays;
        // Its original may be answered on another connection that is read later: checked at the end.
        if (it == winners.end()) {
          pending_replays.push_back({key, fp, r.points});
        } else if (it->second.fingerprint != fp || it->second.first.points != r.points) {
          fail("a replay that does not match the original");
        }
      } else if (r.result == Result::kDuplicateOrder) {
        ++duplicates;
        if (it != winners.end() && it->second.fingerprint == fp) fail("an identical retry was called a duplicate");
      } else if (it != winners.end() && it->second.fingerprint != fp && e.kind == EventKind::kEarn) {
        fail("a reused order ID was answered " + std::string(to_string(r.result)) + ", not duplicate_order");
      } else {
        ++rejected;  // insufficient points and the like: allowed by the mix
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::filesystem::path self = std::filesystem::weakly_canonical(std::filesystem::path(argv[0]));
  o.tallyd = (self.parent_path().parent_path() / "tools" / "tallyd").string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto v = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto num = [&](double lo, double hi) {
      std::string s = v();
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (end == s.c_str() || *end != '\0' || d < lo || d > hi) usage("bad value for " + a + ": '" + s + "'");
      return d;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--spawn") o.spawn = true;
    else if (a == "--negative-control") o.negative_control = true;
    else if (a == "--no-balance-check") o.balance_check = false;
    else if (a == "--tallyd") o.tallyd = v();
    else if (a == "--shards") o.shards = static_cast<uint16_t>(num(1, 256));
    else if (a == "--workers") o.workers = static_cast<uint16_t>(num(1, 64));
    else if (a == "--backend") o.backend = v();
    else if (a == "--no-history-index") o.history_index = false;
    else if (a == "--host") o.host = v();
    else if (a == "--port") o.port = static_cast<uint16_t>(num(1, 65535));
    else if (a == "--key") o.key = static_cast<uint32_t>(num(1, 4e9));
    else if (a == "--secret") o.secret = v();
    else if (a == "--accounts") o.accounts = static_cast<uint64_t>(num(1, 1e9));
    else if (a == "--zipf") o.zipf = num(1.000001, 10);
    else if (a == "--connections") o.connections = static_cast<uint32_t>(num(1, 10000));
    else if (a == "--depth") o.depth = static_cast<uint32_t>(num(1, 1024));
    else if (a == "--batch") o.batch = static_cast<uint32_t>(num(1, 16384));
    else if (a == "--rate") o.rate = num(1, 1e9);
    else if (a == "--warmup") o.warmup = num(0, 3600);
    else if (a == "--duration") o.duration = num(0.1, 86400);
    else if (a == "--events") o.events = static_cast<uint64_t>(num(1, 1e10));
    else if (a == "--retries") o.retries = num(0, 0.5);
    else if (a == "--seed") o.seed = static_cast<uint64_t>(num(0, 1e18));
    else usage("unknown option " + a);
  }

  // The plan: the mix, with identical retries of earlier events mixed in.
  bench::Generator gen(bench::Mix::kLoyalty, o.zipf > 0 ? bench::Choice::kZipf : bench::Choice::kUniform, o.accounts,
                       o.seed);
  std::vector<Event> enrolls = gen.enrolls();
  std::vector<Event> plan = gen.next(o.events).events;
  bench::Rng rng(o.seed ^ 0x5eed);
  uint64_t planned_retries = 0;
  for (size_t i = 1; i < plan.size(); ++i) {
    if (rng.unit() >= o.retries) continue;
    const Event& earlier = plan[rng.between(0, i - 1)];
    if (earlier.kind == EventKind::kBalance) continue;
    plan[i] = earlier;
    ++planned_retries;
  }

  Checker checker;
  {
    std::unordered_map<uint64_t, uint32_t> uses;
    uses.reserve(plan.size());
    for (const Event& e : plan)
      if (e.kind != EventKind::kBalance) ++uses[e.ref.lo ^ e.ref.hi];
    for (auto& [k, n] : uses)
      if (n > 1) checker.repeated.insert(k);
  }

  std::optional<Spawned> spawned;
  net::ClientOptions co;
  co.host = o.host;
  co.port = o.port;
  co.key_id = o.key;
  co.secret = o.secret;
  if (o.spawn) {
    spawned.emplace(o, o.events + o.accounts + 1024);
    co.host = "127.0.0.1";
    co.port = spawned->port();
  }

  // The server's totals before anything is sent: at the end, what changed must be what the
  // replies said (a server with other traffic meanwhile will not match: use --spawn).
  net::StatsRecord stats_before;
  {
    net::Client c(co);
    if (net::ClientError e = c.stats(&stats_before)) usage("asking the server's stats: " + e.message);
  }
  // Enrol the members.
  checker.balances.assign(o.accounts + 1, 0);
  bool fresh = true;
  uint64_t enrolled = 0, enroll_replays = 0;
  int64_t enroll_points = 0;
  {
    net::Client c(co);
    std::vector<net::WireResult> r;
    for (size_t i = 0; i < enrolls.size(); i += 1000) {
      std::span<const Event> part = std::span(enrolls).subspan(i, std::min<size_t>(1000, enrolls.size() - i));
      if (net::ClientError e = c.submit(part, &r)) usage("enrolling: " + e.message);
      for (size_t j = 0; j < part.size(); ++j) {
        bool made = r[j].result == Result::kOk && !(r[j].flags & kEffectReplay);
        fresh &= made;
        enrolled += made;
        enroll_replays += (r[j].flags & kEffectReplay) != 0;
        if (made) enroll_points += r[j].points;
        checker.balances[part[j].account] = r[j].available;
      }
    }
    if (!fresh) std::fprintf(stderr, "tally-bench: members existed already: balances are taken as they were\n");
  }

  net::StatsRecord log_before;  // the log's figures from here: the run, not the enrolment
  {
    net::Client c(co);
    if (net::ClientError e = c.stats(&log_before)) usage("asking the server's stats: " + e.message);
  }

  bench::LoadOptions lo;
  lo.client = co;
  lo.connections = o.connections;
  lo.depth = o.depth;
  lo.events_per_frame = o.batch;
  lo.rate_events_per_s = o.rate;
  lo.warmup_s = o.warmup;
  lo.duration_s = o.duration;
  size_t next = 0;
  bool exhausted = false;
  auto next_frame = [&](size_t n) -> std::span<const Event> {
    if (next + n > plan.size()) {
      exhausted = true;
      next = 0;  // the run goes on as identical retries of the plan
    }
    std::span<const Event> s = std::span(plan).subspan(next, n);
    next += n;
    return s;
  };
  std::printf("tally-bench: %s loop, %u connection(s) x %u in flight x %u event(s), %" PRIu64 " members (%s), "
              "warm-up %.0f s, %.0f s measured\n",
              o.rate > 0 ? "open" : "closed", o.connections, o.depth, o.batch, o.accounts,
              o.zipf > 0 ? ("zipf " + std::to_string(o.zipf)).c_str() : "uniform", o.warmup, o.duration);
  bench::LoadResult res = bench::run_load(
      lo, next_frame, [&](std::span<const Event> ev, std::span<const net::WireResult> r) { checker.check(ev, r); },
      [](double at, uint64_t events, const LogHistogram& h) {
        std::printf("  %5.0f s %12" PRIu64 " events/s   p50 %7.2f ms   p99 %7.2f ms\n", at, events,
                    static_cast<double>(h.quantile(0.5)) / 1e6, static_cast<double>(h.quantile(0.99)) / 1e6);
        std::fflush(stdout);
      });
  checker.finish();
  if (exhausted) std::printf("tally-bench: the %" PRIu64 " planned events ran out; later frames were replays\n", o.events);

  if (o.negative_control) {  // one point more for member 1 than the replies said: both checks must see it
    checker.balances[1] += 1;
    checker.issued += 1;
  }
  // Every balance, read back.
  uint64_t balance_mismatches = 0;
  if (o.balance_check && fresh && res.errors == 0) {
    net::Client c(co);
    std::vector<Event> reads;
    std::vector<net::WireResult> r;
    for (uint64_t a = 1; a <= o.accounts; ++a) {
      Event b;
      b.kind = EventKind::kBalance;
      b.program = bench::kProgramId;
      b.account = a;
      reads.push_back(b);
      if (reads.size() == 1000 || a == o.accounts) {
        if (net::ClientError e = c.submit(reads, &r)) usage("reading balances: " + e.message);
        for (size_t j = 0; j < reads.size(); ++j)
          if (r[j].available != checker.balances[reads[j].account]) ++balance_mismatches;
        reads.clear();
      }
    }
  }

  // The server's totals: every change must be one the replies reported.
  net::StatsRecord stats_after;
  std::string stats_mismatch;
  {
    net::Client c(co);
    if (net::ClientError e = c.stats(&stats_after)) usage("asking the server's stats: " + e.message);
    const ProgramStats& a = stats_after.program;
    const ProgramStats& b = stats_before.program;
    auto expect = [&](const char* what, int64_t server, int64_t replies) {
      if (server != replies && stats_mismatch.empty())
        stats_mismatch = std::string(what) + ": the server counted " + std::to_string(server) +
                         ", the replies said " + std::to_string(replies);
    };
    uint64_t effects = enrolled + enroll_replays + checker.accepted + checker.duplicates + checker.replays + checker.rejected;
    expect("members", static_cast<int64_t>(a.members - b.members), static_cast<int64_t>(enrolled));
    expect("events", static_cast<int64_t>(a.events - b.events), static_cast<int64_t>(effects));
    expect("points issued", a.issued - b.issued, enroll_points + checker.issued);
    expect("points redeemed", a.redeemed - b.redeemed, checker.redeemed);
    expect("duplicate orders", static_cast<int64_t>(a.duplicates - b.duplicates), static_cast<int64_t>(checker.duplicates));
    expect("replays", static_cast<int64_t>(a.replays - b.replays), static_cast<int64_t>(checker.replays + enroll_replays));
  }

  const LogHistogram& h = res.latency_ns;
  auto ms = [&](double q) { return static_cast<double>(h.quantile(q)) / 1e6; };
  bool ok = res.errors == 0 && checker.mismatches == 0 && balance_mismatches == 0 && stats_mismatch.empty();
  std::printf("\nthroughput   %.0f durable events/s (%" PRIu64 " requests, %" PRIu64 " events in %.1f s)\n",
              res.events_per_s(), res.requests, res.events, res.seconds);
  std::printf("latency      p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms%s\n", ms(0.5), ms(0.9),
              ms(0.99), ms(0.999), static_cast<double>(h.max()) / 1e6,
              o.rate > 0 ? " (from each request's intended send time)" : "");
  std::printf("checks       %" PRIu64 " accepted, %" PRIu64 " duplicates rejected, %" PRIu64 " replays, %" PRIu64
              " reads, %" PRIu64 " other rejections; %" PRIu64 " retries planned\n",
              checker.accepted, checker.duplicates, checker.replays, checker.reads, checker.rejected, planned_retries);
  std::printf("balances     %s\n", !o.balance_check || !fresh ? "not checked"
                                   : balance_mismatches == 0 ? "every member's balance matches the replies"
                                                             : (std::to_string(balance_mismatches) + " MISMATCHED").c_str());
  std::printf("server       %s\n", stats_mismatch.empty()
                                       ? "its totals moved exactly as the replies said (members, events, points "
                                         "issued and redeemed, duplicates, replays)"
                                       : ("totals MISMATCH: " + stats_mismatch).c_str());
  double records_per_commit = 0;
  {
    const LogSummary& la = stats_after.log;
    const LogSummary& lb = log_before.log;
    uint64_t commits = la.commits - lb.commits, records = la.records - lb.records;
    records_per_commit = commits ? static_cast<double>(records) / static_cast<double>(commits) : 0.0;
    std::printf("server log   %" PRIu64 " commits of %.0f records on average during this run (since the server "
                "started: p50 %" PRIu64 ", p99 %" PRIu64 ", max %" PRIu64 "); commit p50 %.2f ms, p99 %.2f ms\n",
                commits, records_per_commit, la.records_per_commit_p50, la.records_per_commit_p99, la.records_per_commit_max,
                static_cast<double>(la.commit_us_p50) / 1e3, static_cast<double>(la.commit_us_p99) / 1e3);
  }
  if (res.errors) std::printf("errors       %" PRIu64 ": %s\n", res.errors, res.first_error.c_str());
  if (checker.mismatches) std::printf("MISMATCH     %" PRIu64 ": %s\n", checker.mismatches, checker.first_mismatch.c_str());
  std::printf("{\"tally_bench\":{\"loop\":\"%s\",\"connections\":%u,\"depth\":%u,\"batch\":%u,\"rate\":%.0f,"
              "\"events_per_s\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,"
              "\"accepted\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"replays\":%" PRIu64
              ",\"server\":\"%s\",\"shards\":%u,\"workers\":%u,\"history_index\":%s,\"records_per_commit\":%.1f,\"ok\":%s}}\n",
              o.rate > 0 ? "open" : "closed", o.connections, o.depth, o.batch, o.rate, res.events_per_s(), ms(0.5),
              ms(0.9), ms(0.99), ms(0.999), static_cast<double>(h.max()) / 1e6, checker.accepted, checker.duplicates,
              checker.replays, o.spawn ? o.backend.c_str() : "external", o.spawn ? o.shards : 0,
              o.spawn ? o.workers : 0, o.spawn ? (o.history_index ? "true" : "false") : "null", records_per_commit, ok ? "true" : "false");
  return ok ? 0 : 1;
}
