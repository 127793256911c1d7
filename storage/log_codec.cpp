#include "storage/log_codec.h"

#include <xxhash.h>

#include <cstring>

namespace tally::storage {
namespace {

// Presence bits of a record (docs/log-format.md, "Record").
enum Field : uint16_t {
  kRef = 1 << 0,
  kTarget = 1 << 1,
  kCounterparty = 1 << 2,
  kAmount = 1 << 3,
  kBusinessTime = 1 << 4,
  kStore = 1 << 5,
  kTerminal = 1 << 6,
  kKeyId = 1 << 7,
  kCurrency = 1 << 8,
  kCode = 1 << 9,
  kPoints = 1 << 10,
  kBalances = 1 << 11,
  kTierFlags = 1 << 12,
  kDepends = 1 << 13,
  kPending = 1 << 14,
  kMemberUntil = 1 << 15,
  kKnownFields = 0xFFFF,
};

constexpr size_t kHashOffset = 56;

void put_u16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put_u64(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_varint(std::vector<uint8_t>& b, uint64_t v) {
  while (v >= 0x80) {
    b.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  b.push_back(static_cast<uint8_t>(v));
}
uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
void put_svarint(std::vector<uint8_t>& b, int64_t v) { put_varint(b, zigzag(v)); }
void put_ref(std::vector<uint8_t>& b, const Ref128& r) {
  put_u64(b, r.lo);
  put_u64(b, r.hi);
}

void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void store_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t batch_hash(const uint8_t* bytes, size_t size) {
  // XXH3-64 of the body, seeded with XXH3-64 of the header bytes before the hash field.
  XXH64_hash_t header = XXH3_64bits(bytes, kHashOffset);
  return XXH3_64bits_withSeed(bytes + kBatchHeaderBytes, size - kBatchHeaderBytes, header);
}

uint16_t presence(const Effect& f) {
  const Event& e = f.event;
  uint16_t p = 0;
  if (!e.ref.empty()) p |= kRef;
  if (!e.target.empty()) p |= kTarget;
  if (e.counterparty != 0) p |= kCounterparty;
  if (e.amount != 0) p |= kAmount;
  if (e.business_time_ms != 0) p |= kBusinessTime;
  if (e.store != 0) p |= kStore;
  if (e.terminal != 0) p |= kTerminal;
  if (e.key_id != 0) p |= kKeyId;
  if (e.currency != 0) p |= kCurrency;
  if (e.code != 0) p |= kCode;
  if (f.points != 0) p |= kPoints;
  const AccountState& s = f.state;
  if (s.available != 0 || s.held != 0 || s.lifetime_earned != 0 || s.lifetime_redeemed != 0 ||
      s.qualifying != 0)
    p |= kBalances;
  if (s.tier != 0 || s.flags != 0) p |= kTierFlags;
  if (f.depends_seq != 0 || f.depends_shard != 0) p |= kDepends;
  if (s.pending != 0) p |= kPending;
  if (s.member_until != 0) p |= kMemberUntil;
  return p;
}

void encode(std::vector<uint8_t>& b, const Effect& f, int64_t base_time_ms) {
  const Event& e = f.event;
  uint16_t p = presence(f);
  b.push_back(static_cast<uint8_t>(e.kind));
  b.push_back(static_cast<uint8_t>(f.result));
  b.push_back(f.flags);
  b.push_back(e.channel);
  put_u16(b, f.shard);
  put_u16(b, p);
  put_varint(b, f.seq);
  put_svarint(b, f.time_ms - base_time_ms);
  put_varint(b, e.account);
  put_varint(b, e.program);
  if (p & kRef) put_ref(b, e.ref);
  if (p & kTarget) put_ref(b, e.target);
  if (p & kCounterparty) put_varint(b, e.counterparty);
  if (p & kAmount) put_svarint(b, e.amount);
  if (p & kBusinessTime) put_svarint(b, e.business_time_ms - f.time_ms);
  if (p & kStore) put_varint(b, e.store);
  if (p & kTerminal) put_varint(b, e.terminal);
  if (p & kKeyId) put_varint(b, e.key_id);
  if (p & kCurrency) put_varint(b, e.currency);
  if (p & kCode) put_varint(b, e.code);
  if (p & kPoints) put_svarint(b, f.points);
  if (p & kBalances) {
    put_svarint(b, f.state.available);
    put_svarint(b, f.state.held);
    put_svarint(b, f.state.lifetime_earned);
    put_svarint(b, f.state.lifetime_redeemed);
    put_svarint(b, f.state.qualifying);
  }
  if (p & kTierFlags) {
    b.push_back(f.state.tier);
    b.push_back(f.state.flags);
  }
  if (p & kDepends) {
    put_u16(b, f.depends_shard);
    put_varint(b, f.depends_seq);
  }
  if (p & kPending) put_svarint(b, f.state.pending);
  if (p & kMemberUntil) put_varint(b, f.state.member_until);
}

// A bounds-checked cursor over a record body.
class Reader {
 public:
  Reader(const uint8_t* p, const uint8_t* end) : p_(p), end_(end) {}
  bool ok() const { return ok_; }
  bool done() const { return p_ == end_; }
  uint8_t u8() {
    if (p_ >= end_) return fail();
    return *p_++;
  }
  uint16_t u16() {
    if (end_ - p_ < 2) return fail();
    uint16_t v = load_u16(p_);
    p_ += 2;
    return v;
  }
  uint64_t u64() {
    if (end_ - p_ < 8) return fail();
    uint64_t v = load_u64(p_);
    p_ += 8;
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) return fail();
      uint8_t byte = *p_++;
      if (shift == 63 && byte > 1) return fail();  // more than 64 bits
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return v;
    }
    return fail();
  }
  int64_t svarint() { return unzigzag(varint()); }
  // A varint that must fit `bits` bits.
  uint64_t varint_max(int bits) {
    uint64_t v = varint();
    if (bits < 64 && (v >> bits) != 0) return fail();
    return v;
  }
  Ref128 ref() {
    Ref128 r;
    r.lo = u64();
    r.hi = u64();
    return r;
  }
  uint8_t fail() {
    ok_ = false;
    p_ = end_;
    return 0;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

bool known_kind(uint8_t k) {
  return (k >= static_cast<uint8_t>(EventKind::kInvalid) && k <= static_cast<uint8_t>(EventKind::kMembership)) ||
         (k >= static_cast<uint8_t>(EventKind::kTransferIn) && k <= static_cast<uint8_t>(kInternalKindMax));
}

// Adds without wrapping; false on overflow.
bool add_time(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

bool decode_one(Reader& r, int64_t base_time_ms, Effect* f) {
  *f = Effect{};
  Event& e = f->event;
  uint8_t kind = r.u8();
  uint8_t result = r.u8();
  f->flags = r.u8();
  e.channel = r.u8();
  f->shard = r.u16();
  uint16_t p = r.u16();
  if (!r.ok() || !known_kind(kind) || result >= kResultCount || (p & ~kKnownFields) != 0) return false;
  e.kind = static_cast<EventKind>(kind);
  f->result = static_cast<Result>(result);
  f->seq = r.varint();
  if (!add_time(base_time_ms, r.svarint(), &f->time_ms)) return false;
  e.account = r.varint();
  e.program = static_cast<uint32_t>(r.varint_max(32));
  if (p & kRef) e.ref = r.ref();
  if (p & kTarget) e.target = r.ref();
  if (p & kCounterparty) e.counterparty = r.varint();
  if (p & kAmount) e.amount = r.svarint();
  if (p & kBusinessTime && !add_time(f->time_ms, r.svarint(), &e.business_time_ms)) return false;
  if (p & kStore) e.store = static_cast<uint32_t>(r.varint_max(32));
  if (p & kTerminal) e.terminal = static_cast<uint32_t>(r.varint_max(32));
  if (p & kKeyId) e.key_id = static_cast<uint32_t>(r.varint_max(32));
  if (p & kCurrency) e.currency = static_cast<uint16_t>(r.varint_max(16));
  if (p & kCode) e.code = static_cast<uint16_t>(r.varint_max(16));
  if (p & kPoints) f->points = r.svarint();
  if (p & kBalances) {
    f->state.available = r.svarint();
    f->state.held = r.svarint();
    f->state.lifetime_earned = r.svarint();
    f->state.lifetime_redeemed = r.svarint();
    f->state.qualifying = r.svarint();
  }
  if (p & kTierFlags) {
    f->state.tier = r.u8();
    f->state.flags = r.u8();
  }
  if (p & kDepends) {
    f->depends_shard = r.u16();
    f->depends_seq = r.varint();
  }
  if (p & kPending) f->state.pending = r.svarint();
  if (p & kMemberUntil) f->state.member_until = static_cast<uint16_t>(r.varint_max(16));
  return r.ok();
}

}  // namespace

std::string_view to_string(DecodeError e) {
  switch (e) {
    case DecodeError::kOk: return "ok";
    case DecodeError::kTooShort: return "value shorter than its header says (truncated or torn)";
    case DecodeError::kBadMagic: return "not a Tally log batch (bad magic)";
    case DecodeError::kNewerVersion: return "written by a newer Tally log format";
    case DecodeError::kBadVersion: return "unknown log format version";
    case DecodeError::kBadChecksum: return "checksum mismatch (corrupt bytes)";
    case DecodeError::kBadRecord: return "malformed record";
    case DecodeError::kTrailingBytes: return "bytes after the last record";
  }
  return "?";
}

void BatchWriter::begin(uint64_t lsn, uint64_t epoch, uint64_t prev_hash, int64_t base_time_ms) {
  bytes_.clear();
  bytes_.resize(kBatchHeaderBytes);
  header_ = BatchHeader{};
  header_.lsn = lsn;
  header_.epoch = epoch;
  header_.prev_hash = prev_hash;
  header_.base_time_ms = base_time_ms;
  count_ = 0;
}

void BatchWriter::add(const Effect& e) {
  encode(bytes_, e, header_.base_time_ms);
  ++count_;
}

std::span<const uint8_t> BatchWriter::finish(BatchHeader* header) {
  header_.record_count = count_;
  header_.body_bytes = static_cast<uint32_t>(body_size());
  uint8_t* h = bytes_.data();
  store_u32(h + 0, kBatchMagic);
  store_u16(h + 4, header_.version);
  store_u16(h + 6, header_.flags);
  store_u64(h + 8, header_.lsn);
  store_u64(h + 16, header_.epoch);
  store_u64(h + 24, header_.prev_hash);
  store_u64(h + 32, static_cast<uint64_t>(header_.base_time_ms));
  store_u32(h + 40, header_.record_count);
  store_u32(h + 44, header_.body_bytes);
  store_u64(h + 48, 0);  // reserved
  header_.hash = batch_hash(h, bytes_.size());
  store_u64(h + kHashOffset, header_.hash);
  *header = header_;
  return bytes_;
}

namespace {

// The header's fields and lengths; the hash too unless `check_hash` is false (filtered stream
// batches carry the original batch's hash).
DecodeError read_header_fields(std::span<const uint8_t> value, BatchHeader* header, bool check_hash) {
  if (value.size() < kBatchHeaderBytes) return DecodeError::kTooShort;
  const uint8_t* h = value.data();
  if (load_u32(h) != kBatchMagic) return DecodeError::kBadMagic;
  BatchHeader b;
  b.version = load_u16(h + 4);
  b.flags = load_u16(h + 6);
  b.lsn = load_u64(h + 8);
  b.epoch = load_u64(h + 16);
  b.prev_hash = load_u64(h + 24);
  b.base_time_ms = static_cast<int64_t>(load_u64(h + 32));
  b.record_count = load_u32(h + 40);
  b.body_bytes = load_u32(h + 44);
  b.hash = load_u64(h + kHashOffset);
  // The hash first: a flipped version byte is corruption, not a newer format.
  if (b.body_bytes > kBatchBodyMax || value.size() != kBatchHeaderBytes + b.body_bytes) {
    return value.size() < kBatchHeaderBytes + b.body_bytes ? DecodeError::kTooShort
                                                           : DecodeError::kTrailingBytes;
  }
  if (check_hash && batch_hash(h, value.size()) != b.hash) return DecodeError::kBadChecksum;
  if (b.version > kLogFormatVersion) return DecodeError::kNewerVersion;
  if (b.version != kLogFormatVersion) return DecodeError::kBadVersion;
  *header = b;
  return DecodeError::kOk;
}

DecodeError decode_records(std::span<const uint8_t> value, const BatchHeader& header, std::vector<Effect>* out) {
  Reader r(value.data() + kBatchHeaderBytes, value.data() + value.size());
  for (uint32_t i = 0; i < header.record_count; ++i) {
    Effect f;
    if (!decode_one(r, header.base_time_ms, &f)) return DecodeError::kBadRecord;
    out->push_back(f);
  }
  return r.done() ? DecodeError::kOk : DecodeError::kTrailingBytes;
}

}  // namespace

DecodeError read_header(std::span<const uint8_t> value, BatchHeader* header) {
  return read_header_fields(value, header, true);
}

DecodeError decode_batch(std::span<const uint8_t> value, BatchHeader* header, std::vector<Effect>* out) {
  DecodeError err = read_header(value, header);
  if (err != DecodeError::kOk) return err;
  return decode_records(value, *header, out);
}

DecodeError decode_stream_batch(std::span<const uint8_t> value, BatchHeader* header, std::vector<Effect>* out) {
  if (value.size() >= kBatchHeaderBytes && (load_u16(value.data() + 6) & kBatchFiltered) == 0)
    return decode_batch(value, header, out);
  DecodeError err = read_header_fields(value, header, false);
  if (err != DecodeError::kOk) return err;
  return decode_records(value, *header, out);
}

bool filter_batch(std::span<const uint8_t> value, uint32_t program, std::vector<uint8_t>* out) {
  BatchHeader h;
  thread_local std::vector<Effect> records;
  records.clear();
  if (decode_batch(value, &h, &records) != DecodeError::kOk) return false;
  size_t at = out->size();
  out->resize(at + kBatchHeaderBytes);
  uint32_t kept = 0;
  for (const Effect& f : records) {
    if (f.event.program != program) continue;
    encode(*out, f, h.base_time_ms);
    ++kept;
  }
  uint8_t* p = out->data() + at;
  std::memcpy(p, value.data(), kBatchHeaderBytes);
  store_u16(p + 6, static_cast<uint16_t>(h.flags | kBatchFiltered));
  store_u32(p + 40, kept);
  store_u32(p + 44, static_cast<uint32_t>(out->size() - at - kBatchHeaderBytes));
  store_u32(p + 48, h.record_count);
  store_u32(p + 52, 0);
  return true;
}

uint64_t compute_batch_hash(std::span<const uint8_t> value) {
  if (value.size() < kBatchHeaderBytes) return 0;
  return batch_hash(value.data(), value.size());
}

bool equal_logged(const Effect& a, const Effect& b) {
  const Event& x = a.event;
  const Event& y = b.event;
  return x.ref == y.ref && x.target == y.target && x.account == y.account &&
         x.counterparty == y.counterparty && x.amount == y.amount &&
         x.business_time_ms == y.business_time_ms && x.program == y.program && x.store == y.store &&
         x.terminal == y.terminal && x.key_id == y.key_id && x.currency == y.currency &&
         x.code == y.code && x.kind == y.kind && x.channel == y.channel && a.time_ms == b.time_ms &&
         a.seq == b.seq && a.points == b.points && a.state.available == b.state.available &&
         a.state.held == b.state.held && a.state.lifetime_earned == b.state.lifetime_earned &&
         a.state.lifetime_redeemed == b.state.lifetime_redeemed &&
         a.state.qualifying == b.state.qualifying && a.state.pending == b.state.pending &&
         a.state.member_until == b.state.member_until &&
         a.state.tier == b.state.tier &&
         a.state.flags == b.state.flags && a.depends_seq == b.depends_seq && a.shard == b.shard &&
         a.depends_shard == b.depends_shard && a.result == b.result && a.flags == b.flags;
}

size_t encoded_size(const Effect& e, int64_t base_time_ms) {
  std::vector<uint8_t> b;
  encode(b, e, base_time_ms);
  return b.size();
}

}  // namespace tally::storage
