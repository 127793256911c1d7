// tally_crash_child: the process the crash tests kill. It opens a durable Ledger on DIR and sends
// a deterministic loyalty workload from event index START on, writing one line per acknowledged
// effect to stdout as soon as the committer releases it:
//   A <index> <kind> <result> <points> <flags> <ref.lo>
// (index = the event's `store` field - 1; flags = effect flags). The parent records these lines:
// acknowledgements are kept outside the process being killed. Events regenerate identically from
// their index, so a restarted child re-sends the events around the crash as a POS would retry.
//
//   tally_crash_child DIR START COUNT [--trim] [--ack-before-commit] [--unsafe-no-sync]
// Checkpoints run every ~64 KiB of log; the log is trimmed behind them only with --trim (without
// it a consumer cursor holds the whole log for the parent's checks). The other flags are the
// negative controls: --ack-before-commit releases before the commit returns,
// --unsafe-no-sync opens LMDB with MDB_NOSYNC (nothing is flushed).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "storage/ledger.h"
#include "tests/crash_workload.h"

int main(int argc, char** argv) {
  using namespace tally;
  if (argc < 4) {
    std::fprintf(stderr, "usage: tally_crash_child DIR START COUNT [--ack-before-commit] [--unsafe-no-sync]\n");
    return 2;
  }
  std::string dir = argv[1];
  uint64_t start = std::strtoull(argv[2], nullptr, 10);
  uint64_t count = std::strtoull(argv[3], nullptr, 10);
  storage::LedgerOptions o = crash::ledger_options(dir);
  bool trim = false;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--trim") == 0) {
      trim = true;
    } else if (std::strcmp(argv[i], "--ack-before-commit") == 0) {
      o.committer.unsafe_ack_before_commit = true;
    } else if (std::strcmp(argv[i], "--unsafe-no-sync") == 0) {
      o.store.unsafe_no_sync = true;
    } else {
      std::fprintf(stderr, "tally_crash_child: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  auto durable = [](std::span<const Effect> effects, uint64_t) {
    std::string out;
    for (const Effect& f : effects) {
      if (f.event.store == 0) continue;  // not one of ours (none expected)
      char line[160];
      int n = std::snprintf(line, sizeof line, "A %u %u %u %lld %u %llu\n", f.event.store - 1,
                            static_cast<unsigned>(f.event.kind), static_cast<unsigned>(f.result),
                            static_cast<long long>(f.points), static_cast<unsigned>(f.flags),
                            static_cast<unsigned long long>(f.event.ref.lo));
      out.append(line, static_cast<size_t>(n));
    }
    // One write per release: the parent sees each acknowledgement before the next commit starts.
    const char* p = out.data();
    size_t left = out.size();
    while (left > 0) {
      ssize_t w = ::write(1, p, left);
      if (w <= 0) std::_Exit(3);  // the parent is gone
      p += w;
      left -= static_cast<size_t>(w);
    }
  };
  auto failed = [](std::span<const Effect>, const std::string& why) {
    std::fprintf(stderr, "tally_crash_child: storage failed: %s\n", why.c_str());
    std::_Exit(4);
  };
  try {
    storage::Ledger ledger(o, durable, failed);
    if (trim) {
      ledger.committer().request_checkpoint();  // a round at once: kills land in it or in its trim
    } else {
      // Without --trim, a consumer cursor at LSN 0 keeps the whole log (checkpoints still run), so
      // the parent can find every acknowledged decision in it.
      std::pair<std::string, std::string> cursor[] = {{"cursor.crash-check", "0"}};
      ledger.store().commit({}, cursor);
    }
    ServerClock clock;
    std::vector<Event> batch;
    for (uint64_t i = start; i < start + count; ++i) {
      batch.push_back(crash::event_at(i));
      if (batch.size() == 40) {
        ledger.pipeline().submit(0, batch, clock.now_ms());
        batch.clear();
      }
    }
    if (!batch.empty()) ledger.pipeline().submit(0, batch, clock.now_ms());
    ledger.drain();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally_crash_child: %s\n", e.what());
    return 1;
  }
  std::fputs("DONE\n", stdout);
  return 0;
}
