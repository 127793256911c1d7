// Crash loop: a child process runs the durable ledger under load and is killed with SIGKILL at
// random moments, again and again, on the same data directory. The acknowledgements it printed
// are recorded here, outside the process being killed. After every kill:
//   - the log verifies (checksums, chain) and every acknowledged decision is in it, unchanged;
//   - no order reference is claimed twice (nothing credited twice);
//   - an event acknowledged before a crash and retried after it gets its original answer;
// and at the end the ledger recovers (every logged effect re-derives exactly) with every
// program's points invariant intact. The negative control runs the same loop with a child that
// acknowledges before its commit returns: the checks must catch it.
//
// Rounds: TALLY_CRASH_ROUNDS (default 20); the `soak` label runs 1000 (ctest -L soak).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/recovery.h"
#include "tests/crash_workload.h"
#include "tests/temp_dir.h"

extern char** environ;

namespace tally::storage {
namespace {

using tally::testing::TempDir;

struct Ack {
  uint32_t kind = 0;
  uint32_t result = 0;
  int64_t points = 0;
  uint32_t flags = 0;
};

struct Round {
  std::vector<std::pair<uint64_t, Ack>> acks;  // (event index, ack) in arrival order
  bool done = false;                           // the child finished before being killed
  int status = 0;
};

// Runs the child from event `start`, kills it after `kill_after` acknowledgements.
Round run_child(const std::string& dir, uint64_t start, uint64_t count, size_t kill_after, bool ack_early) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::string start_s = std::to_string(start), count_s = std::to_string(count);
  std::vector<char*> argv = {const_cast<char*>(TALLY_CRASH_CHILD), const_cast<char*>(dir.c_str()),
                             start_s.data(), count_s.data()};
  std::string flag = "--ack-before-commit";
  if (ack_early) argv.push_back(flag.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, TALLY_CRASH_CHILD, &fa, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("spawn " + std::string(TALLY_CRASH_CHILD));
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);

  Round r;
  std::string buf;
  char chunk[65536];
  bool killed = false;
  for (;;) {
    ssize_t n = read(fds[0], chunk, sizeof chunk);
    if (n <= 0) break;  // the child is gone
    buf.append(chunk, static_cast<size_t>(n));
    size_t pos = 0;
    for (size_t nl; (nl = buf.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      std::string line = buf.substr(pos, nl - pos);
      if (line == "DONE") {
        r.done = true;
        continue;
      }
      unsigned long long index, ref;
      unsigned kind, result, flags;
      long long points;
      if (std::sscanf(line.c_str(), "A %llu %u %u %lld %u %llu", &index, &kind, &result, &points, &flags, &ref) == 6)
        r.acks.push_back({index, Ack{kind, result, points, flags}});
    }
    buf.erase(0, pos);
    if (!killed && r.acks.size() >= kill_after) {
      kill(pid, SIGKILL);  // mid-stream: whatever the child is doing
      killed = true;
    }
  }
  close(fds[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

// Everything the checks know across rounds.
struct Ledgerbook {
  std::map<std::pair<uint64_t, uint32_t>, Ack> first;  // (index, kind) -> first acknowledgement
  std::vector<std::string> violations;
  uint64_t acks = 0;
  uint64_t highest = 0;

  void record(const Round& r) {
    for (const auto& [index, a] : r.acks) {
      ++acks;
      highest = std::max(highest, index);
      auto [it, fresh] = first.emplace(std::make_pair(index, a.kind), a);
      if (fresh) continue;
      const Ack& f = it->second;
      // A decision that claimed its order ID is final: a retry must get it back as a replay.
      if ((f.flags & kEffectClaimed) &&
          (!(a.flags & kEffectReplay) || a.result != f.result || a.points != f.points))
        violations.push_back("event " + std::to_string(index) + " acknowledged again with another answer");
    }
  }

  // The log after a kill: verifies, holds every acknowledged decision, claims each reference once.
  void check_log(const std::string& dir) {
    Store s({.dir = dir, .read_only = true});
    LogCheck c = verify_log(s);
    if (!c.ok) {
      violations.push_back("log does not verify at LSN " + std::to_string(c.bad_lsn) + ": " + c.error);
      return;
    }
    std::map<std::pair<uint64_t, uint32_t>, Effect> logged;  // first non-replay effect per event
    std::map<std::pair<uint64_t, uint64_t>, int> claims;
    std::vector<Effect> effects;
    s.scan(0, [&](uint64_t, std::span<const uint8_t> bytes) {
      effects.clear();
      BatchHeader h;
      decode_batch(bytes, &h, &effects);
      for (const Effect& f : effects) {
        if (f.flags & kEffectClaimed) ++claims[{f.event.ref.lo, f.event.ref.hi}];
        if (f.event.store == 0 || (f.flags & kEffectReplay)) continue;
        logged.emplace(std::make_pair(uint64_t{f.event.store - 1}, static_cast<uint32_t>(f.event.kind)), f);
      }
      return true;
    });
    for (const auto& [ref, n] : claims)
      if (n > 1) violations.push_back("reference " + std::to_string(ref.first) + " claimed " + std::to_string(n) + " times");
    for (const auto& [key, a] : first) {
      if (a.kind == static_cast<uint32_t>(EventKind::kBalance) || (a.flags & kEffectReplay)) continue;
      auto it = logged.find(key);
      if (it == logged.end()) {
        violations.push_back("acknowledged event " + std::to_string(key.first) + " is not in the log");
      } else if (static_cast<uint32_t>(it->second.result) != a.result || it->second.points != a.points) {
        violations.push_back("acknowledged event " + std::to_string(key.first) + " is in the log with another result");
      }
    }
  }
};

int rounds_from_env(int fallback) {
  const char* v = std::getenv("TALLY_CRASH_ROUNDS");
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

// The loop itself; returns the book. Stops early once a violation is found.
Ledgerbook crash_loop(const std::string& dir, int rounds, bool ack_early, uint64_t seed) {
  Ledgerbook book;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds && book.violations.empty(); ++round) {
    // Re-send the last 100 events before the highest acknowledged one, as a POS retries.
    uint64_t start = book.acks == 0 ? 0 : (book.highest > 100 ? book.highest - 100 : 0);
    size_t kill_after = std::uniform_int_distribution<size_t>(1, 2500)(rng);
    Round r = run_child(dir, start, 3000, kill_after, ack_early);
    if (WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0) {
      book.violations.push_back("child failed with status " + std::to_string(WEXITSTATUS(r.status)));
      break;
    }
    book.record(r);
    book.check_log(dir);
  }
  return book;
}

TEST(CrashLoopTest, EveryAcknowledgedEventSurvivesSigkillExactlyOnce) {
  TempDir dir;
  const int rounds = rounds_from_env(20);
  Ledgerbook book = crash_loop(dir.path(), rounds, false, 2026);
  for (const std::string& v : book.violations) ADD_FAILURE() << v;
  EXPECT_GT(book.acks, static_cast<uint64_t>(rounds));
  std::printf("crash loop: %d rounds, %llu acknowledgements checked\n", rounds,
              static_cast<unsigned long long>(book.acks));

  // Recovery after the last kill: every effect re-derives, and the books balance.
  LedgerOptions o = crash::ledger_options(dir.path());
  Ledger l(o, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string&) {});
  l.drain();
  ProgramStats t;
  int64_t balances = 0;
  for (uint16_t s = 0; s < l.pipeline().shard_count(); ++s) {
    const ProgramStats* ps = l.pipeline().shard(s).stats(1);
    t.issued += ps->issued;
    t.redeemed += ps->redeemed;
    t.clawed_back += ps->clawed_back;
    t.adjusted += ps->adjusted;
    t.transfer_out += ps->transfer_out;
    t.transfer_in += ps->transfer_in;
    t.transfer_bounced += ps->transfer_bounced;
    l.pipeline().shard(s).for_each_account(1, [&](uint64_t, const AccountState& a) { balances += a.available + a.held; });
  }
  int64_t in_transit = t.transfer_out - t.transfer_in - t.transfer_bounced;
  EXPECT_EQ(in_transit, 0);  // every transfer leg owed at a crash was re-sent and applied
  EXPECT_EQ(t.issued - t.redeemed - t.clawed_back + t.adjusted - in_transit, balances);
}

TEST(CrashLoopTest, NegativeControlAcknowledgingBeforeTheCommitIsCaught) {
  TempDir dir;
  Ledgerbook book = crash_loop(dir.path(), 40, true, 7);
  // The violation must be the one an early acknowledgement causes, not any failure at all.
  bool lost = false;
  for (const std::string& v : book.violations) lost |= v.find("is not in the log") != std::string::npos;
  EXPECT_TRUE(lost) << "a child that acknowledges before its commit went unnoticed in 40 kills; violations: "
                    << (book.violations.empty() ? "none" : book.violations.front());
}

}  // namespace
}  // namespace tally::storage
