// tally-export run as an operator runs it, against a server on 127.0.0.1: the whole log as JSON
// Lines or CSV, every record once in log order; SIGKILL at any moment while following, then a
// restart, leaves the file with every record exactly once (the lines written after the last
// cursor are cut); a program key exports its program only; clear refusals (a file without a
// cursor, another format, a trimmed start); the server-side cursor under --name.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/program.h"
#include "storage/log_codec.h"
#include "tests/run_binary.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/event_format.h"

using namespace tally;
using namespace tally::net;
using namespace tally::testing::two_programs;

namespace {



std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class ExportTest : public ::testing::Test {
 protected:
  void SetUp() override { stack_ = start(true); }
  std::unique_ptr<tally::testing::ServerStack> start(bool history_index) {
    tally::testing::StackOptions o;
    o.keys = keys();
    o.programs = programs();
    o.configure = [history_index](storage::LedgerOptions& lo) { lo.history.enabled = history_index; };
    return std::make_unique<tally::testing::ServerStack>(dir_.sub("data"), std::move(o));
  }
  void load(uint32_t key, uint32_t program, int frames, int per, const std::string& tag) {
    Client c(stack_->client(key));
    std::vector<Event> events;
    std::vector<WireResult> results;
    for (int a = 1; a <= per; ++a)
      events.push_back(tally::testing::event(EventKind::kEnroll, a, 0, "enroll-" + std::to_string(a), program));
    ASSERT_FALSE(c.submit(events, &results));
    for (int f = 0; f < frames; ++f) {
      events.clear();
      for (int a = 1; a <= per; ++a)
        events.push_back(tally::testing::event(EventKind::kEarn, a, 100 + f,
                                               tag + "-" + std::to_string(f) + "-" + std::to_string(a), program));
      ClientError e = c.submit(events, &results);
      ASSERT_FALSE(e) << e.message;
    }
  }
  // What the log holds, formatted: every record of `program` (0: all), from LSN `from` on.
  std::string expected(bool csv, uint32_t program = 0, uint64_t from = 1) {
    std::string out = csv ? csv_header() + "\n" : "";
    stack_->service->ledger().store().scan(from, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
      std::vector<Effect> fx;
      storage::BatchHeader h;
      EXPECT_EQ(storage::decode_batch(bytes, &h, &fx), storage::DecodeError::kOk);
      uint32_t kept = 0;
      for (uint32_t i = 0; i < fx.size(); ++i) {
        if (program != 0 && fx[i].event.program != program) continue;
        RecordPos at{lsn, program != 0 ? kept++ : i, h.epoch};
        csv ? append_csv(out, fx[i], at) : append_json(out, fx[i], at);
        out += '\n';
      }
      return true;
    });
    return out;
  }
  tally::testing::BinaryRun run_export(std::vector<std::string> args, uint32_t key = kReplicaKey) {
    args.insert(args.begin(), {"--port", std::to_string(stack_->server->port())});
    return tally::testing::run_binary(TALLY_EXPORT, args, env(key));
  }
  std::vector<std::string> env(uint32_t key) {
    return {"TALLY_KEY=" + std::to_string(key), "TALLY_SECRET=" + tally::testing::test_secret(key)};
  }
  std::string out_dir() {
    std::string d = dir_.sub("out");
    std::filesystem::create_directories(d);
    return d;
  }
  tally::testing::TempDir dir_{"tally-export-test"};
  std::unique_ptr<tally::testing::ServerStack> stack_;
};

}  // namespace

TEST_F(ExportTest, TheWholeLogAsJsonLinesEveryRecordOnceInLogOrder) {
  load(kPosKey, kProgram, 10, 100, "x");
  std::string out = out_dir() + "/events.jsonl";
  tally::testing::BinaryRun r = run_export({"--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string got = slurp(out);
  EXPECT_EQ(got, expected(false));
  EXPECT_EQ(count_lines(got), 100u + 10 * 100) << "enrolments and earns, one line each";
  // One line read the way a consumer reads it: the first earn of member 7.
  std::string ref = "\"ref\":\"" + ref_hex(reference_from_string("x-0-7")) + "\"";
  size_t at = got.find(ref);
  ASSERT_NE(at, std::string::npos);
  std::string line = got.substr(got.rfind('\n', at) + 1, got.find('\n', at) - got.rfind('\n', at) - 1);
  EXPECT_EQ(line.rfind("{\"v\":1,", 0), 0u) << line;
  EXPECT_NE(line.find("\"kind\":\"earn\",\"result\":\"ok\",\"program\":1,\"account\":7,"), std::string::npos) << line;
  EXPECT_NE(line.find("\"amount\":100,"), std::string::npos) << line;
  EXPECT_NE(line.find("\"flags\":[\"claimed\"]"), std::string::npos) << line;
  EXPECT_NE(r.err.find("1100 records"), std::string::npos) << r.err;
}

TEST_F(ExportTest, CsvHasItsHeaderOnceAndEveryColumnOnEveryLine) {
  load(kPosKey, kProgram, 3, 50, "x");
  std::string out = out_dir() + "/events.csv";
  tally::testing::BinaryRun r = run_export({"--format", "csv", "--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string got = slurp(out);
  EXPECT_EQ(got, expected(true));
  size_t columns = 1 + std::count(csv_header().begin(), csv_header().end(), ',');
  std::istringstream in(got);
  size_t n = 0;
  for (std::string line; std::getline(in, line); ++n)
    EXPECT_EQ(1 + std::count(line.begin(), line.end(), ','), static_cast<long>(columns)) << line;
  EXPECT_EQ(n, 1u + 50 + 3 * 50);
}

TEST_F(ExportTest, KilledWhileFollowingThenRestartedEveryRecordExactlyOnce) {
  std::string dir = out_dir();
  std::string out = dir + "/events.jsonl", cursor = out + ".cursor";
  load(kPosKey, kProgram, 2, 100, "warm");
  for (int round = 0; round < 3; ++round) {
    pid_t pid = tally::testing::start_binary(
        TALLY_EXPORT, {"--port", std::to_string(stack_->server->port()), "--follow", "--sync-ms", "0", "--out", out},
        env(kReplicaKey));
    ASSERT_GT(pid, 0);
    // Live events while it follows; killed once its cursor has moved past this round's start.
    uint64_t start = stack_->service->log_range().durable_lsn;
    load(kPosKey, kProgram, 5 + round * 3, 100, "r" + std::to_string(round));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      std::string c = slurp(cursor);
      size_t at = c.find("lsn=");
      if (at != std::string::npos && std::stoull(c.substr(at + 4)) > start) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the export made no progress: " << c;
      std::this_thread::yield();  // polling a file for a condition, with a deadline
    }
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    // A torn tail, as a kill between a write and its cursor leaves: cut at the restart.
    std::ofstream(out, std::ios::app) << "{\"v\":1,\"lsn\":99999,\"partial";
  }
  tally::testing::BinaryRun r = run_export({"--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(slurp(out), expected(false)) << "a record lost or repeated across the kills";
}

TEST_F(ExportTest, AProgramKeyExportsItsProgramOnly) {
  load(kPosKey, kProgram, 3, 50, "mine");
  load(kOtherPosKey, kOtherProgram, 3, 50, "theirs");
  std::string out = out_dir() + "/mine.jsonl";
  tally::testing::BinaryRun r = run_export({"--out", out}, kReaderKey);
  ASSERT_EQ(r.status, 0) << r.err;
  std::string got = slurp(out);
  EXPECT_EQ(got, expected(false, kProgram));
  EXPECT_EQ(got.find("\"program\":2,"), std::string::npos);
}

TEST_F(ExportTest, RefusalsSayWhatIsWrong) {
  load(kPosKey, kProgram, 2, 20, "x");
  std::string dir = out_dir();
  std::ofstream(dir + "/taken.jsonl") << "someone else's data\n";
  tally::testing::BinaryRun r = run_export({"--out", dir + "/taken.jsonl"});
  EXPECT_EQ(r.status, 5);
  EXPECT_NE(r.err.find("has no cursor"), std::string::npos) << r.err;

  ASSERT_EQ(run_export({"--out", dir + "/a.jsonl"}).status, 0);
  r = run_export({"--format", "csv", "--out", dir + "/a.jsonl"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("resume it with --format jsonl"), std::string::npos) << r.err;

  r = run_export({"--out", dir + "/b.jsonl"}, kPosKey);
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.err.find("forbidden"), std::string::npos) << r.err;
  EXPECT_EQ(run_export({"--bogus"}).status, 2);
  EXPECT_EQ(run_export({"--help"}).status, 0);
}

TEST_F(ExportTest, ATrimmedStartNamesTheOldestAndANamedCursorHoldsTheLog) {
  stack_.reset();
  stack_ = start(/*history_index=*/false);
  load(kPosKey, kProgram, 10, 100, "x");
  std::string dir = out_dir();
  // Exported under a name: the server keeps its cursor, and trimming stops there.
  tally::testing::BinaryRun r = run_export({"--out", dir + "/wh.jsonl", "--name", "warehouse"});
  ASSERT_EQ(r.status, 0) << r.err;
  uint64_t exported = stack_->service->log_range().durable_lsn;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (stack_->service->cursor("warehouse") != exported) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the server never recorded the cursor";
    std::this_thread::yield();
  }
  load(kPosKey, kProgram, 10, 100, "y");
  stack_->service->ledger().committer().request_checkpoint();
  ASSERT_TRUE(stack_->service->ledger().committer().wait_checkpoint(1));
  uint64_t oldest = stack_->service->log_range().oldest_lsn;
  EXPECT_EQ(oldest, exported + 1) << "trimmed past (or short of) the consumer's cursor";

  r = run_export({"--from", "1", "--out", dir + "/late.jsonl"});
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.err.find("the oldest the log holds is " + std::to_string(oldest)), std::string::npos) << r.err;
  // The named consumer resumes where it stopped, with nothing missing.
  r = run_export({"--out", dir + "/wh.jsonl", "--name", "warehouse"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string got = slurp(dir + "/wh.jsonl");
  EXPECT_EQ(count_lines(got), 2u * 100 + 20 * 100) << "two loads' enrolments (replays the second time) and earns";
}

// A consumer that arrives after the log was trimmed: the stream refuses LSN 1, so it loads a
// snapshot (taken from the live directory) tagged with its LSN, then follows from the next one.
// Snapshot plus the records after it give every member's current balance.
TEST_F(ExportTest, ALateConsumerBootstrapsFromASnapshotThenFollowsTheStream) {
  stack_.reset();
  stack_ = start(/*history_index=*/false);
  load(kPosKey, kProgram, 10, 100, "x");
  stack_->service->ledger().committer().request_checkpoint();
  ASSERT_TRUE(stack_->service->ledger().committer().wait_checkpoint(1));
  load(kPosKey, kProgram, 3, 100, "y");
  ASSERT_GT(stack_->service->log_range().oldest_lsn, 1u) << "nothing was trimmed";
  ASSERT_EQ(run_export({"--from", "1", "--out", out_dir() + "/full.jsonl"}).status, 3);

  tally::testing::BinaryRun snap = tally::testing::run_binary(TALLY_ADMIN, {"snapshot", dir_.sub("data")}, {});
  ASSERT_EQ(snap.status, 0) << snap.err;
  std::istringstream in(snap.out);
  std::string first;
  std::getline(in, first);
  ASSERT_EQ(first.rfind("{\"v\":1,\"snapshot\":{\"lsn\":", 0), 0u) << first;
  uint64_t at = std::stoull(first.substr(first.find("\"lsn\":") + 6));
  EXPECT_EQ(at, stack_->service->log_range().durable_lsn) << "an idle server: the snapshot is of its last batch";
  std::map<uint64_t, int64_t> balance;  // member -> available, as the snapshot says
  for (std::string line; std::getline(in, line);) {
    uint64_t account = std::stoull(line.substr(line.find("\"account\":") + 10));
    balance[account] = std::stoll(line.substr(line.find("\"available\":") + 12));
  }
  ASSERT_EQ(balance.size(), 100u);

  load(kPosKey, kProgram, 4, 100, "z");  // after the snapshot
  std::string tail = out_dir() + "/tail.jsonl";
  tally::testing::BinaryRun r = run_export({"--from", std::to_string(at + 1), "--out", tail});
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream t(tail);
  std::string line;
  ASSERT_TRUE(std::getline(t, line));
  EXPECT_NE(line.find("\"lsn\":" + std::to_string(at + 1) + ","), std::string::npos) << line;
  do {
    uint64_t account = std::stoull(line.substr(line.find("\"account\":") + 10));
    balance[account] = std::stoll(line.substr(line.find("\"available\":") + 12));  // the state after the record
  } while (std::getline(t, line));
  Client c(stack_->client(kPosKey));
  for (const auto& [account, available] : balance) {
    WireResult w = tally::testing::submit_one(c, tally::testing::event(EventKind::kBalance, account, 0, ""));
    ASSERT_EQ(w.available, available) << "member " << account;
  }
}
