#include "bench/load.h"

#include <poll.h>

#include <algorithm>
#include <ctime>
#include <deque>
#include <optional>

namespace tally::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct InFlight {
  uint64_t request_id;
  Clock::time_point intended;  // open loop: when it was due; closed loop: when it was sent
  std::span<const Event> events;
};

struct Conn {
  net::Connection conn;
  std::deque<InFlight> inflight;
};

Clock::duration seconds(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

}  // namespace

LoadResult run_load(const LoadOptions& o, const NextFrame& next, const CheckReply& check, const Progress& progress) {
  LoadResult res;
  std::vector<Conn> cs;
  for (uint32_t i = 0; i < o.connections; ++i) {
    net::ClientError e;
    std::optional<net::Connection> c = net::Connection::open(o.client, &e);
    if (!c) {
      ++res.errors;
      res.first_error = "connect: " + e.message;
      return res;
    }
    cs.push_back({std::move(*c), {}});
  }
  const bool open_loop = o.rate_events_per_s > 0;
  const Clock::duration interval =
      open_loop ? seconds(static_cast<double>(o.events_per_frame) / o.rate_events_per_s) : Clock::duration{};
  const Clock::time_point t0 = Clock::now();
  const Clock::time_point measure_from = t0 + seconds(o.warmup_s);
  const Clock::time_point end = measure_from + seconds(o.duration_s);
  Clock::time_point next_due = t0;
  uint64_t sent = 0;
  bool sending = true;

  LogHistogram second_hist;
  uint64_t second_events = 0;
  Clock::time_point next_progress = t0 + std::chrono::seconds(1);

  auto send_on = [&](Conn& c, Clock::time_point intended) {
    std::span<const Event> ev = next(o.events_per_frame);
    uint64_t id = 0;
    if (net::ClientError e = c.conn.send_events(ev, &id)) {
      if (res.first_error.empty()) res.first_error = "send: " + e.message;
      ++res.errors;
      sending = false;
      return;
    }
    c.inflight.push_back({id, intended, ev});
    ++sent;
  };

  if (!open_loop)
    for (Conn& c : cs)
      for (uint32_t d = 0; d < o.depth; ++d) send_on(c, Clock::now());

  std::vector<pollfd> fds(cs.size());
  net::Reply reply;
  for (;;) {
    Clock::time_point now = Clock::now();
    if (sending && now >= end) sending = false;
    // Open loop: send everything that is due, on connections with room, round robin.
    if (open_loop && sending) {
      while (next_due <= now) {
        Conn* free_conn = nullptr;
        for (size_t k = 0; k < cs.size() && !free_conn; ++k) {
          Conn& c = cs[(sent + k) % cs.size()];
          if (c.inflight.size() < o.depth) free_conn = &c;
        }
        if (!free_conn) break;  // all full: it stays due, and its wait will count
        send_on(*free_conn, next_due);
        next_due += interval;
      }
    }
    size_t open = 0;
    bool buffered = false;
    for (size_t i = 0; i < cs.size(); ++i) {
      fds[i] = {cs[i].inflight.empty() ? -1 : cs[i].conn.fd(), POLLIN, 0};
      open += !cs[i].inflight.empty();
      buffered |= !cs[i].inflight.empty() && cs[i].conn.reply_buffered();
    }
    if (open == 0 && !sending) break;
    // Waits until the next request is due, to the microsecond: a wait rounded down to whole
    // milliseconds was no wait at all below 1000 requests/s per ms, and the client spun a core
    // that the server, on the same machine, needed (open-loop p99 of 17 ms at a tenth of the
    // POS peak).
    int64_t wait_ns = 100'000'000;
    if (open_loop && sending)
      wait_ns = std::clamp<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(next_due - now).count(), 0,
                                    wait_ns);
    if (buffered) wait_ns = 0;
    timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000), static_cast<long>(wait_ns % 1'000'000'000)};
    ppoll(fds.data(), fds.size(), &ts, nullptr);
    for (size_t i = 0; i < cs.size(); ++i) {
      Conn& c = cs[i];
      while (!c.inflight.empty() && ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) || c.conn.reply_buffered())) {
        fds[i].revents = 0;
        net::ClientError e = c.conn.receive(&reply, 30'000);
        if (!e && (reply.request_id != c.inflight.front().request_id ||
                   reply.results.size() != c.inflight.front().events.size()))
          e = net::ClientError{net::ClientError::Kind::kProtocol, net::ErrorCode::kNone, "reply does not match its request"};
        if (e) {
          if (res.first_error.empty()) res.first_error = "receive: " + e.message;
          res.errors += c.inflight.size();
          c.inflight.clear();
          sending = false;
          break;
        }
        Clock::time_point done = Clock::now();
        InFlight f = c.inflight.front();
        c.inflight.pop_front();
        check(f.events, reply.results);
        uint64_t ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(done - f.intended).count());
        if (f.intended >= measure_from && f.intended < end) {
          res.latency_ns.record(ns);
          ++res.requests;
          res.events += f.events.size();
        }
        second_hist.record(ns);
        second_events += f.events.size();
        if (!open_loop && sending) send_on(c, Clock::now());
      }
    }
    now = Clock::now();
    if (progress && now >= next_progress) {
      progress(std::chrono::duration<double>(now - t0).count(), second_events, second_hist);
      second_hist = LogHistogram{};
      second_events = 0;
      next_progress += std::chrono::seconds(1);
    }
  }
  res.seconds = o.duration_s;
  return res;
}

}  // namespace tally::bench
