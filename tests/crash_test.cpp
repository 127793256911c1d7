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

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "storage/ledger.h"
#include "tests/crash_check.h"
#include "tests/crash_workload.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

int rounds_from_env(int fallback) {
  const char* v = std::getenv("TALLY_CRASH_ROUNDS");
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

// The loop itself; returns the book. Stops early once a violation is found.
Ledgerbook crash_loop(const std::string& dir, int rounds, bool ack_early, uint64_t seed, bool trim = false) {
  Ledgerbook book;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds && book.violations.empty(); ++round) {
    // Re-send the last 100 events before the highest acknowledged one, as a POS retries.
    uint64_t start = book.acks == 0 ? 0 : (book.highest > 100 ? book.highest - 100 : 0);
    size_t kill_after = std::uniform_int_distribution<size_t>(1, 2500)(rng);
    std::vector<std::string> flags;
    if (ack_early) flags.push_back("--ack-before-commit");
    if (trim) flags.push_back("--trim");
    Round r = run_child(dir, start, 3000, kill_after, flags);
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
    t += *l.pipeline().shard(s).stats(1);
    l.pipeline().shard(s).for_each_account(1, [&](uint64_t, const AccountState& a) { balances += a.available + a.held; });
  }
  EXPECT_EQ(t.in_transit(), 0);  // every transfer leg owed at a crash was re-sent and applied
  EXPECT_EQ(t.expected_balances(), balances);
}

// The same loop with the log trimmed behind every checkpoint: recovery loads the checkpoint and
// replays the rest, retries of trimmed orders still get their original answer, and every
// acknowledged claim is in the log or the checkpointed references, once.
TEST(CrashLoopTest, EveryAcknowledgedEventSurvivesSigkillWithTheLogTrimmedBehindCheckpoints) {
  TempDir dir;
  const int rounds = rounds_from_env(20);
  Ledgerbook book = crash_loop(dir.path(), rounds, false, 2027, true);
  for (const std::string& v : book.violations) ADD_FAILURE() << v;
  EXPECT_GT(book.acks, static_cast<uint64_t>(rounds));
  Store s({.dir = dir.path(), .read_only = true});
  ASSERT_TRUE(s.meta("trim_lsn").has_value()) << "the loop never trimmed: the test tested nothing new";
  std::printf("crash loop with trimming: %d rounds, %llu acknowledgements checked, log trimmed to LSN %s\n", rounds,
              static_cast<unsigned long long>(book.acks), s.meta("trim_lsn")->c_str());
}

TEST(CrashLoopTest, NegativeControlAcknowledgingBeforeTheCommitIsCaughtWithTrimming) {
  TempDir dir;
  Ledgerbook book = crash_loop(dir.path(), 40, true, 8, true);
  bool lost = false;
  for (const std::string& v : book.violations)
    lost |= v.find("is not in the log") != std::string::npos || v.find("neither in the log") != std::string::npos ||
            v.find("another answer") != std::string::npos;
  EXPECT_TRUE(lost) << "a child that acknowledges before its commit went unnoticed in 40 kills; violations: "
                    << (book.violations.empty() ? "none" : book.violations.front());
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
