// tally-admin: inspect, verify, back up, restore and repair a Tally data directory.
// Safe on a directory a running server uses (LMDB allows readers beside the writer), except
// `repair` and `restore`, which need it stopped.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/digest.h"
#include "engine/fraud_set.h"
#include "engine/shard.h"
#include "storage/history.h"
#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "storage/program_codec.h"
#include "storage/recovery.h"
#include "storage/store.h"
#include "tools/event_format.h"

namespace {

using namespace tally;
using namespace tally::storage;

constexpr const char* kUsage = R"(Usage: tally-admin COMMAND [arguments]

Commands:
  verify DIR             Walk the whole log: every batch's checksum, the LSN sequence and the hash
                         chain; then load the last checkpoint (slice checksums) and replay the
                         log after it through the engine, checking that every effect
                         re-derives exactly, and check each program's points invariant
                         (issued - redeemed - expired - clawed back + adjusted - in transit =
                         sum of balances). Exit 0 when clean, 1 naming the first bad LSN.
  dump DIR [--from LSN] [--to LSN]
                         Log records as JSON Lines (one object per effect, docs/events.md), in LSN order.
  stats DIR              Sizes, LSN range, trim point, checkpoint, dedup references, history
                         index, consumer cursors, shard count, programs and the LMDB flags.
  lookup DIR ORDER       What happened to an order: every effect whose reference or target is
                         ORDER (an order ID as the client sent it, or --ref HEX with the 32 hex
                         digits `dump` prints), oldest first: the decision, retries, refunds.
  history DIR ACCOUNT [--program ID] [--limit N] [--before LSN:INDEX]
                         A member's statement, newest first, N effects (default 20) before the
                         given log position; the last line says where the next page starts.
                         Both read the history index, then the few batches logged after it,
                         so they answer for trimmed log too.
  backup DIR TO          Hot, consistent, compacted copy of DIR into the new directory TO
                         (LMDB's copy; the server may keep running). The copy is fsynced.
  restore BACKUP DIR     Verify BACKUP, then copy it into DIR, which must not hold data yet.
                         The server must be stopped.
  repair DIR             Truncate the log at the first bad batch (after `verify` failed), saying
                         exactly what is dropped. The server must be stopped. Acknowledged
                         events in the dropped batches are lost: restore from a backup instead
                         when you have one.

  segment DIR [--program ID] [--min-available N] [--max-available N] [--tier T]
          [--to-next-tier N] [--inactive-days N] [--expiring-within DAYS] [--as-of MS]
                         The members a message should go to, as JSON Lines (one per member, by
                         account): their balance, pending points, tier and the qualifying points
                         still needed for the next one, days since their last activity, and the
                         points expiring within DAYS (with the first such day). Every criterion
                         given must hold; none: every member. Statements are taken as of now
                         (or --as-of, ms since the epoch, not before the log's last event) with
                         what is due applied, from a hot copy replayed in this process: the
                         server may keep running.

  snapshot DIR [--program ID]
                         Every member's state (JSON Lines, docs/events.md "Starting late"),
                         consistent, after the LSN its first line names: a consumer that arrives
                         after the log was trimmed loads it, then follows the stream from the
                         next LSN. Taken from a hot copy: the server may keep running.
  promote DIR [--force]  Make a stopped follower's directory a primary's: raises its epoch, so
                         followers refuse the old primary from now on. Refused while the
                         follower is behind what its primary had reached (events an
                         asynchronous primary may have acknowledged would be lost) unless
                         --force. Then start tallyd on DIR without --follow.

Exit status: 0 success, 1 problem found (or operation failed), 2 usage error.
)";

int usage_error(const char* fmt, const char* arg = "") {
  std::fprintf(stderr, "tally-admin: ");
  std::fprintf(stderr, fmt, arg);
  std::fprintf(stderr, " (see tally-admin --help)\n");
  return 2;
}

bool parse_u64(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') return false;
  *out = v;
  return true;
}

std::vector<Program> stored_programs(const Store& s) {
  auto bytes = s.meta("programs");
  if (!bytes) return {};
  auto p = decode_programs(*bytes);
  if (!p) throw StorageError(s.options().dir + ": stored program definitions are unreadable", 0);
  return *p;
}

// Empty shards for a replay of `s`, with a fraud set sized for every reference its log and
// checkpoint hold (as storage::Ledger sizes it).
struct FreshShards {
  std::unique_ptr<FraudSet> fraud;
  std::vector<std::unique_ptr<Shard>> owned;
  std::vector<Shard*> raw;
};
FreshShards fresh_shards(const Store& s, const LogCheck& c, const std::vector<Program>& programs, uint16_t shard_count) {
  uint64_t checkpointed = 0;
  if (auto v = s.meta("dedup_claims")) checkpointed = std::stoull(*v);
  FreshShards f;
  f.fraud = std::make_unique<FraudSet>(c.claims + checkpointed + (c.claims + checkpointed) / 4 + 1024, shard_count);
  for (uint16_t i = 0; i < shard_count; ++i) {
    f.owned.push_back(std::make_unique<Shard>(i, programs, f.fraud.get()));
    f.raw.push_back(f.owned.back().get());
  }
  return f;
}

int cmd_verify(const std::string& dir) {
  Store s({.dir = dir, .read_only = true});
  LogCheck c = verify_log(s);
  if (!c.ok) {
    std::printf("verify %s: FAILED at LSN %" PRIu64 ": %s\n", dir.c_str(), c.bad_lsn, c.error.c_str());
    std::printf("  %" PRIu64 " good batches before it (LSN %" PRIu64 "..%" PRIu64 ")\n", c.batches, c.first_lsn,
                c.last_lsn);
    return 1;
  }
  std::printf("log: %" PRIu64 " batches, %" PRIu64 " records, LSN %" PRIu64 "..%" PRIu64 ": checksums and chain ok\n",
              c.batches, c.records, c.first_lsn, c.last_lsn);

  // Replay through the engine: every effect must re-derive exactly.
  std::vector<Program> programs = stored_programs(s);
  auto shards_meta = s.meta("shard_count");
  if (programs.empty() || !shards_meta) {
    std::printf("no programs or shard count stored: nothing to replay\n");
    return c.records == 0 ? 0 : 1;
  }
  FreshShards fresh = fresh_shards(s, c, programs, static_cast<uint16_t>(std::stoul(*shards_meta)));
  std::vector<Shard*>& raw = fresh.raw;
  ReplayResult r;
  try {
    r = replay_log(s, raw);
  } catch (const StorageError& e) {
    std::printf("verify %s: FAILED replaying the log: %s\n", dir.c_str(), e.what());
    return 1;
  }
  if (r.checkpoint.round > 0)
    std::printf("checkpoint: round %u loaded (slice checksums ok), %" PRIu64
                " order references from the trimmed log; %" PRIu64 " logged records it already holds\n",
                r.checkpoint.round, r.checkpoint.dedup_claims, r.skipped);
  uint64_t applied = c.records - r.skipped;
  std::printf("replay: %" PRIu64 " records re-derived exactly in %.2f s (%.2f M records/s)\n", applied, r.seconds,
              r.seconds > 0 ? static_cast<double>(applied) / r.seconds / 1e6 : 0.0);
  if (!r.unlogged_tail.empty() || !r.legs.empty())
    std::printf("note: %zu hold expiries due at the log's end and %zu transfer legs in flight: the server "
                "completes them at its next start\n",
                r.unlogged_tail.size(), r.legs.size());
  {
    std::vector<const Shard*> cs(raw.begin(), raw.end());
    // Equal on two directories that hold the same state (a follower and its primary).
    std::printf("state digest: %016" PRIx64 "\n", state_digest(cs, programs));
  }
  bool ok = true;
  for (const Program& p : programs) {
    ProgramStats t;
    int64_t balances = 0;
    for (auto& sh : fresh.owned) {
      t += *sh->stats(p.id);
      sh->for_each_account(p.id, [&](uint64_t, const AccountState& a) { balances += a.available + a.held; });
    }
    int64_t in_transit = t.in_transit();
    bool good = t.expected_balances() == balances;
    ok &= good;
    std::printf("program %u (%s): %" PRIu64 " members, issued %" PRId64 ", redeemed %" PRId64 ", balances %" PRId64
                ", in transit %" PRId64 ": invariant %s\n",
                p.id, p.name.c_str(), t.members, t.issued, t.redeemed, balances, in_transit,
                good ? "holds" : "BROKEN");
  }
  return ok ? 0 : 1;
}

int cmd_dump(const std::string& dir, uint64_t from, uint64_t to) {
  Store s({.dir = dir, .read_only = true});
  int status = 0;
  std::vector<Effect> effects;
  s.scan(from, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    if (lsn > to) return false;
    effects.clear();
    BatchHeader h;
    DecodeError err = decode_batch(bytes, &h, &effects);
    if (err != DecodeError::kOk) {
      std::fprintf(stderr, "tally-admin dump: LSN %" PRIu64 ": %s\n", lsn, std::string(to_string(err)).c_str());
      status = 1;
      return false;
    }
    std::string line;
    for (uint32_t i = 0; i < effects.size(); ++i) {
      line.clear();
      append_json(line, effects[i], RecordPos{lsn, i, h.epoch});
      line += '\n';
      std::fputs(line.c_str(), stdout);
    }
    return true;
  });
  return status;
}

void print_entry(const HistoryEntry& e) {
  std::printf("LSN %" PRIu64 ":%u time %" PRId64 ": program %u %s account %" PRIu64 " amount %" PRId64
              " -> %s, points %" PRId64 ", available %" PRId64 ", held %" PRId64 "%s%s\n",
              e.at.lsn, e.at.index, e.time_ms, e.program, std::string(to_string(e.kind)).c_str(), e.account, e.amount,
              std::string(to_string(e.result)).c_str(), e.points, e.available, e.held,
              (e.flags & kEffectReplay) ? " (replay of the original answer)" : "",
              (e.flags & kEffectClaimed) ? " (claimed the reference)" : "");
}

bool parse_hex_ref(const std::string& hex, Ref128* r) {
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
  r->hi = std::stoull(hex.substr(0, 16), nullptr, 16);
  r->lo = std::stoull(hex.substr(16), nullptr, 16);
  return true;
}

int cmd_lookup(const std::string& dir, const Ref128& ref) {
  Store s({.dir = dir, .read_only = true});
  std::vector<HistoryEntry> found = lookup(s, 0, ref);
  for (const HistoryEntry& e : found) print_entry(e);
  if (found.empty()) std::printf("no effect names this order\n");
  return 0;
}

int cmd_history(const std::string& dir, uint64_t account, uint32_t program, uint64_t limit, LogPos before) {
  Store s({.dir = dir, .read_only = true});
  std::vector<HistoryEntry> page = history(s, program, account, limit + 1, before);
  size_t shown = std::min<size_t>(page.size(), limit);
  for (size_t i = 0; i < shown; ++i) print_entry(page[i]);
  if (shown == 0) std::printf("no effects for account %" PRIu64 "\n", account);
  if (page.size() > limit)  // the next page starts just before the oldest effect shown
    std::printf("more: --before %" PRIu64 ":%u\n", page[limit - 1].at.lsn, page[limit - 1].at.index);
  return 0;
}

int cmd_stats(const std::string& dir) {
  Store s({.dir = dir, .read_only = true});
  StoreStats st = s.stats();
  std::printf("data directory: %s\n", st.path.c_str());
  std::printf("format version: %s\n", s.meta("format_version").value_or("?").c_str());
  std::printf("shards: %s\n", s.meta("shard_count").value_or("(not set)").c_str());
  std::printf("map: %" PRIu64 " bytes, %" PRIu64 " in use, page size %u\n", st.map_size, st.used_bytes, st.page_size);
  std::printf("log: %" PRIu64 " batches, LSN %" PRIu64 "..%" PRIu64 ", %" PRIu64 " bytes of pages\n", st.log_batches,
              st.first_lsn, st.last_lsn, st.log_bytes);
  if (auto t = s.meta("trim_lsn")) std::printf("trimmed through LSN %s\n", t->c_str());
  if (auto r = s.meta("checkpoint_round"))
    std::printf("checkpoint: round %s complete; %" PRIu64 " slice versions, %" PRIu64 " bytes of pages\n", r->c_str(),
                st.slice_versions, st.checkpoint_bytes);
  else
    std::printf("checkpoint: none yet (recovery replays the whole log)\n");
  std::printf("dedup: %s order references of the trimmed log, %" PRIu64 " bytes of pages\n",
              s.meta("dedup_claims").value_or("0").c_str(), st.dedup_bytes);
  std::printf("history index: %" PRIu64 " entries in %s segments through LSN %s, %" PRIu64 " bytes of pages\n",
              st.history_entries, s.meta("history_segments").value_or("0").c_str(),
              s.meta("history_lsn").value_or("0").c_str(), st.index_bytes);
  for (const auto& [key, lsn] : s.meta_with_prefix("cursor."))
    std::printf("consumer %s: acknowledged through LSN %s\n", key.substr(7).c_str(), lsn.c_str());
  for (const Program& p : stored_programs(s))
    std::printf("program %u: %s (currency %u, %u tiers)\n", p.id, p.name.c_str(), p.currency, p.tier_count);
  std::printf("LMDB flags: %s\n", st.flags.c_str());
  return 0;
}

int cmd_backup(const std::string& dir, const std::string& to) {
  Store s({.dir = dir, .read_only = true});
  s.backup(to);
  Store copy({.dir = to, .read_only = true});
  LogCheck c = verify_log(copy);
  if (!c.ok) {
    std::printf("backup written to %s but it does not verify: LSN %" PRIu64 ": %s\n", to.c_str(), c.bad_lsn,
                c.error.c_str());
    return 1;
  }
  std::printf("backup of %s in %s: %" PRIu64 " batches, LSN %" PRIu64 "..%" PRIu64 ", verified\n", dir.c_str(),
              to.c_str(), c.batches, c.first_lsn, c.last_lsn);
  return 0;
}

// The ledger in DIR as of its last durable batch, in this process: a hot copy (LMDB's backup,
// consistent, so the server may keep running) replayed into fresh shards; the copy is removed
// after `use` returns. 1 (with a message naming `what`) when there is no ledger or the log does
// not verify.
template <class F>
int with_replayed_copy(const std::string& dir, const char* what, F&& use) {
  namespace fs = std::filesystem;
  fs::path tmp = fs::temp_directory_path() / ("tally-" + std::string(what) + "-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{tmp};
  {
    Store live({.dir = dir, .read_only = true});
    live.backup(tmp.string());
  }
  Store s({.dir = tmp.string(), .read_only = true});
  LogCheck c = verify_log(s);
  std::vector<Program> programs = stored_programs(s);
  auto shards_meta = s.meta("shard_count");
  if (!c.ok || programs.empty() || !shards_meta) {
    std::fprintf(stderr, "tally-admin %s: %s: %s\n", what, dir.c_str(),
                 !c.ok ? ("the log does not verify at LSN " + std::to_string(c.bad_lsn) + ": " + c.error).c_str()
                       : "no ledger here (no programs or shard count)");
    return 1;
  }
  FreshShards fresh = fresh_shards(s, c, programs, static_cast<uint16_t>(std::stoul(*shards_meta)));
  replay_log(s, fresh.raw);
  return use(s, c, programs, fresh.raw);
}

// A consistent snapshot of every member's state, tagged with the LSN it is the state after: for a
// consumer that arrives after the log was trimmed (docs/events.md, "Starting late").
int cmd_snapshot(const std::string& dir, uint32_t only_program) {
  return with_replayed_copy(dir, "snapshot", [&](const Store& s, const LogCheck& c, const std::vector<Program>& programs,
                                                 std::vector<Shard*>& raw) {
    uint64_t lsn = c.last_lsn != 0 ? c.last_lsn : c.next.next_lsn - 1;
    std::printf("{\"v\":1,\"snapshot\":{\"lsn\":%" PRIu64 ",\"epoch\":%" PRIu64 ",\"next_hash\":%" PRIu64 "}}\n", lsn,
                stored_epoch(s), c.next.prev_hash);
    for (const Program& p : programs) {
      if (only_program != 0 && p.id != only_program) continue;
      std::vector<std::pair<uint64_t, AccountState>> accounts;
      for (Shard* sh : raw)
        sh->for_each_account(p.id, [&](uint64_t a, const AccountState& st) { accounts.emplace_back(a, st); });
      std::sort(accounts.begin(), accounts.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      for (const auto& [a, st] : accounts)
        std::printf("{\"v\":1,\"program\":%u,\"account\":%" PRIu64 ",\"available\":%" PRId64 ",\"held\":%" PRId64
                    ",\"lifetime_earned\":%" PRId64 ",\"lifetime_redeemed\":%" PRId64 ",\"qualifying\":%" PRId64
                    ",\"tier\":%u}\n",
                    p.id, a, st.available, st.held, st.lifetime_earned, st.lifetime_redeemed, st.qualifying, st.tier);
    }
    return 0;
  });
}

// A JSON string's contents: quotes, backslashes and control characters escaped.
std::string json_escape(std::string_view in) {
  std::string out;
  for (char ch : in) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

// Who a message should go to (docs/operations.md "Segments"): members chosen by balance, tier,
// points to the next tier, inactivity or points expiring soon. All given criteria must hold.
struct SegmentQuery {
  uint32_t program = 0;  // 0: every program
  int64_t min_available = INT64_MIN, max_available = INT64_MAX;
  int tier = -1;                 // exactly this tier (-1: any)
  int64_t to_next_tier_max = -1; // at most this many qualifying points short of the next tier
  int64_t inactive_days = -1;    // at least this many days since the last activity
  int64_t expiring_within = -1;  // some points expire within this many days
  int64_t as_of_ms = 0;          // the time the statements are taken at (0: now)
};

int cmd_segment(const std::string& dir, const SegmentQuery& q) {
  return with_replayed_copy(dir, "segment", [&](const Store&, const LogCheck&, const std::vector<Program>& programs,
                                                std::vector<Shard*>& raw) {
    // Every shard's clock moves to the same moment (a tick in this copy: nothing is written), so
    // each statement shows what is due then applied, as a member reading it would see it.
    // (Not before the log's last event: a shard's clock never goes back.)
    int64_t as_of = q.as_of_ms != 0 ? q.as_of_ms
                                    : std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count();
    for (Shard* sh : raw) as_of = std::max(as_of, sh->clock_ms());
    Event tick{};
    tick.kind = EventKind::kTick;
    for (Shard* sh : raw) {
      ApplyOutput discard;
      sh->apply(tick, as_of, &discard);
    }
    uint64_t members = 0, chosen = 0;
    for (const Program& p : programs) {
      if (q.program != 0 && p.id != q.program) continue;
      const int64_t today = local_day(p, as_of);
      std::vector<uint64_t> ids;
      for (Shard* sh : raw) sh->for_each_account(p.id, [&](uint64_t a, const AccountState&) { ids.push_back(a); });
      std::sort(ids.begin(), ids.end());
      for (uint64_t id : ids) {
        ++members;
        Statement st;
        for (Shard* sh : raw)
          if (sh->statement(p.id, id, &st)) break;
        const AccountState& a = st.state;
        int64_t expiring = 0, expiring_day = 0;
        if (q.expiring_within >= 0) {
          for (const LotLine& l : st.lots) {
            if (l.mature_day != 0 || l.expiry_day == kNeverDay || l.expiry_day > today + q.expiring_within) continue;
            expiring += l.points;
            if (expiring_day == 0) expiring_day = l.expiry_day;
          }
        }
        const bool top = a.tier + 1 >= p.tier_count;
        const int64_t to_next = top ? -1 : std::max<int64_t>(0, p.tiers[a.tier + 1].threshold_points - a.qualifying);
        const int64_t idle = today - st.last_activity_day;
        if (a.available < q.min_available || a.available > q.max_available) continue;
        if (q.tier >= 0 && a.tier != q.tier) continue;
        if (q.to_next_tier_max >= 0 && (top || to_next > q.to_next_tier_max)) continue;
        if (q.inactive_days >= 0 && idle < q.inactive_days) continue;
        if (q.expiring_within >= 0 && expiring == 0) continue;
        ++chosen;
        std::printf("{\"v\":1,\"program\":%u,\"account\":%" PRIu64 ",\"available\":%" PRId64 ",\"pending\":%" PRId64
                    ",\"tier\":%u,\"tier_name\":\"%s\",\"qualifying\":%" PRId64 ",\"to_next_tier\":%s,\"last_activity\":\"%s\","
                    "\"inactive_days\":%" PRId64 ",\"expiring\":%" PRId64 ",\"expiring_on\":%s,\"as_of_ms\":%" PRId64 "}\n",
                    p.id, id, a.available, a.pending, a.tier, json_escape(p.tiers[a.tier].name).c_str(), a.qualifying,
                    top ? "null" : std::to_string(to_next).c_str(), format_day(st.last_activity_day).c_str(), idle,
                    expiring, expiring_day != 0 ? ("\"" + format_day(expiring_day) + "\"").c_str() : "null", as_of);
      }
    }
    std::fprintf(stderr, "tally-admin segment: %" PRIu64 " of %" PRIu64 " members chosen\n", chosen, members);
    return 0;
  });
}

int cmd_restore(const std::string& backup, const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "data.mdb")) {
    std::fprintf(stderr, "tally-admin restore: %s already holds data; move it away first\n", dir.c_str());
    return 1;
  }
  {
    Store b({.dir = backup, .read_only = true});
    LogCheck c = verify_log(b);
    if (!c.ok) {
      std::fprintf(stderr, "tally-admin restore: the backup does not verify (LSN %" PRIu64 ": %s)\n", c.bad_lsn,
                   c.error.c_str());
      return 1;
    }
    // The copy is made by LMDB from the backup environment: consistent and fsynced.
    b.backup(dir);
    std::printf("restored %s into %s: %" PRIu64 " batches, LSN %" PRIu64 "..%" PRIu64 "\n", backup.c_str(),
                dir.c_str(), c.batches, c.first_lsn, c.last_lsn);
  }
  return 0;
}

// A stopped follower's directory becomes a primary's: the epoch is raised (every batch it writes
// from now on carries the new one, and followers refuse the old primary's lower epoch).
int cmd_promote(const std::string& dir, bool force) {
  LogCheck c;
  uint64_t epoch = 1;
  {
    Store s({.dir = dir, .read_only = true});
    c = verify_log(s);
    if (!c.ok) {
      std::printf("promote %s: REFUSED: the log does not verify at LSN %" PRIu64 ": %s\n", dir.c_str(), c.bad_lsn,
                  c.error.c_str());
      return 1;
    }
    auto heard = s.meta("follow_primary_lsn");
    if (!heard && !force) {
      std::printf("promote %s: REFUSED: this directory never followed a primary (--force to raise its epoch anyway)\n",
                  dir.c_str());
      return 1;
    }
    uint64_t primary_lsn = heard ? std::stoull(*heard) : 0;
    if (c.last_lsn < primary_lsn && !force) {
      std::printf("promote %s: REFUSED: it holds the log through LSN %" PRIu64 ", but its primary had reached LSN %" PRIu64
                  " when last heard. Promoting it now loses LSN %" PRIu64 "..%" PRIu64
                  " (events a semi-synchronous primary never acknowledged; an asynchronous one may have). Let it "
                  "catch up, or --force\n",
                  dir.c_str(), c.last_lsn, primary_lsn, c.last_lsn + 1, primary_lsn);
      return 1;
    }
    epoch = stored_epoch(s);
    s.scan(c.last_lsn, [&](uint64_t, std::span<const uint8_t> bytes) {
      BatchHeader h;
      if (read_header(bytes, &h) == DecodeError::kOk) epoch = std::max(epoch, h.epoch);
      return false;
    });
  }
  Store s({.dir = dir});
  WriteSet w;
  w.meta.emplace_back("epoch", std::to_string(epoch + 1));
  w.meta_erase.push_back("follow_primary_lsn");
  s.write(w);
  std::printf("promote %s: epoch %" PRIu64 " -> %" PRIu64 ", log through LSN %" PRIu64 "\n", dir.c_str(), epoch,
              epoch + 1, c.last_lsn);
  std::printf("  start it as the primary: tallyd --data %s (without --follow); point clients and the other\n"
              "  followers at it. The old primary must not take writes again: followers refuse its epoch %" PRIu64
              ";\n  to make it a follower, restore it from a backup of this one\n",
              dir.c_str(), epoch);
  return 0;
}

int cmd_repair(const std::string& dir) {
  LogCheck c;
  {
    Store s({.dir = dir, .read_only = true});
    c = verify_log(s);
  }
  if (c.ok) {
    std::printf("repair %s: the log verifies (LSN %" PRIu64 "..%" PRIu64 "); nothing to do\n", dir.c_str(),
                c.first_lsn, c.last_lsn);
    return 0;
  }
  Store s({.dir = dir});
  uint64_t last = s.last_lsn();
  uint64_t dropped = s.truncate_from(c.bad_lsn);
  std::printf("repair %s: first bad batch LSN %" PRIu64 " (%s)\n", dir.c_str(), c.bad_lsn, c.error.c_str());
  std::printf("  dropped %" PRIu64 " batches, LSN %" PRIu64 "..%" PRIu64 "; the log now ends at LSN %" PRIu64 "\n",
              dropped, c.bad_lsn, last, c.bad_lsn - 1);
  std::printf("  events in the dropped batches are gone; clients that were acknowledged for them must retry\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage_error("a command is needed");
  std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "verify" && args.size() == 1) return cmd_verify(args[0]);
    if (cmd == "stats" && args.size() == 1) return cmd_stats(args[0]);
    if (cmd == "backup" && args.size() == 2) return cmd_backup(args[0], args[1]);
    if (cmd == "restore" && args.size() == 2) return cmd_restore(args[0], args[1]);
    if (cmd == "repair" && args.size() == 1) return cmd_repair(args[0]);
    if (cmd == "snapshot" && (args.size() == 1 || (args.size() == 3 && args[1] == "--program"))) {
      uint32_t program = args.size() == 3 ? static_cast<uint32_t>(std::strtoul(args[2].c_str(), nullptr, 10)) : 0;
      if (args.size() == 3 && program == 0) return usage_error("--program needs a program id, not '%s'", args[2].c_str());
      return cmd_snapshot(args[0], program);
    }
    if (cmd == "segment" && !args.empty()) {
      SegmentQuery q;
      for (size_t i = 1; i < args.size(); i += 2) {
        if (i + 1 >= args.size()) return usage_error("%s needs a value", args[i].c_str());
        const std::string& opt = args[i];
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(args[i + 1].c_str(), &end, 10);
        if (errno != 0 || end == args[i + 1].c_str() || *end != '\0' || v < 0)
          return usage_error("%s needs a whole number of at least 0", opt.c_str());
        if (opt == "--program") q.program = static_cast<uint32_t>(v);
        else if (opt == "--min-available") q.min_available = v;
        else if (opt == "--max-available") q.max_available = v;
        else if (opt == "--tier") q.tier = static_cast<int>(std::min<long long>(v, 255));
        else if (opt == "--to-next-tier") q.to_next_tier_max = v;
        else if (opt == "--inactive-days") q.inactive_days = v;
        else if (opt == "--expiring-within") q.expiring_within = v;
        else if (opt == "--as-of") q.as_of_ms = v;
        else return usage_error("unknown segment option %s", opt.c_str());
      }
      return cmd_segment(args[0], q);
    }
    if (cmd == "promote" && (args.size() == 1 || (args.size() == 2 && args[1] == "--force")))
      return cmd_promote(args[0], args.size() == 2);
    if (cmd == "lookup" && (args.size() == 2 || (args.size() == 3 && args[1] == "--ref"))) {
      Ref128 ref = reference_from_string(args[1]);
      if (args.size() == 3 && !parse_hex_ref(args[2], &ref)) return usage_error("--ref needs 32 hex digits, not '%s'", args[2].c_str());
      return cmd_lookup(args[0], ref);
    }
    if (cmd == "history" && args.size() >= 2) {
      uint64_t account = 0, program = 0, limit = 20;
      LogPos before{UINT64_MAX, 0};
      if (!parse_u64(args[1].c_str(), &account) || account == 0) return usage_error("bad account '%s'", args[1].c_str());
      for (size_t i = 2; i < args.size(); i += 2) {
        if (i + 1 >= args.size()) return usage_error("%s needs a value", args[i].c_str());
        if (args[i] == "--before") {  // LSN:INDEX, as the previous page printed
          const std::string& v = args[i + 1];
          size_t colon = v.find(':');
          uint64_t index = 0;
          if (colon == std::string::npos || !parse_u64(v.substr(0, colon).c_str(), &before.lsn) ||
              !parse_u64(v.substr(colon + 1).c_str(), &index))
            return usage_error("--before needs LSN:INDEX, not '%s'", v.c_str());
          before.index = static_cast<uint32_t>(index);
          continue;
        }
        uint64_t* target = args[i] == "--program" ? &program : args[i] == "--limit" ? &limit : nullptr;
        if (target == nullptr) return usage_error("unknown history option %s", args[i].c_str());
        if (!parse_u64(args[i + 1].c_str(), target)) return usage_error("bad number '%s'", args[i + 1].c_str());
      }
      if (limit == 0) return usage_error("--limit must be positive");
      return cmd_history(args[0], account, static_cast<uint32_t>(program), limit, before);
    }
    if (cmd == "dump" && !args.empty()) {
      uint64_t from = 0, to = UINT64_MAX;
      for (size_t i = 1; i < args.size(); i += 2) {
        if (i + 1 >= args.size()) return usage_error("%s needs a value", args[i].c_str());
        uint64_t* target = args[i] == "--from" ? &from : args[i] == "--to" ? &to : nullptr;
        if (target == nullptr) return usage_error("unknown dump option %s", args[i].c_str());
        if (!parse_u64(args[i + 1].c_str(), target)) return usage_error("bad LSN '%s'", args[i + 1].c_str());
      }
      return cmd_dump(args[0], from, to);
    }
    if (cmd == "verify" || cmd == "stats" || cmd == "backup" || cmd == "restore" || cmd == "repair" || cmd == "promote" || cmd == "snapshot" ||
        cmd == "lookup" || cmd == "history")
      return usage_error("wrong number of arguments for %s", cmd.c_str());
    return usage_error("unknown command %s", cmd.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally-admin %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
