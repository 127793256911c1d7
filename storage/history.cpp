#include "storage/history.h"

#include "engine/runtime/pipeline.h"  // name_this_thread

#include <algorithm>
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
void put_var(std::vector<uint8_t>* out, int64_t s) {
  uint64_t v = (static_cast<uint64_t>(s) << 1) ^ static_cast<uint64_t>(s >> 63);
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}
bool get_var(std::span<const uint8_t>* in, int64_t* s) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    uint8_t b = in->front();
    *in = in->subspan(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *s = static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
      return true;
    }
  }
  return false;
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

// ---- the committer's side -----------------------------------------------------------------------
// A sorted segment, encoded: keys and values back to back, with offsets.
struct Indexer::Built {
  uint32_t segment = 0;
  uint64_t last_lsn = 0;
  std::vector<HistoryEntry> entries;
  struct Item {
    IndexDb db;
    uint32_t key_off, key_len, value_off, value_len;
  };
  std::vector<uint8_t> bytes;
  std::vector<Item> items;  // history keys ascending, then lookup keys ascending

  void build() {
    std::vector<uint8_t> value;
    std::sort(entries.begin(), entries.end(), [](const HistoryEntry& a, const HistoryEntry& b) {
      if (a.account != b.account) return a.account < b.account;
      if (a.program != b.program) return a.program < b.program;
      return a.at < b.at;
    });
    uint8_t k[kLookupKey];
    for (const HistoryEntry& e : entries) {
      history_key(segment, e, k);
      value.clear();
      encode_value(e, &value);
      add(IndexDb::kHistory, k, kHistoryKey, value.data(), value.size());
    }
    // Lookup: one key per reference the effect names (its own and its target), the account as value.
    struct Ref {
      Ref128 ref;
      const HistoryEntry* e;
    };
    std::vector<Ref> refs;
    refs.reserve(entries.size());
    for (const HistoryEntry& e : entries) {
      if (!e.ref.empty()) refs.push_back({e.ref, &e});
      if (!e.target.empty() && !(e.target == e.ref)) refs.push_back({e.target, &e});
    }
    std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) {
      if (a.ref.lo != b.ref.lo) return a.ref.lo < b.ref.lo;
      if (a.ref.hi != b.ref.hi) return a.ref.hi < b.ref.hi;
      if (a.e->program != b.e->program) return a.e->program < b.e->program;
      return a.e->at < b.e->at;
    });
    for (const Ref& r : refs) {
      lookup_key(segment, r.ref, *r.e, k);
      uint8_t acc[8];
      be(acc, r.e->account, 8);
      add(IndexDb::kLookup, k, kLookupKey, acc, 8);
    }
    entries = {};
  }
  void add(IndexDb db, const uint8_t* key, size_t kl, const uint8_t* v, size_t vl) {
    Item it{db, static_cast<uint32_t>(bytes.size()), static_cast<uint32_t>(kl), 0, static_cast<uint32_t>(vl)};
    bytes.insert(bytes.end(), key, key + kl);
    it.value_off = static_cast<uint32_t>(bytes.size());
    bytes.insert(bytes.end(), v, v + vl);
    items.push_back(it);
  }
};

Indexer::Indexer(Store* store, HistoryOptions options) : store_(store), options_(options) {
  segments_ = published_segments(*store_);
  indexed_lsn_ = published_lsn(*store_);
  for_each_record(*store_, indexed_lsn_, [&](const Effect& f, LogPos at) {
    collecting_.push_back(history_entry(f, at));
  });
}

Indexer::~Indexer() {
  if (worker_.joinable()) worker_.join();
}

void Indexer::add(std::span<const Effect> records, std::span<const LogPos> positions) {
  for (size_t i = 0; i < records.size(); ++i) collecting_.push_back(history_entry(records[i], positions[i]));
  if (!building_ && collecting_.size() >= options_.segment_records) start_segment();
}

void Indexer::start_segment() {
  if (worker_.joinable()) worker_.join();  // the previous segment's worker, long finished
  building_ = std::make_unique<Built>();
  building_->segment = segments_ + 1;
  // Everything collected (a backlog catches up in one segment) up to 4 x segment_records, ending
  // with a whole batch: every record at or below the segment's last LSN is in a segment.
  size_t n = std::min<size_t>(4 * options_.segment_records, collecting_.size());
  while (n < collecting_.size() && collecting_[n].at.lsn == collecting_[n - 1].at.lsn) ++n;
  building_->last_lsn = collecting_[n - 1].at.lsn;
  building_->entries.assign(collecting_.begin(), collecting_.begin() + static_cast<std::ptrdiff_t>(n));
  collecting_.erase(collecting_.begin(), collecting_.begin() + static_cast<std::ptrdiff_t>(n));
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
  size_t end = std::min(b.items.size(), written_ + options_.entries_per_commit);
  for (size_t i = written_; i < end; ++i) {
    const Built::Item& it = b.items[i];
    w->index.push_back({it.db, std::span(b.bytes.data() + it.key_off, it.key_len),
                        std::span(b.bytes.data() + it.value_off, it.value_len)});
  }
  pending_ = end - written_;
  if (end == b.items.size()) {
    publishing_ = true;
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
    building_.reset();
    publishing_ = false;
    if (collecting_.size() >= options_.segment_records) start_segment();
  }
  return true;
}

bool Indexer::finish(WriteSet* w) {
  if (!building_) return false;
  if (worker_.joinable()) worker_.join();
  size_t saved = options_.entries_per_commit;
  options_.entries_per_commit = building_->items.size();
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
    store.index_scan(IndexDb::kHistory, std::span<const uint8_t>(prefix, program == 0 ? 12 : 16),
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
  store.index_scan(IndexDb::kHistory, {}, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
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
    store.index_scan(IndexDb::kLookup, std::span<const uint8_t>(prefix, program == 0 ? 20 : 24),
                     [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                       if (k.size() != kLookupKey || v.size() != 8)
                         throw StorageError("lookup index: an undecodable entry", 0);
                       uint8_t hk[kHistoryKey];
                       be(hk, seg, 4);
                       std::memcpy(hk + 4, v.data(), 8);                 // account
                       std::memcpy(hk + 12, k.data() + 20, 16);          // program, lsn, index
                       auto value = store.index_get(IndexDb::kHistory, std::span<const uint8_t>(hk, kHistoryKey));
                       HistoryEntry e;
                       if (!value || !decode_entry(std::span<const uint8_t>(hk, kHistoryKey), *value, &e))
                         throw StorageError("lookup index: points at a missing history entry", 0);
                       out.push_back(e);
                       return true;
                     });
  }
  for_each_record(store, indexed, [&](const Effect& f, LogPos at) {
    if ((program == 0 || f.event.program == program) && (f.event.ref == ref || f.event.target == ref))
      out.push_back(history_entry(f, at));
  });
  return out;
}

}  // namespace tally::storage
