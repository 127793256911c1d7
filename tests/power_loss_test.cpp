// Simulated power loss and a failing disk, through libtally_fault_shim.so (tests/fault_shim.cpp)
// preloaded into tally_crash_child.
//
// Power loss: SIGKILL leaves the page cache intact, so it cannot show that a commit reached the
// disk. Here the shim journals every write and sync of data.mdb and every acknowledgement, in the
// order they happened. From one run, the test builds the file a power cut at many points would
// have left: only what was synced by then, or that plus a random subset of the unsynced writes,
// some torn at 512-byte sectors. Recovery must open every image, and every event acknowledged
// before the cut must be in it. Negative control: a child with MDB_NOSYNC must be caught.
//
// Failing disk: the shim fails the Nth fsync with EIO, the Nth write with ENOSPC, or makes it
// short. The child must stop with a storage failure and acknowledge nothing the failed commit
// held; a restart on the same directory must hold every acknowledged event. Negative control: a
// child that acknowledges before its commit returns must be caught.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "storage/ledger.h"
#include "tests/crash_check.h"
#include "tests/crash_workload.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

struct Entry {
  char type;
  bool durable;
  uint64_t offset;
  std::string data;
};

std::vector<Entry> read_journal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<Entry> out;
  size_t pos = 0;
  while (pos + 16 <= bytes.size()) {
    Entry e;
    e.type = bytes[pos];
    e.durable = bytes[pos + 1] != 0;
    uint32_t len;
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    std::memcpy(&e.offset, bytes.data() + pos + 8, 8);
    if (pos + 16 + len > bytes.size()) break;
    e.data = bytes.substr(pos + 16, len);
    out.push_back(std::move(e));
    pos += 16 + len;
  }
  return out;
}

enum class Unsynced { kDropped, kSomeKept, kSomeTorn };

// The data file a power cut just before journal entry `cut` could leave behind.
std::string image_at(const std::vector<Entry>& j, size_t cut, Unsynced mode, std::mt19937_64& rng) {
  // A write is on disk at the cut if it went through a synchronous descriptor or a sync of the
  // file followed it before the cut.
  std::vector<bool> synced(cut, false);
  bool sync_after = false;
  for (size_t i = cut; i-- > 0;) {
    if (j[i].type == 'S') sync_after = true;
    if (j[i].type == 'W') synced[i] = j[i].durable || sync_after;
  }
  std::string file;
  auto put = [&](uint64_t off, const std::string& data, size_t n) {
    if (file.size() < off + n) file.resize(off + n, '\0');
    std::memcpy(file.data() + off, data.data(), n);
  };
  for (size_t i = 0; i < cut; ++i) {
    const Entry& e = j[i];
    if (e.type == 'T') {
      file.resize(e.offset, '\0');
    } else if (e.type == 'W') {
      if (synced[i]) {
        put(e.offset, e.data, e.data.size());
      } else if (mode != Unsynced::kDropped && rng() % 2 == 0) {
        size_t n = e.data.size();
        if (mode == Unsynced::kSomeTorn) n = std::min(n, (rng() % (n / 512 + 1)) * 512);  // whole sectors
        put(e.offset, e.data, n);
      }
    }
  }
  return file;
}

std::vector<std::pair<uint64_t, Ack>> acks_before(const std::vector<Entry>& j, size_t cut) {
  std::vector<std::pair<uint64_t, Ack>> acks;
  std::string text;
  for (size_t i = 0; i < cut; ++i)
    if (j[i].type == 'A') text += j[i].data;
  size_t pos = 0;
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    uint64_t index;
    Ack a;
    if (parse_ack(text.substr(pos, nl - pos), &index, &a)) acks.push_back({index, a});
  }
  return acks;
}

std::vector<std::string> shim_env(const std::string& dir, const std::string& journal, const std::string& fail = "") {
  std::vector<std::string> env = {std::string("LD_PRELOAD=") + TALLY_FAULT_SHIM, "TALLY_SHIM_FILE=" + dir + "/data.mdb",
                                  "TALLY_SHIM_ACK_FD=1"};
  if (!journal.empty()) env.push_back("TALLY_SHIM_JOURNAL=" + journal);
  if (!fail.empty()) env.push_back("TALLY_SHIM_FAIL=" + fail);
  return env;
}

// Runs one journaled child, then checks `cuts` power cuts in each of the three modes. Returns the
// violations found (the first few).
std::vector<std::string> power_cuts(bool no_sync, int cuts, uint64_t seed, int* images_checked) {
  TempDir work;
  std::string dir = work.sub("data"), journal = work.sub("journal");
  std::vector<std::string> flags;
  if (no_sync) flags.push_back("--unsafe-no-sync");
  Round r = run_child(dir, 0, 2500, 0, flags, shim_env(dir, journal));
  if (!r.done) return {"the journaled child did not finish (status " + std::to_string(r.status) + ")"};
  std::vector<Entry> j = read_journal(journal);
  size_t first_sync = j.size();
  for (size_t i = 0; i < j.size(); ++i)
    if (j[i].type == 'S' || (j[i].type == 'W' && j[i].durable)) {
      first_sync = i;
      break;
    }
  std::vector<std::string> violations;
  std::mt19937_64 rng(seed);
  std::vector<size_t> points;
  for (int c = 0; c < cuts; ++c) points.push_back(rng() % (j.size() + 1));
  points.push_back(j.size());  // the whole run: the state after a clean finish without a flush
  for (size_t cut : points) {
    for (Unsynced mode : {Unsynced::kDropped, Unsynced::kSomeKept, Unsynced::kSomeTorn}) {
      // Before the directory's first durable commit nothing was acknowledged and the environment
      // itself may be half-created: only the "synced only" image (empty) is meaningful there.
      if (cut <= first_sync && mode != Unsynced::kDropped) continue;
      std::string image = image_at(j, cut, mode, rng);
      TempDir img;
      {
        std::ofstream out(img.path() + "/data.mdb", std::ios::binary);
        out.write(image.data(), static_cast<std::streamsize>(image.size()));
      }
      ++*images_checked;
      try {
        Ledger l(crash::ledger_options(img.path()), [](std::span<const Effect>, uint64_t) {},
                 [](std::span<const Effect>, const std::string&) {});
        l.drain();
      } catch (const std::exception& e) {
        violations.push_back("recovery could not open the image cut at journal entry " + std::to_string(cut) +
                             ": " + e.what());
        continue;
      }
      Ledgerbook book;
      book.record(acks_before(j, cut));
      book.check_log(img.path());
      for (const std::string& v : book.violations)
        violations.push_back("cut at entry " + std::to_string(cut) + ": " + v);
      if (violations.size() > 5) return violations;
    }
  }
  return violations;
}

TEST(PowerLossTest, EveryEventAcknowledgedBeforeACutSurvivesIt) {
  int images = 0;
  std::vector<std::string> v = power_cuts(false, 30, 11, &images);
  for (const std::string& s : v) ADD_FAILURE() << s;
  EXPECT_GT(images, 60);
  std::printf("power loss: %d crash images checked\n", images);
}

TEST(PowerLossTest, NegativeControlAChildThatSyncsNothingIsCaught) {
  int images = 0;
  std::vector<std::string> v = power_cuts(true, 10, 12, &images);
  bool lost = false;
  for (const std::string& s : v) lost |= s.find("is not in the log") != std::string::npos;
  EXPECT_TRUE(lost) << "MDB_NOSYNC went unnoticed; first violation: " << (v.empty() ? "none" : v.front());
}

// ---- failing disk -------------------------------------------------------------------------------

struct FaultRun {
  Round child;
  std::vector<std::string> violations;
};

FaultRun failing_disk(const std::string& fail, bool ack_early) {
  TempDir work;
  std::string dir = work.sub("data");
  FaultRun f;
  std::vector<std::string> flags;
  if (ack_early) flags.push_back("--ack-before-commit");
  f.child = run_child(dir, 0, 4000, 0, flags, shim_env(dir, "", fail));
  // The restart, without the fault, must hold every acknowledged event.
  try {
    Ledger l(crash::ledger_options(dir), [](std::span<const Effect>, uint64_t) {},
             [](std::span<const Effect>, const std::string&) {});
    l.drain();
  } catch (const std::exception& e) {
    f.violations.push_back(std::string("restart failed: ") + e.what());
    return f;
  }
  Ledgerbook book;
  book.record(f.child);
  book.check_log(dir);
  f.violations = book.violations;
  return f;
}

class FailingDiskTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FailingDiskTest, WritesStopLoudlyAndNothingUnwrittenWasAcknowledged) {
  FaultRun f = failing_disk(GetParam(), false);
  // The child stopped on the storage failure (exit status 4), after acknowledging some events.
  ASSERT_TRUE(WIFEXITED(f.child.status)) << "status " << f.child.status;
  EXPECT_EQ(WEXITSTATUS(f.child.status), 4) << "the child did not report a storage failure";
  EXPECT_FALSE(f.child.done);
  EXPECT_GT(f.child.acks.size(), 0u);
  for (const std::string& v : f.violations) ADD_FAILURE() << v;
}

// The 5th sync, the 12th and the 14th write: past the directory's creation, inside the load.
INSTANTIATE_TEST_SUITE_P(Faults, FailingDiskTest, ::testing::Values("fsync=5", "enospc=12", "short=14"));

TEST(FailingDiskTest, NegativeControlAcknowledgingBeforeTheFailedCommitIsCaught) {
  FaultRun f = failing_disk("fsync=5", true);
  bool lost = false;
  for (const std::string& v : f.violations) lost |= v.find("is not in the log") != std::string::npos;
  EXPECT_TRUE(lost) << "acknowledgements of a failed commit went unnoticed";
}

}  // namespace
}  // namespace tally::storage
