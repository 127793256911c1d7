// Tally benchmarks: the load driver shared by tally-bench and tally_net_bench.
//
// One thread drives many connections with poll(): each request is a frame of events taken in
// order from a source, and each reply is handed to a checker with the events it answers.
//   Closed loop: every connection keeps `depth` requests in flight; throughput is what the server
//                gives. Latency is from the send.
//   Open loop:   requests are due at a fixed rate (one every 1/rate s, spread over connections)
//                and latency is measured from each request's *intended* send time, so a stall of
//                the server shows in the percentiles instead of slowing the clock (no
//                coordinated omission). A request due while its connection has `depth` in flight
//                waits, and its wait counts.
// Everything goes to the address given (127.0.0.1 in every tool and test here), bounded by a
// duration, and stops by itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/histogram.h"
#include "net/client.h"

namespace tally::bench {

struct LoadOptions {
  net::ClientOptions client;
  uint32_t connections = 4;
  uint32_t depth = 4;            // requests in flight per connection (closed loop: always)
  uint32_t events_per_frame = 1000;
  double rate_events_per_s = 0;  // 0: closed loop; else open loop at this arrival rate
  double warmup_s = 0;           // replies before this are checked but not measured
  double duration_s = 10;        // measured time, after the warm-up
};

struct LoadResult {
  uint64_t requests = 0;  // measured (after the warm-up)
  uint64_t events = 0;
  double seconds = 0;     // measured time
  LogHistogram latency_ns;
  uint64_t errors = 0;    // transport or protocol errors (each fails the run)
  std::string first_error;
  double events_per_s() const { return seconds > 0 ? static_cast<double>(events) / seconds : 0; }
};

// The events of the next request (`n` of them, from the caller's plan), and the check of its
// reply: `events` is what was sent, `results` what came back, in order.
using NextFrame = std::function<std::span<const Event>(size_t n)>;
using CheckReply = std::function<void(std::span<const Event> events, std::span<const net::WireResult> results)>;
// Called about once a second with what was measured so far in that second.
using Progress = std::function<void(double at_s, uint64_t events, const LogHistogram& latency_ns)>;

// Opens the connections (failing: errors > 0 and no load), runs, drains what is in flight.
LoadResult run_load(const LoadOptions& options, const NextFrame& next, const CheckReply& check,
                    const Progress& progress = {});

}  // namespace tally::bench
