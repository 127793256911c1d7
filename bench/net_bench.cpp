// tally_net_bench: the TCP server end to end on loopback, both back ends side by side
// (docs/benchmarks.md, "TCP server").
//
// For each repetition and back end: a fresh durable ledger (real LMDB, fsync) and server on
// 127.0.0.1, members enrolled, then two closed-loop shapes of the loyalty mix:
//   batch  a few connections, frames of 1000 events, a few frames in flight each (a payment
//          network's concentrator);
//   pos    256 connections, one event per frame, one request in flight each (a POS network).
// A single-threaded poll() driver in this process sends and receives; latency is per request,
// from the send to the whole reply. Everything talks to 127.0.0.1 only, bounded by time and
// count, and stops by itself. Every result is checked: a storage_failed or missing reply fails
// the run (exit 1).

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/load.h"
#include "bench/workload.h"
#include "engine/histogram.h"
#include "net/backend.h"
#include "net/client.h"
#include "net/scram.h"
#include "net/tcp_server.h"
#include "tools/ledger_service.h"

namespace {

using namespace tally;
using namespace tally::net;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(Usage: tally_net_bench [options]

Measures tallyd's network path on 127.0.0.1 with both back ends (io_uring, Boost.Asio) in one
run: the loyalty mix in frames of --batch events over --batch-conns connections, and one event
per frame over --pos-conns connections with one request in flight each. Prints events/s and
per-request latency p50/p99/p99.9/max, the median of --reps repetitions, and the io_uring/asio
ratio. The ledger is durable (LMDB, fsync on every commit) in a scratch directory under --dir.

Options:
  --dir DIR          scratch directory (default ./net-bench-scratch; removed after)
  --reps N           repetitions (default 3)
  --seconds S        length of each measured phase (default 4)
  --members N        members enrolled before measuring (default 100000)
  --shards N         shard threads (default 1)
  --workers N        network threads (default 1)
  --batch N          events per frame in the batch shape (default 1000)
  --batch-conns N    connections in the batch shape (default 4)
  --window N         frames in flight per connection in the batch shape (default 4)
  --pos-conns N      connections in the pos shape (default 256)
  --smoke            tiny sizes, a second per phase: what ctest runs
  -h, --help         this text
)";

struct Options {
  std::string dir = "net-bench-scratch";
  int reps = 3;
  double seconds = 4;
  uint64_t members = 100'000;
  uint16_t shards = 1;
  uint16_t workers = 1;
  uint32_t batch = 1000;
  uint32_t batch_conns = 4;
  uint32_t window = 4;
  uint32_t pos_conns = 256;
};

struct Phase {
  double events_per_s = 0;
  double requests_per_s = 0;
  LogHistogram latency_ns;
  uint64_t failed = 0;  // storage_failed, missing or malformed replies
};

constexpr const char* kSecret = "bench-secret-0001";

// A closed loop over `conns` connections, `window` requests in flight each, `per_frame` events per
// request, taken in order from `events` (wrapping: a second pass is answered as replays, which
// the server still acknowledges only after the commit). bench/load.h drives it.
Phase drive(uint16_t port, const std::vector<Event>& events, uint32_t conns, uint32_t window, uint32_t per_frame,
            double seconds) {
  bench::LoadOptions lo;
  lo.client.port = port;
  lo.client.key_id = 1;
  lo.client.secret = kSecret;
  lo.connections = conns;
  lo.depth = window;
  lo.events_per_frame = per_frame;
  lo.duration_s = seconds;
  size_t next = 0;
  Phase ph;
  bench::LoadResult r = bench::run_load(
      lo,
      [&](size_t n) {
        if (next + n > events.size()) next = 0;
        std::span<const Event> s = std::span(events).subspan(next, n);
        next += n;
        return s;
      },
      [&](std::span<const Event>, std::span<const WireResult> results) {
        for (const WireResult& w : results) ph.failed += w.result == Result::kStorageFailed;
      });
  if (r.errors) std::fprintf(stderr, "tally_net_bench: %s\n", r.first_error.c_str());
  ph.failed += r.errors;
  ph.events_per_s = r.events_per_s();
  ph.requests_per_s = static_cast<double>(r.requests) / r.seconds;
  ph.latency_ns = r.latency_ns;
  return ph;
}

struct Result2 {
  Phase batch, pos;
};

// The same events submitted in-process to the same kind of ledger, no network: the baseline the
// batch shape is compared with. Closed loop with the same number of events in flight.
double in_process(const Options& opt, const storage::LedgerOptions& lo, const std::vector<Event>& enrolls,
                  const std::vector<Event>& events) {
  struct Counter final : EffectListener {
    std::mutex mu;
    std::condition_variable cv;
    uint64_t n = 0;
    void on_durable(std::span<const Effect> e) override {
      std::lock_guard l(mu);
      n += e.size();
      cv.notify_all();
    }
    void on_failed(std::span<const Effect>, const std::string& why) override {
      std::fprintf(stderr, "tally_net_bench: storage failed: %s\n", why.c_str());
      std::exit(1);
    }
  } counter;
  DurableService service(lo);
  service.attach(&counter);
  ServerClock clock;
  for (size_t i = 0; i < enrolls.size(); i += opt.batch)
    service.submit(0, std::span(enrolls).subspan(i, std::min<size_t>(opt.batch, enrolls.size() - i)), clock.now_ms());
  service.ledger().drain();
  uint64_t base;
  {
    std::lock_guard l(counter.mu);
    base = counter.n;
  }
  const uint64_t window = uint64_t{opt.batch_conns} * opt.window * opt.batch;
  auto t0 = Clock::now();
  auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.seconds));
  uint64_t sent = 0;
  size_t next = 0;
  while (Clock::now() < deadline) {
    {
      std::unique_lock l(counter.mu);
      counter.cv.wait(l, [&] { return sent - (counter.n - base) + opt.batch <= window; });
    }
    if (next + opt.batch > events.size()) next = 0;
    service.submit(0, std::span(events).subspan(next, opt.batch), clock.now_ms());
    next += opt.batch;
    sent += opt.batch;
  }
  service.ledger().drain();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  service.attach(nullptr);
  return static_cast<double>(sent) / secs;
}

// One repetition's workload and ledger configuration (the same for every back end and the
// in-process baseline of that repetition).
struct Setup {
  std::vector<Event> enrolls;
  bench::Plan plan;
  storage::LedgerOptions ledger;
};

Setup make_setup(const Options& opt, int rep, const std::string& dir) {
  Setup s;
  std::filesystem::remove_all(dir);
  bench::Generator gen(bench::Mix::kLoyalty, bench::Choice::kUniform, opt.members, 11 + static_cast<uint64_t>(rep));
  s.enrolls = gen.enrolls();
  // Enough distinct events for the batch phase at over a million a second; the pos phase takes
  // a slice of them (it is far slower).
  uint64_t planned = std::min<uint64_t>(20'000'000, static_cast<uint64_t>(opt.seconds * 1'500'000) + 100'000);
  s.plan = gen.next(planned);
  storage::LedgerOptions& lo = s.ledger;
  lo.store.dir = dir;
  lo.pipeline.shard_count = opt.shards;
  lo.pipeline.producer_count = opt.workers;
  lo.pipeline.programs = {bench::loyalty_program(opt.members, planned + opt.members + 1024)};
  lo.pipeline.references_max = 2 * (planned + opt.members) + 1024;
  lo.history.enabled = false;  // the log and the network path, as the durable-log benchmark does
  return s;
}

Result2 one_run(const Options& opt, BackendKind backend, int rep) {
  std::string dir = opt.dir + "/" + std::string(to_string(backend)) + "-" + std::to_string(rep);
  Setup setup = make_setup(opt, rep, dir);
  const std::vector<Event>& enrolls = setup.enrolls;
  const bench::Plan& plan = setup.plan;
  const storage::LedgerOptions& lo = setup.ledger;
  Result2 out;
  {
    DurableService service(lo);
    ServerConfig sc;
    sc.port = 0;
    sc.workers = opt.workers;
    sc.backend = backend;
    sc.limits.connections_max = opt.pos_conns + opt.batch_conns + 16;
    sc.keys = {{1, bench::kProgramId, Role::kPos, *scram::make_verifier(kSecret)}};
    Server server(sc, &service);
    if (server.backend() != backend) {
      std::fprintf(stderr, "tally_net_bench: %s\n", server.backend_note().c_str());
      std::exit(1);
    }
    service.attach(&server.listener());
    server.start();
    ClientOptions co;
    co.port = server.port();
    co.key_id = 1;
    co.secret = kSecret;
    Client c(co);
    std::vector<WireResult> rs;
    for (size_t i = 0; i < enrolls.size(); i += opt.batch) {
      if (c.submit(std::span(enrolls).subspan(i, std::min<size_t>(opt.batch, enrolls.size() - i)), &rs)) {
        std::fprintf(stderr, "tally_net_bench: enrolling failed\n");
        std::exit(1);
      }
    }
    out.batch = drive(server.port(), plan.events, opt.batch_conns, opt.window, opt.batch, opt.seconds);
    // The pos phase uses the events after those the batch phase may have taken.
    std::vector<Event> rest(plan.events.end() - static_cast<std::ptrdiff_t>(std::min<size_t>(plan.events.size(), 1'000'000)),
                            plan.events.end());
    out.pos = drive(server.port(), rest, opt.pos_conns, 1, 1, opt.seconds);
    server.shutdown(10'000);
    service.ledger().drain();
    service.attach(nullptr);
  }
  std::filesystem::remove_all(dir);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tally_net_bench: %s needs a value (see --help)\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--smoke") {
      opt.reps = 1, opt.seconds = 0.5, opt.members = 2'000, opt.pos_conns = 32, opt.batch = 100;
    } else if (a == "--dir") {
      opt.dir = value();
    } else if (a == "--reps") {
      opt.reps = std::max(1, std::atoi(value()));
    } else if (a == "--seconds") {
      opt.seconds = std::max(0.1, std::atof(value()));
    } else if (a == "--members") {
      opt.members = std::max<uint64_t>(10, std::strtoull(value(), nullptr, 10));
    } else if (a == "--shards") {
      opt.shards = static_cast<uint16_t>(std::clamp(std::atoi(value()), 1, 64));
    } else if (a == "--workers") {
      opt.workers = static_cast<uint16_t>(std::clamp(std::atoi(value()), 1, 64));
    } else if (a == "--batch") {
      opt.batch = static_cast<uint32_t>(std::clamp(std::atoi(value()), 1, 16384));
    } else if (a == "--batch-conns") {
      opt.batch_conns = static_cast<uint32_t>(std::clamp(std::atoi(value()), 1, 1024));
    } else if (a == "--window") {
      opt.window = static_cast<uint32_t>(std::clamp(std::atoi(value()), 1, 1024));
    } else if (a == "--pos-conns") {
      opt.pos_conns = static_cast<uint32_t>(std::clamp(std::atoi(value()), 1, 4096));
    } else {
      std::fprintf(stderr, "tally_net_bench: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
  }
  std::vector<BackendKind> backends = {BackendKind::kAsio};
  std::string why;
  if (uring_available(&why)) {
    backends.insert(backends.begin(), BackendKind::kUring);
  } else {
    std::printf("io_uring back end not measured: %s\n", why.c_str());
  }
  std::printf("loopback, durable ledger (LMDB, fsync per commit), loyalty mix, %llu members, %u shard(s), %u "
              "network worker(s); median of %d; %.1f s per phase\n",
              static_cast<unsigned long long>(opt.members), opt.shards, opt.workers, opt.reps, opt.seconds);
  std::vector<std::vector<Result2>> runs(backends.size());
  std::vector<double> baseline;
  for (int rep = 0; rep < opt.reps; ++rep) {
    for (size_t b = 0; b < backends.size(); ++b) runs[b].push_back(one_run(opt, backends[b], rep));  // alternating
    std::string dir = opt.dir + "/in-process-" + std::to_string(rep);
    Setup s = make_setup(opt, rep, dir);
    baseline.push_back(in_process(opt, s.ledger, s.enrolls, s.plan.events));
    std::filesystem::remove_all(dir);
  }

  uint64_t failed = 0;
  std::vector<double> batch_med(backends.size()), pos_med(backends.size());
  std::printf("\n%-9s %-6s %14s %14s %10s %10s %10s %10s\n", "backend", "shape", "events/s", "requests/s",
              "p50 ms", "p99 ms", "p99.9 ms", "max ms");
  for (size_t b = 0; b < backends.size(); ++b) {
    for (int shape = 0; shape < 2; ++shape) {
      std::vector<double> ev, rq;
      LogHistogram lat;
      for (const Result2& r : runs[b]) {
        const Phase& p = shape == 0 ? r.batch : r.pos;
        ev.push_back(p.events_per_s);
        rq.push_back(p.requests_per_s);
        lat.merge(p.latency_ns);
        failed += p.failed;
      }
      (shape == 0 ? batch_med : pos_med)[b] = median(ev);
      std::printf("%-9s %-6s %14.0f %14.0f %10.2f %10.2f %10.2f %10.2f\n", std::string(to_string(backends[b])).c_str(),
                  shape == 0 ? "batch" : "pos", median(ev), median(rq), lat.quantile(0.5) / 1e6,
                  lat.quantile(0.99) / 1e6, lat.quantile(0.999) / 1e6, static_cast<double>(lat.max()) / 1e6);
    }
  }
  std::printf("(batch: %u connections x %u frames in flight x %u events; pos: %u connections x 1 event, one in "
              "flight each; latencies over all repetitions)\n",
              opt.batch_conns, opt.window, opt.batch, opt.pos_conns);
  if (backends.size() == 2)
    std::printf("io_uring / asio: batch %.2fx, pos %.2fx\n", batch_med[0] / batch_med[1], pos_med[0] / pos_med[1]);
  double base = median(baseline);
  std::printf("in-process baseline (same ledger and events, no network, same events in flight): %.0f events/s; "
              "batch over TCP / in-process:",
              base);
  for (size_t b = 0; b < backends.size(); ++b)
    std::printf(" %s %.2fx", std::string(to_string(backends[b])).c_str(), batch_med[b] / base);
  std::printf("\n");
  std::printf("check: every request answered, none storage_failed: %s\n", failed == 0 ? "ok" : "FAILED");
  std::error_code ec;
  std::filesystem::remove_all(opt.dir, ec);
  return failed == 0 ? 0 : 1;
}
