// tally-stream-bench: how fast a tallyd's change stream delivers (docs/benchmarks.md,
// "Replication"). Subscribes like a follower or an export would (tools/log_stream.h: every batch
// checked, hash and chain, and decoded), and prints records/s and, while following a live log,
// the lag of each batch: the subscriber's clock when it was decoded minus the server time stamped
// on its newest record (when the primary received that event), so group commit, the fsync and the
// stream are all in it. Both clocks are this machine's (127.0.0.1 only).
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/histogram.h"
#include "tools/log_stream.h"

namespace {

using namespace tally;

constexpr const char* kHelp = R"(Usage: tally-stream-bench [options]

Subscribes to a tallyd's change stream and measures it.
  --host H --port N   the server (default 127.0.0.1:7411)
  --key ID --secret S a replica key (or reader/operator: its program only)
  --from LSN          first batch (default: the oldest the server holds)
  --from-end          start after the last durable batch: the live tail only
  --follow            keep following the live log for --seconds (default: read to the durable
                      LSN at the start, then stop: catch-up throughput)
  --seconds S         with --follow: how long (default 10)
  --warmup S          with --follow: seconds not measured at the start (default 2)
  --name NAME         subscribe as a named consumer (acks each batch)
  -h, --help          this text
Prints one JSON line starting with {"tally_stream_bench":.
)";

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  LogStreamOptions so;
  so.client.host = "127.0.0.1";
  so.client.port = 7411;
  so.request.from_lsn = 0;
  bool follow = false, from_end = false;
  double seconds = 10, warmup = 2;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (a == "--follow") {
      follow = true;
      continue;
    }
    if (a == "--from-end") {
      from_end = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "tally-stream-bench: %s needs a value (see --help)\n", argv[i]);
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--host") so.client.host = v;
    else if (a == "--port") so.client.port = static_cast<uint16_t>(std::stoul(v));
    else if (a == "--key") so.client.key_id = static_cast<uint32_t>(std::stoul(v));
    else if (a == "--secret") so.client.secret = v;
    else if (a == "--from") so.request.from_lsn = std::stoull(v);
    else if (a == "--seconds") seconds = std::stod(v);
    else if (a == "--warmup") warmup = std::stod(v);
    else if (a == "--name") so.request.name = v;
    else {
      std::fprintf(stderr, "tally-stream-bench: unknown option %s (see --help)\n", argv[i]);
      return 2;
    }
  }
  LogStream st;
  if (from_end) {
    LogStreamOptions probe = so;
    probe.request.name.clear();
    if (net::ClientError e = st.open(probe)) {
      std::fprintf(stderr, "tally-stream-bench: %s\n", e.message.c_str());
      return 3;
    }
    so.request.from_lsn = st.reply().durable_lsn + 1;
    st.close();
  }
  if (net::ClientError e = st.open(so)) {
    std::fprintf(stderr, "tally-stream-bench: %s\n", e.message.c_str());
    return 3;
  }
  const uint64_t end = follow ? UINT64_MAX : st.reply().durable_lsn;
  auto t0 = std::chrono::steady_clock::now();
  auto measured_from = t0 + std::chrono::milliseconds(static_cast<int64_t>(follow ? warmup * 1000 : 0));
  auto stop_at = measured_from + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  uint64_t records = 0, batches = 0, bytes = 0;
  LogHistogram lag_ms;
  StreamBatch b;
  bool measuring = !follow;
  while (st.next_lsn() <= end) {
    auto now = std::chrono::steady_clock::now();
    if (follow && now >= stop_at) break;
    if (!measuring && now >= measured_from) measuring = true;
    bool got = false;
    if (net::ClientError e = st.next(&b, 100, &got)) {
      std::fprintf(stderr, "tally-stream-bench: %s\n", e.message.c_str());
      return 4;
    }
    if (!got) continue;
    if (!so.request.name.empty()) (void)st.ack(b.header.lsn);
    if (!measuring) continue;
    ++batches;
    records += b.records.size();
    bytes += b.bytes.size();
    if (follow && !b.records.empty()) {
      int64_t newest = 0;
      for (const Effect& f : b.records) newest = std::max(newest, f.time_ms);
      lag_ms.record(static_cast<uint64_t>(std::max<int64_t>(0, wall_ms() - newest)));
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - (follow ? measured_from : t0)).count();
  std::printf("%s: %" PRIu64 " records in %" PRIu64 " batches (%.1f MB) in %.2f s: %.0f records/s\n",
              follow ? "live tail" : "catch-up", records, batches, static_cast<double>(bytes) / 1e6, secs,
              static_cast<double>(records) / secs);
  if (follow)
    std::printf("lag (server receipt of the newest record to decoded here): p50 %" PRIu64 " ms, p99 %" PRIu64
                " ms, max %" PRIu64 " ms\n",
                lag_ms.quantile(0.5), lag_ms.quantile(0.99), lag_ms.max());
  std::printf("{\"tally_stream_bench\":{\"mode\":\"%s\",\"records\":%" PRIu64 ",\"batches\":%" PRIu64
              ",\"seconds\":%.3f,\"records_per_s\":%.0f,\"lag_ms_p50\":%" PRIu64 ",\"lag_ms_p99\":%" PRIu64
              ",\"lag_ms_max\":%" PRIu64 "}}\n",
              follow ? "live" : "catch_up", records, batches, secs, static_cast<double>(records) / secs,
              lag_ms.quantile(0.5), lag_ms.quantile(0.99), lag_ms.max());
  return 0;
}
