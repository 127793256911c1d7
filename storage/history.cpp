#include "storage/history.h"

#include "engine/runtime/pipeline.h"  // name_this_thread

#include <algorithm>
#include <array>
#include <cstring>

#include "storage/log_codec.h"

namespace tally::storage {
namespace {

// Keys (big-endian, so byte order is the query order):
//   history: segment u32 | account u64 | program u32 | lsn u64 | index u32     (28 bytes)
//   lookup:  segment u32 | reference 16 bytes (lo, hi) | program u32 | lsn u64 | index u32 (36 bytes)
constexpr size_t kHistoryKey = 28;
constexpr size_t kLookupKey = 36;

void be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}
uint64_t get_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

void history_key(uint32_t seg, const HistoryEntry& e, uint8_t* k) {
  be(k, seg, 4);
  be(k + 4, e.account, 8);
  be(k + 12, e.program, 4);
  be(k + 16, e.at.lsn, 8);
  be(k + 24, e.at.index, 4);
}
void lookup_key(uint32_t seg, const Ref128& ref, const HistoryEntry& e, uint8_t* k) {
  be(k, seg, 4);
  be(k + 4, ref.lo, 8);
  be(k + 12, ref.hi, 8);
  be(k + 20, e.program, 4);
  be(k + 24, e.at.lsn, 8);
  be(k + 32, e.at.index, 4);
}

// Values: kind, result, flags, tier, then zigzag varints (amount, points, time, available, held,
// counterparty, store), then ref (16) and, when flags bit 7 says so, target (16).
constexpr uint8_t kHasTarget = 0x80;
void put_uvar(std::vector<uint8_t>* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}
bool get_uvar(std::span<const uint8_t>* in, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    uint8_t b = in->front();
    *in = in->subspan(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

void put_var(std::vector<uint8_t>* out, int64_t s) {  // zigzag
  put_uvar(out, (static_cast<uint64_t>(s) << 1) ^ static_cast<uint64_t>(s >> 63));
}
bool get_var(std::span<const uint8_t>* in, int64_t* s) {
  uint64_t v = 0;
  if (!get_uvar(in, &v)) return false;
  *s = static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  return true;
}
void encode_value(const HistoryEntry& e, std::vector<uint8_t>* out) {
  bool target = !e.target.empty();
  out->push_back(static_cast<uint8_t>(e.kind));
  out->push_back(static_cast<uint8_t>(e.result));
  out->push_back(static_cast<uint8_t>((e.flags & 0x7f) | (target ? kHasTarget : 0)));
  out->push_back(e.tier);
  for (int64_t v : {e.amount, e.points, e.time_ms, e.available, e.held, static_cast<int64_t>(e.counterparty),
                    static_cast<int64_t>(e.store)})
    put_var(out, v);
  uint8_t r[16];
  std::memcpy(r, &e.ref.lo, 8);
  std::memcpy(r + 8, &e.ref.hi, 8);
  out->insert(out->end(), r, r + 16);
  if (target) {
    std::memcpy(r, &e.target.lo, 8);
    std::memcpy(r + 8, &e.target.hi, 8);
    out->insert(out->end(), r, r + 16);
  }
}
bool decode_entry(std::span<const uint8_t> key, std::span<const uint8_t> v, HistoryEntry* e) {
  if (key.size() != kHistoryKey || v.size() < 4) return false;
  e->account = get_be(key.data() + 4, 8);
  e->program = static_cast<uint32_t>(get_be(key.data() + 12, 4));
  e->at = {get_be(key.data() + 16, 8), static_cast<uint32_t>(get_be(key.data() + 24, 4))};
  e->kind = static_cast<EventKind>(v[0]);
  e->result = static_cast<Result>(v[1]);
  e->flags = v[2] & 0x7f;
  bool target = v[2] & kHasTarget;
  e->tier = v[3];
  std::span<const uint8_t> in = v.subspan(4);
  int64_t cp = 0, store = 0;
  if (!get_var(&in, &e->amount) || !get_var(&in, &e->points) || !get_var(&in, &e->time_ms) ||
      !get_var(&in, &e->available) || !get_var(&in, &e->held) || !get_var(&in, &cp) || !get_var(&in, &store))
    return false;
  e->counterparty = static_cast<uint64_t>(cp);
  e->store = static_cast<uint32_t>(store);
  if (in.size() != (target ? 32u : 16u)) return false;
  std::memcpy(&e->ref.lo, in.data(), 8);
  std::memcpy(&e->ref.hi, in.data() + 8, 8);
  e->target = {};
  if (target) {
    std::memcpy(&e->target.lo, in.data() + 16, 8);
    std::memcpy(&e->target.hi, in.data() + 24, 8);
  }
  return true;
}

uint32_t published_segments(const Store& s) {
  auto v = s.meta("history_segments");
  return v ? static_cast<uint32_t>(std::stoul(*v)) : 0;
}
uint64_t published_lsn(const Store& s) {
  auto v = s.meta("history_lsn");
  return v ? std::stoull(*v) : 0;
}

// Every logged record after `after`, with its position.
void for_each_record(const Store& s, uint64_t after, const std::function<void(const Effect&, LogPos)>& f) {
  std::vector<Effect> records;
  s.scan(after + 1, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    records.clear();
    BatchHeader h;
    if (decode_batch(bytes, &h, &records) != DecodeError::kOk)
      throw StorageError("log batch " + std::to_string(lsn) + " does not decode (run tally-admin verify)", 0);
    for (size_t i = 0; i < records.size(); ++i) f(records[i], {lsn, static_cast<uint32_t>(i)});
    return true;
  });
}

// ---- blocks -------------------------------------------------------------------------------------
// Both databases hold blocks, not single entries: one LMDB put per entry cost more than the log
// itself (docs/history.md, "Blocks"). A block is keyed by its first entry's key and holds up to
// kBlockBytes of entries in key order, each: varint bytes shared with the previous key, varint
// unshared bytes, varint value size, the unshared key bytes, the value. Small enough that a block
// and its key stay inside one 4 KiB LMDB page (no overflow pages).
constexpr size_t kBlockBytes = 1800;
// Meta naming the index's layout, written with every segment published: an index of another
// layout is refused at start, not misread.
constexpr const char* kFormatKey = "history_format";
constexpr const char* kFormat = "blocks-1";

int compare(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  size_t n = std::min(a.size(), b.size());
  int c = n == 0 ? 0 : std::memcmp(a.data(), b.data(), n);
  if (c != 0) return c;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

// Every entry of one block, in order, until f returns false (then false). Throws on a malformed
// block: the index is ours, so that is corruption.
using EntryFn = std::function<bool(std::span<const uint8_t>, std::span<const uint8_t>)>;
bool for_each_in_block(std::span<const uint8_t> block_key, std::span<const uint8_t> block, const EntryFn& f) {
  uint8_t key[64];
  size_t key_len = 0;
  bool first = true;
  while (!block.empty()) {
    uint64_t shared = 0, unshared = 0, value_len = 0;
    if (!get_uvar(&block, &shared) || !get_uvar(&block, &unshared) || !get_uvar(&block, &value_len) ||
        shared > key_len || unshared > sizeof key - shared || unshared > block.size() ||
        value_len > block.size() - unshared)
      throw StorageError("history index: a malformed block", 0);
    std::memcpy(key + shared, block.data(), unshared);
    key_len = shared + unshared;
    std::span<const uint8_t> k(key, key_len);
    if (first && compare(k, block_key) != 0) throw StorageError("history index: a block's key is not its first entry's", 0);
    first = false;
    if (!f(k, block.subspan(unshared, value_len))) return false;
    block = block.subspan(unshared + value_len);
  }
  return true;
}

// Every entry of `db` with key >= from, in key order, until f returns false.
void scan_entries(const Store& store, IndexDb db, std::span<const uint8_t> from, const EntryFn& f) {
  store.index_scan_from(db, from, [&](std::span<const uint8_t> bk, std::span<const uint8_t> bv) {
    return for_each_in_block(bk, bv, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
      return compare(k, from) < 0 || f(k, v);
    });
  });
}

// Every entry whose key starts with `prefix`, in key order.
void scan_prefix(const Store& store, IndexDb db, std::span<const uint8_t> prefix, const EntryFn& f) {
  scan_entries(store, db, prefix, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
    if (k.size() < prefix.size() || std::memcmp(k.data(), prefix.data(), prefix.size()) != 0) return false;
    return f(k, v);
  });
}

}  // namespace

HistoryEntry history_entry(const Effect& f, LogPos at) {
  HistoryEntry e;
  e.at = at;
  e.program = f.event.program;
  e.account = f.event.account;
  e.kind = f.event.kind;
  e.result = f.result;
  e.flags = f.flags;
  e.tier = f.state.tier;
  e.ref = f.event.ref;
  e.target = f.event.target;
  e.amount = f.event.amount;
  e.points = f.points;
  e.time_ms = f.time_ms;
  e.available = f.state.available;
  e.held = f.state.held;
  e.counterparty = f.event.counterparty;
  e.store = f.event.store;
  return e;
}


namespace {

// Sorts v by `less`, where a < b implies key(a) <= key(b) for the u64 `key`: one counting pass
// scatters the items into 4096 buckets by key range, then each bucket is sorted in cache. Member
// ids and hashed references spread over their range, so the buckets are small and the sort is two
// sequential sweeps and many tiny sorts; a skewed range only makes some buckets bigger. `tmp` is
// scratch space, kept by the caller for its capacity.
template <class T, class Key, class Less>
void bucket_sort(std::vector<T>& v, std::vector<T>& tmp, Key key, Less less) {
  if (v.size() < 2) return;
  constexpr unsigned kBits = 12;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const T& x : v) {
    lo = std::min(lo, key(x));
    hi = std::max(hi, key(x));
  }
  unsigned shift = 0;
  while (((hi - lo) >> shift) >= (uint64_t{1} << kBits)) ++shift;
  auto bucket = [&](const T& x) { return static_cast<size_t>((key(x) - lo) >> shift); };
  std::vector<size_t> start((size_t{1} << kBits) + 1, 0);
  for (const T& x : v) ++start[bucket(x) + 1];
  for (size_t b = 0; b + 1 < start.size(); ++b) start[b + 1] += start[b];
  std::vector<size_t> next(start.begin(), start.end() - 1);
  tmp.resize(v.size());
  for (const T& x : v) tmp[next[bucket(x)]++] = x;
  for (size_t b = 0; b + 1 < start.size(); ++b)
    std::sort(tmp.begin() + static_cast<std::ptrdiff_t>(start[b]), tmp.begin() + static_cast<std::ptrdiff_t>(start[b + 1]), less);
  v.swap(tmp);
}

}  // namespace

// ---- the committer's side -----------------------------------------------------------------------
// A sorted segment, encoded as blocks: keys and values back to back, with offsets. Reused from
// segment to segment (its vectors keep their capacity: a fresh 100 MB vector per segment cost the
// committer a page fault every 4 KiB).
struct Indexer::Built {
  uint32_t segment = 0;
  uint64_t last_lsn = 0;
  std::vector<HistoryEntry> entries;  // log order
  struct Item {
    IndexDb db;
    uint32_t key_off, key_len, value_off, value_len;
    uint32_t entries;  // in the block
  };
  std::vector<uint8_t> bytes;
  std::vector<Item> items;  // history blocks ascending, then lookup blocks ascending
  // A reference with what its lookup entry needs, so that sorting and encoding them never reads
  // `entries` at random (a cache and TLB miss per entry: it was 80% of this thread's time).
  struct ByRef {
    uint64_t lo, hi;
    uint32_t program, index;
    uint64_t lsn, account;
  };
  std::vector<ByRef> by_ref, by_ref_tmp;
  std::vector<HistoryEntry> sorted;  // scratch for sorting entries
  // The block being filled.
  std::vector<uint8_t> block, value;
  uint8_t first_key[kLookupKey], last_key[kLookupKey];
  size_t first_len = 0, last_len = 0, in_block = 0;
  IndexDb block_db = IndexDb::kHistory;

  void clear() {
    entries.clear();
    bytes.clear();
    items.clear();
  }

  void build() {
    bytes.clear();
    items.clear();
    // The entries themselves are sorted, not positions: reading them through sorted positions
    // missed the cache on every entry. A comparison sort of a million was the next cost.
    bucket_sort(
        entries, sorted, [](const HistoryEntry& e) { return e.account; },
        [](const HistoryEntry& a, const HistoryEntry& b) {
          if (a.account != b.account) return a.account < b.account;
          if (a.program != b.program) return a.program < b.program;
          return a.at < b.at;
        });
    uint8_t k[kLookupKey];
    block_db = IndexDb::kHistory;
    by_ref.clear();
    by_ref.reserve(entries.size());
    for (const HistoryEntry& e : entries) {
      history_key(segment, e, k);
      value.clear();
      encode_value(e, &value);
      add(k, kHistoryKey, value.data(), value.size());
      // Lookup: one key per reference the effect names (its own and its target), the account as value.
      if (!e.ref.empty()) by_ref.push_back({e.ref.lo, e.ref.hi, e.program, e.at.index, e.at.lsn, e.account});
      if (!e.target.empty() && !(e.target == e.ref))
        by_ref.push_back({e.target.lo, e.target.hi, e.program, e.at.index, e.at.lsn, e.account});
    }
    close_block();
    bucket_sort(
        by_ref, by_ref_tmp, [](const ByRef& r) { return r.lo; },
        [](const ByRef& a, const ByRef& b) {
          if (a.lo != b.lo) return a.lo < b.lo;
          if (a.hi != b.hi) return a.hi < b.hi;
          if (a.program != b.program) return a.program < b.program;
          if (a.lsn != b.lsn) return a.lsn < b.lsn;
          return a.index < b.index;
        });
    block_db = IndexDb::kLookup;
    for (const ByRef& r : by_ref) {
      HistoryEntry e;  // the fields lookup_key reads
      e.program = r.program;
      e.at = {r.lsn, r.index};
      lookup_key(segment, Ref128{r.lo, r.hi}, e, k);
      uint8_t acc[8];
      be(acc, r.account, 8);
      add(k, kLookupKey, acc, 8);
    }
    close_block();
    entries.clear();  // keeps its capacity for the next segment
  }
  void add(const uint8_t* key, size_t kl, const uint8_t* v, size_t vl) {
    size_t shared = 0;
    if (in_block == 0) {
      std::memcpy(first_key, key, kl);
      first_len = kl;
    } else {
      while (shared < kl && shared < last_len && key[shared] == last_key[shared]) ++shared;
    }
    put_uvar(&block, shared);
    put_uvar(&block, kl - shared);
    put_uvar(&block, vl);
    block.insert(block.end(), key + shared, key + kl);
    block.insert(block.end(), v, v + vl);
    std::memcpy(last_key, key, kl);
    last_len = kl;
    ++in_block;
    if (block.size() >= kBlockBytes) close_block();
  }
  void close_block() {
    if (in_block == 0) return;
    Item it{block_db, static_cast<uint32_t>(bytes.size()), static_cast<uint32_t>(first_len), 0,
            static_cast<uint32_t>(block.size()), static_cast<uint32_t>(in_block)};
    bytes.insert(bytes.end(), first_key, first_key + first_len);
    it.value_off = static_cast<uint32_t>(bytes.size());
    bytes.insert(bytes.end(), block.begin(), block.end());
    items.push_back(it);
    block.clear();
    in_block = 0;
  }
};

Indexer::Indexer(Store* store, HistoryOptions options) : store_(store), options_(options) {
  segments_ = published_segments(*store_);
  indexed_lsn_ = published_lsn(*store_);
  if (segments_ > 0 && store_->meta(kFormatKey) != std::string(kFormat))
    throw StorageError(
        "the history index in this data directory was written by an older build, one LMDB record per "
        "entry (docs/history.md, \"Blocks\"); this build reads only blocks. Start the older build, or "
        "restore a backup into a new directory with it",
        0);
  reserve_collecting();
  for_each_record(*store_, indexed_lsn_, [&](const Effect& f, LogPos at) {
    collecting_.push_back(history_entry(f, at));
  });
}

Indexer::~Indexer() {
  if (worker_.joinable()) worker_.join();
}

// Room for a whole segment (and the commit that crosses its threshold) before the first record:
// growing by doubling copied up to 64 MB on the committer thread, a commit stall of tens of ms
// (p99 of 100 ms in open loop at a quarter of the peak). Untouched capacity costs no memory.
void Indexer::reserve_collecting() {
  collecting_.reserve(std::max(collecting_.capacity(), options_.segment_records + (size_t{1} << 16)));
}

void Indexer::add(std::span<const Effect> records, std::span<const LogPos> positions) {
  for (size_t i = 0; i < records.size(); ++i) collecting_.push_back(history_entry(records[i], positions[i]));
  if (!building_ && collecting_.size() >= options_.segment_records) start_segment();
}

void Indexer::start_segment() {
  if (worker_.joinable()) worker_.join();  // the previous segment's worker, long finished
  building_ = spare_ ? std::move(spare_) : std::make_unique<Built>();
  building_->segment = segments_ + 1;
  // Everything collected (a backlog catches up in one segment) up to 4 x segment_records, ending
  // with a whole batch: every record at or below the segment's last LSN is in a segment.
  size_t n = std::min<size_t>(4 * options_.segment_records, collecting_.size());
  while (n < collecting_.size() && collecting_[n].at.lsn == collecting_[n - 1].at.lsn) ++n;
  building_->last_lsn = collecting_[n - 1].at.lsn;
  if (n == collecting_.size()) {  // the usual case: hand the vector over, collect into the spare one
    building_->entries.swap(collecting_);
    collecting_.clear();
    reserve_collecting();
  } else {
    building_->entries.assign(collecting_.begin(), collecting_.begin() + static_cast<std::ptrdiff_t>(n));
    collecting_.erase(collecting_.begin(), collecting_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  written_ = 0;
  built_.store(false, std::memory_order_relaxed);
  // Sorting a million entries takes a while: off the committer thread.
  worker_ = std::thread([this] {
    name_this_thread("tally-index");
    building_->build();
    built_.store(true, std::memory_order_release);
    if (wake_) wake_();
  });
}

void Indexer::prepare(WriteSet* w) {
  if (drop_stale_) {
    w->index_drop_from = segments_ + 1;  // keys of a segment a crash left unpublished
    drop_stale_ = false;
  }
  pending_ = 0;
  publishing_ = false;
  if (!building_ || !built_.load(std::memory_order_acquire)) return;
  const Built& b = *building_;
  size_t end = written_, entries = 0;  // whole blocks, about entries_per_commit entries
  for (; end < b.items.size() && entries < options_.entries_per_commit; ++end) {
    const Built::Item& it = b.items[end];
    w->index.push_back({it.db, std::span(b.bytes.data() + it.key_off, it.key_len),
                        std::span(b.bytes.data() + it.value_off, it.value_len)});
    entries += it.entries;
  }
  pending_ = end - written_;
  if (end == b.items.size()) {
    publishing_ = true;
    w->meta.emplace_back(kFormatKey, kFormat);
    w->meta.emplace_back("history_segments", std::to_string(b.segment));
    w->meta.emplace_back("history_lsn", std::to_string(b.last_lsn));
  }
}

bool Indexer::committed() {
  written_ += pending_;
  pending_ = 0;
  if (!publishing_) return false;
  {
    segments_ = building_->segment;
    indexed_lsn_ = building_->last_lsn;
    if (worker_.joinable()) worker_.join();
    building_->clear();
    spare_ = std::move(building_);
    publishing_ = false;
    if (collecting_.size() >= options_.segment_records) start_segment();
  }
  return true;
}

bool Indexer::finish(WriteSet* w) {
  if (!building_) return false;
  if (worker_.joinable()) worker_.join();
  size_t saved = options_.entries_per_commit;
  options_.entries_per_commit = SIZE_MAX;
  prepare(w);
  options_.entries_per_commit = saved;
  return true;
}

bool Indexer::has_work() const { return building_ && built_.load(std::memory_order_acquire); }

// ---- queries ------------------------------------------------------------------------------------
std::vector<HistoryEntry> history(const Store& store, uint32_t program, uint64_t account, size_t limit,
                                  LogPos before) {
  // Newest first: the log after the index, then segments from the newest.
  uint32_t segments = published_segments(store);
  uint64_t indexed = published_lsn(store);
  std::vector<HistoryEntry> out, tail;
  for_each_record(store, indexed, [&](const Effect& f, LogPos at) {
    if (f.event.account == account && (program == 0 || f.event.program == program) && at < before)
      tail.push_back(history_entry(f, at));
  });
  for (auto it = tail.rbegin(); it != tail.rend() && out.size() < limit; ++it) out.push_back(*it);
  for (uint32_t seg = segments; seg >= 1 && out.size() < limit; --seg) {
    uint8_t prefix[16];
    be(prefix, seg, 4);
    be(prefix + 4, account, 8);
    be(prefix + 12, program, 4);
    std::vector<HistoryEntry> mine;
    scan_prefix(store, IndexDb::kHistory, std::span<const uint8_t>(prefix, program == 0 ? 12 : 16),
                [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                       HistoryEntry e;
                       if (!decode_entry(k, v, &e)) throw StorageError("history index: an undecodable entry", 0);
                       if (e.at < before) mine.push_back(e);
                       return true;
                     });
    std::sort(mine.begin(), mine.end(), [](const HistoryEntry& a, const HistoryEntry& b) { return b.at < a.at; });
    for (const HistoryEntry& e : mine) {
      if (out.size() >= limit) break;
      out.push_back(e);
    }
  }
  return out;
}

void for_each_indexed(const Store& store, const std::function<void(const HistoryEntry&)>& f) {
  scan_entries(store, IndexDb::kHistory, {}, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
    HistoryEntry e;
    if (!decode_entry(k, v, &e)) throw StorageError("history index: an undecodable entry", 0);
    f(e);
    return true;
  });
}

std::vector<HistoryEntry> lookup(const Store& store, uint32_t program, const Ref128& ref) {
  uint32_t segments = published_segments(store);
  uint64_t indexed = published_lsn(store);
  std::vector<HistoryEntry> out;
  for (uint32_t seg = 1; seg <= segments; ++seg) {
    uint8_t prefix[24];
    be(prefix, seg, 4);
    be(prefix + 4, ref.lo, 8);
    be(prefix + 12, ref.hi, 8);
    be(prefix + 20, program, 4);
    std::vector<std::array<uint8_t, kHistoryKey>> keys;  // the history keys the references name
    scan_prefix(store, IndexDb::kLookup, std::span<const uint8_t>(prefix, program == 0 ? 20 : 24),
                [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                  if (k.size() != kLookupKey || v.size() != 8)
                    throw StorageError("lookup index: an undecodable entry", 0);
                  std::array<uint8_t, kHistoryKey>& hk = keys.emplace_back();
                  be(hk.data(), seg, 4);
                  std::memcpy(hk.data() + 4, v.data(), 8);         // account
                  std::memcpy(hk.data() + 12, k.data() + 20, 16);  // program, lsn, index
                  return true;
                });
    for (const auto& hk : keys) {
      std::span<const uint8_t> want(hk.data(), hk.size());
      bool found = false;
      scan_entries(store, IndexDb::kHistory, want, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        HistoryEntry e;
        if (compare(k, want) == 0 && decode_entry(k, v, &e)) {
          out.push_back(e);
          found = true;
        }
        return false;  // the first entry at or after the key is the one, or it is missing
      });
      if (!found) throw StorageError("lookup index: points at a missing history entry", 0);
    }
  }
  for_each_record(store, indexed, [&](const Effect& f, LogPos at) {
    if ((program == 0 || f.event.program == program) && (f.event.ref == ref || f.event.target == ref))
      out.push_back(history_entry(f, at));
  });
  return out;
}

}  // namespace tally::storage
