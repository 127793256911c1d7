// tally-admin, run as the operator runs it: verify, dump, stats, backup, restore and repair on a
// real data directory, checking exit codes and what they print.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "storage/ledger.h"
#include "tests/crash_workload.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

struct AdminRun {
  int status = -1;
  std::string out;
};

AdminRun admin(const std::string& args) {
  AdminRun r;
  std::string cmd = std::string(TALLY_ADMIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// A data directory with a few thousand effects of every kind the crash workload sends.
void fill(const std::string& dir) {
  LedgerOptions o = crash::ledger_options(dir);
  o.checkpoints = false;             // the whole log stays, for `dump` to compare with
  o.history.segment_records = 500;   // history and lookup span several index segments and the log
  Ledger l(o, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string&) {});
  std::vector<Event> events;
  for (uint64_t i = 0; i < 3000; ++i) events.push_back(crash::event_at(i));
  for (size_t i = 0; i < events.size(); i += 100)
    l.pipeline().submit(0, std::span(events).subspan(i, 100), 1'767'225'600'000 + static_cast<int64_t>(i));
  l.drain();
}

void corrupt_batch(const std::string& dir, uint64_t lsn) {
  std::vector<uint8_t> victim;
  {
    Store s({.dir = dir, .read_only = true});
    victim = s.batch(lsn);
  }
  std::string file = dir + "/data.mdb";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  std::string header(victim.begin(), victim.begin() + 64);
  for (size_t at = bytes.find(header); at != std::string::npos; at = bytes.find(header, at + 1)) {
    f.seekp(static_cast<std::streamoff>(at + 70));
    f.put(static_cast<char>(bytes[at + 70] ^ 0x01));  // every copy: LMDB keeps stale page copies
  }
}

TEST(AdminTest, HelpAndUsageErrors) {
  EXPECT_EQ(admin("--help").status, 0);
  EXPECT_NE(admin("--help").out.find("verify DIR"), std::string::npos);
  EXPECT_EQ(admin("").status, 2);
  EXPECT_EQ(admin("frobnicate x").status, 2);
  EXPECT_EQ(admin("verify").status, 2);
  EXPECT_EQ(admin("dump x --from notanumber").status, 2);
  TempDir empty;
  AdminRun r = admin("verify " + empty.sub("nothing"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no Tally data"), std::string::npos) << r.out;
}

TEST(AdminTest, VerifyDumpStatsOnAHealthyDirectory) {
  TempDir dir;
  fill(dir.path());
  AdminRun v = admin("verify " + dir.path());
  EXPECT_EQ(v.status, 0) << v.out;
  EXPECT_NE(v.out.find("checksums and chain ok"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("invariant holds"), std::string::npos) << v.out;
  AdminRun d = admin("dump " + dir.path() + " --from 2 --to 2");
  EXPECT_EQ(d.status, 0);
  size_t lines = 0;
  for (char c : d.out) lines += c == '\n';
  EXPECT_GT(lines, 5u);
  EXPECT_EQ(d.out.find("\"lsn\":1,"), std::string::npos);  // the range is respected
  EXPECT_NE(d.out.find("\"lsn\":2,"), std::string::npos);
  AdminRun s = admin("stats " + dir.path());
  EXPECT_EQ(s.status, 0);
  EXPECT_NE(s.out.find("shards: 2"), std::string::npos) << s.out;
}

TEST(AdminTest, BackupRestoreRoundTripAndRefusals) {
  TempDir dir, out;
  fill(dir.path());
  AdminRun b = admin("backup " + dir.path() + " " + out.sub("copy"));
  ASSERT_EQ(b.status, 0) << b.out;
  EXPECT_EQ(admin("backup " + dir.path() + " " + out.sub("copy")).status, 1);  // never overwrites
  AdminRun r = admin("restore " + out.sub("copy") + " " + out.sub("restored"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(admin("restore " + out.sub("copy") + " " + dir.path()).status, 1);  // target holds data
  AdminRun v = admin("verify " + out.sub("restored"));
  EXPECT_EQ(v.status, 0) << v.out;
  // The restored directory opens as a ledger with the same history.
  Ledger l(crash::ledger_options(out.sub("restored")), [](std::span<const Effect>, uint64_t) {},
           [](std::span<const Effect>, const std::string&) {});
  Store original({.dir = dir.path(), .read_only = true});
  EXPECT_EQ(l.recovery().last_lsn, original.last_lsn());
}

TEST(AdminTest, VerifyNamesTheBadBatchAndRepairTruncatesThere) {
  TempDir dir;
  fill(dir.path());
  uint64_t last;
  {
    Store s({.dir = dir.path(), .read_only = true});
    last = s.last_lsn();
  }
  ASSERT_GT(last, 10u);
  uint64_t bad = last - 3;
  corrupt_batch(dir.path(), bad);
  AdminRun v = admin("verify " + dir.path());
  EXPECT_EQ(v.status, 1);
  EXPECT_NE(v.out.find("FAILED at LSN " + std::to_string(bad)), std::string::npos) << v.out;
  AdminRun r = admin("repair " + dir.path());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("dropped 4 batches"), std::string::npos) << r.out;
  EXPECT_EQ(admin("verify " + dir.path()).status, 0);
  Ledger l(crash::ledger_options(dir.path()), [](std::span<const Effect>, uint64_t) {},
           [](std::span<const Effect>, const std::string&) {});
  EXPECT_EQ(l.recovery().last_lsn, bad - 1);
}

TEST(AdminTest, LookupFindsAnOrdersDecisionAndHistoryPagesThroughAMember) {
  TempDir dir;
  fill(dir.path());
  AdminRun d = admin("dump " + dir.path());
  ASSERT_EQ(d.status, 0);
  // An accepted earn, from the dump: its reference and account.
  size_t at = d.out.find("\"kind\":\"earn\",\"result\":\"ok\"");
  ASSERT_NE(at, std::string::npos);
  size_t ref_at = d.out.find("\"ref\":\"", at) + 7;
  std::string ref = d.out.substr(ref_at, 32);
  size_t acc_at = d.out.find("\"account\":", at) + 10;
  std::string account = d.out.substr(acc_at, d.out.find(',', acc_at) - acc_at);

  AdminRun l = admin("lookup " + dir.path() + " --ref " + ref);
  EXPECT_EQ(l.status, 0);
  EXPECT_NE(l.out.find("earn account " + account), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("(claimed the reference)"), std::string::npos) << l.out;
  EXPECT_NE(admin("lookup " + dir.path() + " no-such-order").out.find("no effect"), std::string::npos);
  {
    Store s({.dir = dir.path(), .read_only = true});
    ASSERT_GE(std::stoul(s.meta("history_segments").value_or("0")), 1u) << "the index was not exercised";
  }

  // Paging through the member's history in pages of 7 sees every effect of theirs exactly once.
  size_t in_dump = 0;
  for (size_t p = d.out.find("\"account\":" + account + ","); p != std::string::npos;
       p = d.out.find("\"account\":" + account + ",", p + 1))
    ++in_dump;
  size_t seen = 0;
  std::string before;
  for (int page = 0; page < 1000; ++page) {
    AdminRun h = admin("history " + dir.path() + " " + account + " --limit 7" + before);
    ASSERT_EQ(h.status, 0) << h.out;
    for (size_t p = h.out.find("LSN "); p != std::string::npos; p = h.out.find("\nLSN ", p + 1)) ++seen;
    size_t more = h.out.find("more: ");
    if (more == std::string::npos) break;
    before.assign(1, ' ');  // (not " " + string: GCC 12 warns -Wrestrict on that, falsely)
    before.append(h.out, more + 6, h.out.find('\n', more) - more - 6);
  }
  EXPECT_EQ(seen, in_dump);
  EXPECT_GT(seen, 7u);
}

// tally-admin segment: who a message should go to. Five members of a program whose points live 60
// days: 1 and 2 enrolled on day 0, 3 to 5 on day 30 with purchases; statements as of day 55.
TEST(AdminTest, SegmentChoosesMembersByExpiryInactivityTierAndBalance) {
  TempDir dir("tally-admin-segment");
  const int64_t t0 = 1'767'225'600'000;  // 2026-01-01
  {
    LedgerOptions o = crash::ledger_options(dir.path());
    o.checkpoints = false;
    Program& p = o.pipeline.programs[0];
    p.lots.expiry = ExpiryKind::kDays;
    p.lots.expiry_days = 60;
    Ledger l(o, [](std::span<const Effect>, uint64_t) {}, [](std::span<const Effect>, const std::string&) {});
    auto ev = [&](EventKind kind, uint64_t account, const std::string& id, int64_t amount) {
      Event e{};
      e.kind = kind;
      e.program = p.id;
      e.account = account;
      e.amount = amount;
      e.ref = reference_from_string(id);
      return e;
    };
    std::vector<Event> day0 = {ev(EventKind::kEnroll, 1, "e1", 0), ev(EventKind::kEnroll, 2, "e2", 0)};
    l.pipeline().submit(0, day0, t0);
    std::vector<Event> day30 = {ev(EventKind::kEnroll, 3, "e3", 0), ev(EventKind::kEnroll, 4, "e4", 0),
                                ev(EventKind::kEnroll, 5, "e5", 0), ev(EventKind::kEarn, 3, "o3", 120'000),
                                ev(EventKind::kEarn, 4, "o4", 85'000), ev(EventKind::kEarn, 5, "o5", 50'000)};
    l.pipeline().submit(0, day30, t0 + 30 * kMsPerDay);
    l.drain();
  }
  const std::string as_of = std::to_string(t0 + 55 * kMsPerDay);
  auto chosen = [&](const std::string& criteria) {
    AdminRun r = admin("segment " + dir.path() + " --as-of " + as_of + " " + criteria);
    EXPECT_EQ(r.status, 0) << r.out;
    std::vector<std::string> accounts;
    for (size_t at = r.out.find("\"account\":"); at != std::string::npos; at = r.out.find("\"account\":", at + 1))
      accounts.push_back(r.out.substr(at + 10, r.out.find(',', at) - at - 10));
    return accounts;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(chosen(""), (V{"1", "2", "3", "4", "5"})) << "no criteria: every member";
  EXPECT_EQ(chosen("--expiring-within 10"), (V{"1", "2"})) << "their sign-up points expire on day 60";
  EXPECT_EQ(chosen("--inactive-days 40"), (V{"1", "2"}));
  EXPECT_EQ(chosen("--tier 1"), (V{"3"})) << "1200 qualifying points: silver";
  EXPECT_EQ(chosen("--to-next-tier 200"), (V{"4"})) << "850 of silver's 1000";
  EXPECT_EQ(chosen("--min-available 1000"), (V{"3"}));
  EXPECT_EQ(chosen("--tier 0 --max-available 600"), (V{"1", "2", "5"}));
  AdminRun one = admin("segment " + dir.path() + " --as-of " + as_of + " --expiring-within 10 --max-available 50");
  EXPECT_NE(one.out.find("\"expiring\":50,\"expiring_on\":\"2026-03-02\""), std::string::npos) << one.out;
  EXPECT_EQ(admin("segment " + dir.path() + " --tier").status, 2);
  EXPECT_EQ(admin("segment " + dir.path() + " --colour 3").status, 2);
}

}  // namespace
}  // namespace tally::storage
