// The durable log: batch encoding, the LMDB store, the group committer and recovery.
// Everything runs against a real LMDB environment in a private temporary directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "storage/committer.h"
#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/program_codec.h"
#include "storage/recovery.h"
#include "storage/store.h"
#include "tests/temp_dir.h"

namespace tally::storage {
namespace {

using tally::testing::TempDir;

constexpr int64_t kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

Effect random_effect(std::mt19937_64& rng) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto maybe = [&](int64_t v) { return pick(0, 2) == 0 ? 0 : v; };  // a third of fields absent
  static const EventKind kinds[] = {EventKind::kEnroll, EventKind::kEarn, EventKind::kRedeem,
                                    EventKind::kHold, EventKind::kReverse, EventKind::kAdjust,
                                    EventKind::kTransferIn, EventKind::kHoldExpire,
                                    EventKind::kExpire,     EventKind::kMature,     EventKind::kTier};
  Effect f{};
  Event& e = f.event;
  e.kind = kinds[pick(0, std::size(kinds) - 1)];
  if (pick(0, 3) != 0) e.ref = {rng(), rng()};
  if (pick(0, 3) == 0) e.target = {rng(), rng()};
  e.account = static_cast<uint64_t>(maybe(static_cast<int64_t>(rng() >> pick(0, 63))));
  e.counterparty = static_cast<uint64_t>(maybe(pick(1, 1'000'000)));
  e.amount = maybe(pick(-kPointsMax, kPointsMax));
  e.business_time_ms = maybe(kT0 + pick(-kMsPerDay * 500, kMsPerDay));
  e.program = static_cast<uint32_t>(maybe(pick(1, 0xffffffff)));
  e.store = static_cast<uint32_t>(maybe(pick(1, 0xffffffff)));
  e.terminal = static_cast<uint32_t>(maybe(pick(1, 99)));
  e.key_id = static_cast<uint32_t>(maybe(pick(1, 1000)));
  e.currency = static_cast<uint16_t>(maybe(pick(1, 999)));
  e.code = static_cast<uint16_t>(maybe(pick(1, 0xffff)));
  e.channel = static_cast<uint8_t>(pick(0, 255));
  f.time_ms = kT0 + pick(-1000, 1'000'000);
  f.seq = static_cast<uint64_t>(pick(1, INT64_MAX));
  f.points = maybe(pick(-kPointsMax, kPointsMax));
  f.state.available = maybe(pick(-kPointsMax, kPointsMax));
  f.state.held = maybe(pick(0, kPointsMax));
  f.state.lifetime_earned = maybe(pick(0, kPointsMax));
  f.state.lifetime_redeemed = maybe(pick(0, kPointsMax));
  f.state.qualifying = maybe(pick(0, kPointsMax));
  f.state.pending = maybe(pick(0, kPointsMax));
  f.state.tier = static_cast<uint8_t>(maybe(pick(1, 7)));
  f.state.flags = static_cast<uint8_t>(maybe(pick(1, 255)));
  f.depends_seq = static_cast<uint64_t>(maybe(pick(1, INT64_MAX)));
  f.shard = static_cast<uint16_t>(pick(0, 1023));
  f.depends_shard = f.depends_seq != 0 ? static_cast<uint16_t>(pick(0, 1023)) : 0;
  f.result = static_cast<Result>(pick(0, kResultCount - 1));
  f.flags = static_cast<uint8_t>(pick(0, 31));
  return f;
}

std::vector<uint8_t> encode(const std::vector<Effect>& effects, uint64_t lsn = 7, uint64_t prev = 99) {
  BatchWriter w;
  w.begin(lsn, 3, prev, effects.empty() ? kT0 : effects[0].time_ms);
  for (const Effect& f : effects) w.add(f);
  BatchHeader h;
  auto bytes = w.finish(&h);
  return {bytes.begin(), bytes.end()};
}

TEST(LogCodecTest, EveryFieldSurvivesARoundTrip) {
  std::mt19937_64 rng(1);
  for (int round = 0; round < 200; ++round) {
    std::vector<Effect> in;
    for (int i = 0; i < 1 + round % 40; ++i) in.push_back(random_effect(rng));
    std::vector<uint8_t> bytes = encode(in, 1000 + round, 77);
    std::vector<Effect> out;
    BatchHeader h;
    ASSERT_EQ(decode_batch(bytes, &h, &out), DecodeError::kOk);
    EXPECT_EQ(h.lsn, 1000u + round);
    EXPECT_EQ(h.prev_hash, 77u);
    EXPECT_EQ(h.epoch, 3u);
    EXPECT_EQ(h.hash, compute_batch_hash(bytes));
    ASSERT_EQ(out.size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) EXPECT_TRUE(equal_logged(in[i], out[i])) << "round " << round << " record " << i;
  }
}

TEST(LogCodecTest, EqualLoggedNoticesEachField) {
  std::mt19937_64 rng(2);
  Effect a = random_effect(rng);
  EXPECT_TRUE(equal_logged(a, a));
  Effect b = a;
  b.state.held += 1;
  EXPECT_FALSE(equal_logged(a, b));
  b = a;
  b.event.ref.hi ^= 1;
  EXPECT_FALSE(equal_logged(a, b));
  b = a;
  b.seq += 1;
  EXPECT_FALSE(equal_logged(a, b));
}

TEST(LogCodecTest, EveryFlippedBitIsDetected) {
  std::mt19937_64 rng(3);
  std::vector<Effect> in;
  for (int i = 0; i < 12; ++i) in.push_back(random_effect(rng));
  const std::vector<uint8_t> good = encode(in);
  for (size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> bad = good;
      bad[byte] ^= static_cast<uint8_t>(1 << bit);
      std::vector<Effect> out;
      BatchHeader h;
      ASSERT_NE(decode_batch(bad, &h, &out), DecodeError::kOk) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(LogCodecTest, TruncatedAndExtendedValuesAreRejected) {
  std::mt19937_64 rng(4);
  std::vector<Effect> in{random_effect(rng), random_effect(rng)};
  const std::vector<uint8_t> good = encode(in);
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<long>(n));
    std::vector<Effect> out;
    BatchHeader h;
    EXPECT_NE(decode_batch(cut, &h, &out), DecodeError::kOk) << n;
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  std::vector<Effect> out;
  BatchHeader h;
  EXPECT_NE(decode_batch(longer, &h, &out), DecodeError::kOk);
}

// Rewrites a batch's version field and reseals it with a valid hash, as a newer writer would.
std::vector<uint8_t> with_version(std::vector<uint8_t> bytes, uint16_t version) {
  bytes[4] = static_cast<uint8_t>(version);
  bytes[5] = static_cast<uint8_t>(version >> 8);
  uint64_t h = compute_batch_hash(bytes);
  for (int i = 0; i < 8; ++i) bytes[56 + i] = static_cast<uint8_t>(h >> (8 * i));
  return bytes;
}

TEST(LogCodecTest, ANewerFormatIsRefusedNotGuessed) {
  std::mt19937_64 rng(5);
  std::vector<uint8_t> bytes = with_version(encode({random_effect(rng)}), kLogFormatVersion + 1);
  BatchHeader h;
  EXPECT_EQ(read_header(bytes, &h), DecodeError::kNewerVersion);
  EXPECT_EQ(read_header(with_version(bytes, kLogFormatVersion), &h), DecodeError::kOk);
}

TEST(LogCodecTest, RandomBytesNeverDecode) {
  std::mt19937_64 rng(6);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(static_cast<size_t>(rng() % 300));
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    std::vector<Effect> out;
    BatchHeader h;
    EXPECT_NE(decode_batch(junk, &h, &out), DecodeError::kOk);
  }
}

TEST(ProgramCodecTest, ProgramsRoundTripAndRuleChangesAreNamed) {
  Program a = default_program();
  Program b = default_program();
  b.id = 2;
  b.name = "coffee";
  b.tiers[1].name = "silver-ish";
  // Every rule of format 3 away from its default, so each is written and read back.
  b.unit = Unit::kCashback;
  b.tiers[2].bonus_points = 700;
  b.tier_policy = {TierPeriod::kRollingMonths, 6, 9};
  b.first_purchase_bonus_points = 11;
  b.comeback_bonus_points = 22;
  b.comeback_days = 33;
  b.stamp_card_count = 1;
  b.stamp_cards[0] = {"visits", 9, 250, 44};
  b.campaign_count = 1;
  b.campaigns[0] = {"weekend", 20'454, 20'455, 2500};
  std::vector<Program> in{a, b};
  auto out = decode_programs(encode_programs(in));
  ASSERT_TRUE(out.has_value());
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ(encode_programs(*out), encode_programs(in));
  EXPECT_EQ(rule_difference(*out, in), "");

  std::vector<Program> bigger = in;
  bigger[0].accounts_max *= 2;  // capacity is not a rule
  EXPECT_EQ(rule_difference(in, bigger), "");
  std::vector<Program> changed = in;
  changed[1].earn_points = 2;
  EXPECT_NE(rule_difference(in, changed).find("program 2"), std::string::npos);
  std::vector<Program> only_a{a};
  EXPECT_NE(rule_difference(in, only_a).find("program 2"), std::string::npos);
  EXPECT_FALSE(decode_programs("garbage").has_value());
  std::vector<Program> unwindowed = in;
  unwindowed[1].tier_policy.grace_days = 10;
  EXPECT_NE(rule_difference(in, unwindowed).find("program 2"), std::string::npos) << "a format 3 rule is a rule";
}

// A data directory written under program format 2 (before tier windows, bonuses, stamp cards,
// cashback and campaigns) still reads, as programs with those rules at their defaults.
TEST(ProgramCodecTest, FormatTwoProgramsStillRead) {
  std::vector<Program> in{default_program()};
  std::string bytes = encode_programs(in);
  // Format 3 adds, just before the four capacities (32 bytes), for default values: tier period,
  // window and grace (9 bytes), 8 tier bonuses (64), the unit (1), the purchase bonuses (20), 4
  // stamp cards (a count and 24 bytes each with an empty name) and 8 campaigns (likewise).
  constexpr size_t kFormat3 = 9 + 64 + 1 + 20 + (1 + 4 * 24) + (1 + 8 * 24);
  ASSERT_GT(bytes.size(), kFormat3 + 32 + 8);
  std::string v2 = bytes;
  v2[0] = 2;  // the version, u32 little-endian
  v2.erase(v2.size() - 32 - kFormat3, kFormat3);
  auto out = decode_programs(v2);
  ASSERT_TRUE(out.has_value()) << "format 2 refused";
  EXPECT_EQ(encode_programs(*out), bytes) << "read as the same program";
  EXPECT_EQ(rule_difference(*out, in), "");
  v2[0] = 4;
  EXPECT_FALSE(decode_programs(v2).has_value()) << "a format this build does not know";
}

// ---- the store -----------------------------------------------------------------------------------

TEST(StoreTest, ADataDirectoryOfANewerFormatIsRefusedWithAClearMessage) {
  TempDir dir;
  {
    Store s({.dir = dir.path()});
    std::pair<std::string, std::string> meta[] = {{"format_version", std::to_string(kStoreFormatVersion + 1)}};
    s.commit({}, meta);
  }
  try {
    Store s({.dir = dir.path()});
    FAIL() << "opened a newer format";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("newer Tally"), std::string::npos) << e.what();
  }
}

TEST(StoreTest, ReadOnlyOpenOfAMissingDirectorySaysSo) {
  TempDir dir;
  EXPECT_THROW(Store({.dir = dir.sub("nothing"), .read_only = true}), StorageError);
}

TEST(StoreTest, BatchesAppendInOrderAndTheMapGrowsBeforeItIsFull) {
  TempDir dir;
  // A 1 MiB map that must grow many times for ~20 MiB of batches.
  Store s({.dir = dir.path(), .map_size_initial = 1u << 20});
  std::vector<uint8_t> value(3000, 0xab);
  uint64_t lsn = 1;
  for (int txn = 0; txn < 70; ++txn) {
    std::vector<BatchBytes> batches;
    for (int i = 0; i < 100; ++i) batches.push_back({lsn++, value});
    s.commit(batches);
  }
  EXPECT_EQ(s.first_lsn(), 1u);
  EXPECT_EQ(s.last_lsn(), lsn - 1);
  EXPECT_GT(s.stats().map_size, uint64_t{20} << 20);
  // An LSN at or below the last one is refused (MDB_APPEND), not silently reordered.
  std::vector<BatchBytes> stale{{lsn - 1, value}};
  EXPECT_THROW(s.commit(stale), StorageError);
}

TEST(StoreTest, AFullMapAtItsLimitFailsTheCommitLoudly) {
  TempDir dir;
  Store s({.dir = dir.path(), .map_size_initial = 1u << 20, .map_size_max = 1u << 20});
  std::vector<uint8_t> value(3000, 0xcd);
  uint64_t lsn = 1;
  bool failed = false;
  for (int txn = 0; txn < 100 && !failed; ++txn) {
    std::vector<BatchBytes> batches;
    for (int i = 0; i < 50; ++i) batches.push_back({lsn++, value});
    try {
      s.commit(batches);
    } catch (const StorageError& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find("MDB_MAP_FULL"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(failed);
}

// ---- the committer -------------------------------------------------------------------------------

struct Sinks {
  std::mutex mu;
  std::vector<Effect> durable, failed;
  std::vector<uint64_t> lsns;
  std::string why;
  DurableSink durable_sink() {
    return [this](std::span<const Effect> e, uint64_t lsn) {
      std::lock_guard lk(mu);
      durable.insert(durable.end(), e.begin(), e.end());
      lsns.push_back(lsn);
    };
  }
  FailureSink failure_sink() {
    return [this](std::span<const Effect> e, const std::string& w) {
      std::lock_guard lk(mu);
      failed.insert(failed.end(), e.begin(), e.end());
      why = w;
    };
  }
};

std::vector<Effect> numbered_effects(size_t n, uint64_t first_seq = 1) {
  std::vector<Effect> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i].event.kind = i % 10 == 9 ? EventKind::kBalance : EventKind::kEarn;
    v[i].event.program = 1;
    v[i].event.account = 1 + i % 97;
    v[i].event.ref = {i + 1, 0x5eed};
    v[i].event.amount = static_cast<int64_t>(100 + i);
    v[i].time_ms = kT0 + static_cast<int64_t>(i);
    v[i].seq = first_seq + i;
    v[i].points = static_cast<int64_t>(i % 13);
  }
  return v;
}

TEST(CommitterTest, EverythingAppendedIsReleasedInOrderAndLoggedExceptReads) {
  TempDir dir;
  Store store({.dir = dir.path()});
  Sinks sinks;
  const std::vector<Effect> in = numbered_effects(20'000);
  {
    Committer c(&store, {.txn_bytes_max = 64 << 10}, {}, sinks.durable_sink(), sinks.failure_sink());
    for (size_t i = 0; i < in.size(); i += 333) c.append(std::span(in).subspan(i, std::min<size_t>(333, in.size() - i)));
    c.flush();
    EXPECT_EQ(c.durable_lsn(), store.last_lsn());
    CommitterStats st = c.stats();
    EXPECT_EQ(st.released, in.size());
    EXPECT_EQ(st.records, in.size() - in.size() / 10);
    EXPECT_GT(st.commits, 1u);  // the 64 KiB cap split the load
  }
  ASSERT_EQ(sinks.durable.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(sinks.durable[i].seq, in[i].seq);
  EXPECT_TRUE(std::is_sorted(sinks.lsns.begin(), sinks.lsns.end()));
  EXPECT_TRUE(sinks.failed.empty());

  LogCheck check = verify_log(store);
  ASSERT_TRUE(check.ok) << check.error;
  EXPECT_EQ(check.records, in.size() - in.size() / 10);
  EXPECT_EQ(check.first_lsn, 1u);
  EXPECT_EQ(check.next.next_lsn, store.last_lsn() + 1);
  // The log holds exactly the non-read effects, in order.
  std::vector<Effect> logged;
  store.scan(0, [&](uint64_t, std::span<const uint8_t> b) {
    BatchHeader h;
    EXPECT_EQ(decode_batch(b, &h, &logged), DecodeError::kOk);
    return true;
  });
  std::vector<Effect> writes;
  std::copy_if(in.begin(), in.end(), std::back_inserter(writes),
               [](const Effect& e) { return e.event.kind != EventKind::kBalance; });
  ASSERT_EQ(logged.size(), writes.size());
  for (size_t i = 0; i < writes.size(); ++i) ASSERT_TRUE(equal_logged(logged[i], writes[i])) << i;
}

// The trace of one committer run: for every commit, was each release after its commit returned?
// Returns an empty string when so, else the first violation.
std::string release_order_violation(const std::vector<std::pair<TracePoint, uint64_t>>& trace) {
  uint64_t returned = 0;  // the highest LSN whose commit has returned
  bool any_release = false;
  for (const auto& [point, lsn] : trace) {
    if (point == TracePoint::kCommitReturned) returned = std::max(returned, lsn);
    if (point == TracePoint::kReleased) {
      any_release = true;
      if (lsn > returned)
        return "released LSN " + std::to_string(lsn) + " when only " + std::to_string(returned) + " had returned";
    }
  }
  return any_release ? "" : "nothing was released";
}

std::vector<std::pair<TracePoint, uint64_t>> traced_run(bool ack_before_commit) {
  TempDir dir;
  Store store({.dir = dir.path()});
  Sinks sinks;
  std::mutex mu;
  std::vector<std::pair<TracePoint, uint64_t>> trace;
  Committer c(&store, {.txn_bytes_max = 16 << 10, .unsafe_ack_before_commit = ack_before_commit}, {},
              sinks.durable_sink(), sinks.failure_sink(), [&](TracePoint p, uint64_t lsn) {
                std::lock_guard lk(mu);
                trace.emplace_back(p, lsn);
              });
  const std::vector<Effect> in = numbered_effects(5000);
  for (size_t i = 0; i < in.size(); i += 100) c.append(std::span(in).subspan(i, 100));
  c.stop();
  return trace;
}

TEST(AckOrderTest, EveryReleaseComesAfterItsCommitReturned) {
  EXPECT_EQ(release_order_violation(traced_run(false)), "");
}

TEST(AckOrderTest, NegativeControlAcknowledgingBeforeTheCommitIsCaught) {
  EXPECT_NE(release_order_violation(traced_run(true)), "");
}

TEST(CommitterTest, AFailedCommitFailsEverythingAfterItAndReleasesNothingMore) {
  TempDir dir;
  // A map that cannot grow: commits fail with MDB_MAP_FULL at some point.
  Store store({.dir = dir.path(), .map_size_initial = 1u << 20, .map_size_max = 1u << 20});
  Sinks sinks;
  const std::vector<Effect> in = numbered_effects(60'000);
  Committer c(&store, {.txn_bytes_max = 32 << 10}, {}, sinks.durable_sink(), sinks.failure_sink());
  for (size_t i = 0; i < in.size(); i += 500) c.append(std::span(in).subspan(i, 500));
  c.flush();
  EXPECT_TRUE(c.failed());
  EXPECT_NE(c.failure().find("MDB_MAP_FULL"), std::string::npos) << c.failure();
  // Each effect went to exactly one sink: the durable ones are a prefix, the failed the rest.
  ASSERT_EQ(sinks.durable.size() + sinks.failed.size(), in.size());
  for (size_t i = 0; i < sinks.durable.size(); ++i) ASSERT_EQ(sinks.durable[i].seq, in[i].seq);
  for (size_t i = 0; i < sinks.failed.size(); ++i) ASSERT_EQ(sinks.failed[i].seq, in[sinks.durable.size() + i].seq);
  EXPECT_GT(sinks.failed.size(), 0u);
  // What is on disk is exactly what was released, and it verifies.
  LogCheck check = verify_log(store);
  ASSERT_TRUE(check.ok) << check.error;
  size_t durable_writes = static_cast<size_t>(std::count_if(sinks.durable.begin(), sinks.durable.end(), [](const Effect& e) {
    return e.event.kind != EventKind::kBalance;
  }));
  EXPECT_EQ(check.records, durable_writes);
  // Appends after the failure fail at once.
  std::vector<Effect> more = numbered_effects(3, 1'000'000);
  size_t before = sinks.failed.size();
  c.append(more);
  EXPECT_EQ(sinks.failed.size(), before + 3);
}

TEST(LogCodecTest, AFilteredBatchKeepsItsProgramsRecordsAndTheChain) {
  std::mt19937_64 rng(5);
  std::vector<Effect> in;
  for (int i = 0; i < 40; ++i) {
    Effect f = random_effect(rng);
    f.event.program = 1 + i % 3;
    in.push_back(f);
  }
  std::vector<uint8_t> whole = encode(in, 500, 4242);
  BatchHeader wh;
  std::vector<Effect> all;
  ASSERT_EQ(decode_batch(whole, &wh, &all), DecodeError::kOk);
  std::vector<uint8_t> filtered;
  ASSERT_TRUE(filter_batch(whole, 2, &filtered));
  BatchHeader fh;
  std::vector<Effect> kept;
  // Not a stored batch (its hash is the original's), but a stream batch that decodes.
  EXPECT_EQ(decode_batch(filtered, &fh, &kept), DecodeError::kBadChecksum);
  kept.clear();
  ASSERT_EQ(decode_stream_batch(filtered, &fh, &kept), DecodeError::kOk);
  EXPECT_EQ(fh.lsn, 500u);
  EXPECT_EQ(fh.prev_hash, 4242u);
  EXPECT_EQ(fh.hash, wh.hash) << "the chain continues through a filtered batch";
  EXPECT_TRUE(fh.flags & kBatchFiltered);
  std::vector<Effect> want;
  for (const Effect& f : all)
    if (f.event.program == 2) want.push_back(f);
  ASSERT_EQ(kept.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(equal_logged(kept[i], want[i])) << i;
  // A whole batch through the stream decoder is checked as strictly as from the log.
  whole[100] ^= 1;
  EXPECT_EQ(decode_stream_batch(whole, &wh, &all), DecodeError::kBadChecksum);
  EXPECT_FALSE(filter_batch(whole, 2, &filtered));
}

}  // namespace
}  // namespace tally::storage
