#include "net/protocol.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>

// Sections: little-endian helpers; names; header and frames; frame shapes; records; FrameReader.

namespace tally::net {
namespace {

template <class T>
void put(uint8_t* p, T v) {
  auto u = static_cast<std::make_unsigned_t<T>>(v);
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>((u >> (8 * i)) & 0xff);
}
template <class T>
T get(const uint8_t* p) {
  std::make_unsigned_t<T> u = 0;
  for (size_t i = 0; i < sizeof(T); ++i) u |= static_cast<std::make_unsigned_t<T>>(p[i]) << (8 * i);
  return static_cast<T>(u);
}
bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}
void put_ref(uint8_t* p, const Ref128& r) {
  put<uint64_t>(p, r.lo);
  put<uint64_t>(p + 8, r.hi);
}
Ref128 get_ref(const uint8_t* p) { return {get<uint64_t>(p), get<uint64_t>(p + 8)}; }

constexpr size_t kHeaderHashedBytes = 40;

}  // namespace

// ---- Names --------------------------------------------------------------------------------------

std::string_view to_string(MsgType t) {
  switch (t) {
    case MsgType::kAuthStart: return "auth_start";
    case MsgType::kAuthChallenge: return "auth_challenge";
    case MsgType::kAuthFinish: return "auth_finish";
    case MsgType::kAuthOk: return "auth_ok";
    case MsgType::kEvents: return "events";
    case MsgType::kResults: return "results";
    case MsgType::kHistory: return "history";
    case MsgType::kLookup: return "lookup";
    case MsgType::kEntries: return "entries";
    case MsgType::kStats: return "stats";
    case MsgType::kStatsReply: return "stats_reply";
    case MsgType::kInfo: return "info";
    case MsgType::kInfoReply: return "info_reply";
    case MsgType::kStatement: return "statement";
    case MsgType::kStatementReply: return "statement_reply";
    case MsgType::kPing: return "ping";
    case MsgType::kPong: return "pong";
    case MsgType::kSubscribe: return "subscribe";
    case MsgType::kSubscribed: return "subscribed";
    case MsgType::kLogBatches: return "log_batches";
    case MsgType::kAck: return "ack";
    case MsgType::kError: return "error";
  }
  return "unknown";
}

std::string_view to_string(ErrorCode c) {
  static constexpr std::string_view kNames[kErrorCodeCount] = {
      "none", "bad_magic", "unsupported_version", "bad_header_checksum", "bad_body_checksum",
      "frame_too_large", "bad_record_count", "too_many_records", "unknown_type",
      "unexpected_message", "bad_record", "auth_failed", "forbidden", "timeout", "shutting_down",
      "too_many_connections", "storage_failed", "bad_flags", "truncated", "too_many_failures",
      "busy", "trimmed"};
  auto i = static_cast<uint16_t>(c);
  return i < kErrorCodeCount ? kNames[i] : std::string_view("unknown");
}

std::string_view to_string(Role r) {
  switch (r) {
    case Role::kPos: return "pos";
    case Role::kOperator: return "operator";
    case Role::kReader: return "reader";
    case Role::kReplica: return "replica";
  }
  return "unknown";
}

bool role_allows(Role role, EventKind kind) {
  if (is_internal(kind) || kind == EventKind::kInvalid) return false;
  switch (role) {
    case Role::kOperator: return true;
    case Role::kPos: return kind != EventKind::kAdjust;
    case Role::kReader: return kind == EventKind::kBalance;
    case Role::kReplica: return false;
  }
  return false;
}

// ---- Header and frames --------------------------------------------------------------------------

uint64_t body_hash(std::span<const uint8_t> body) { return XXH3_64bits(body.data(), body.size()); }

void encode_header(uint8_t* out, const FrameHeader& h) {
  put<uint32_t>(out, kMagic);
  out[4] = h.version;
  out[5] = static_cast<uint8_t>(h.type);
  put<uint16_t>(out + 6, h.flags);
  put<uint64_t>(out + 8, h.request_id);
  put<uint32_t>(out + 16, h.body_bytes);
  put<uint32_t>(out + 20, h.record_count);
  put<uint64_t>(out + 24, h.body_hash);
  put<uint64_t>(out + 32, 0);
  put<uint64_t>(out + 40, XXH3_64bits(out, kHeaderHashedBytes));
}

ErrorCode decode_header(const uint8_t* in, FrameHeader* h) {
  if (get<uint32_t>(in) != kMagic) return ErrorCode::kBadMagic;
  // The checksum before the version: a corrupted version byte is a bad checksum, not a peer of
  // another version.
  if (get<uint64_t>(in + 40) != XXH3_64bits(in, kHeaderHashedBytes)) return ErrorCode::kBadHeaderChecksum;
  if (in[4] != kProtocolVersion) return ErrorCode::kUnsupportedVersion;
  if (get<uint16_t>(in + 6) != 0 || get<uint64_t>(in + 32) != 0) return ErrorCode::kBadFlags;
  h->version = in[4];
  h->type = static_cast<MsgType>(in[5]);
  h->flags = 0;
  h->request_id = get<uint64_t>(in + 8);
  h->body_bytes = get<uint32_t>(in + 16);
  h->record_count = get<uint32_t>(in + 20);
  h->body_hash = get<uint64_t>(in + 24);
  return ErrorCode::kNone;
}

void append_frame(std::vector<uint8_t>& out, MsgType type, uint64_t request_id,
                  std::span<const uint8_t> body, uint32_t record_count) {
  FrameHeader h;
  h.type = type;
  h.request_id = request_id;
  h.body_bytes = static_cast<uint32_t>(body.size());
  h.record_count = record_count;
  h.body_hash = body_hash(body);
  size_t at = out.size();
  out.resize(at + kHeaderBytes);
  encode_header(out.data() + at, h);
  out.insert(out.end(), body.begin(), body.end());
}

// ---- Frame shapes -------------------------------------------------------------------------------

namespace {

// Record size and count rules shared by both directions: kNone when the shape fits.
ErrorCode check_records(const FrameHeader& h, size_t record_bytes, uint32_t count_min, uint32_t count_max) {
  if (h.record_count < count_min) return ErrorCode::kBadRecordCount;
  if (h.record_count > count_max) return ErrorCode::kTooManyRecords;
  if (uint64_t{h.record_count} * record_bytes != h.body_bytes) return ErrorCode::kBadRecordCount;
  return ErrorCode::kNone;
}
ErrorCode check_text(const FrameHeader& h, uint32_t bytes_max) {
  if (h.record_count != 0) return ErrorCode::kBadRecordCount;
  if (h.body_bytes > bytes_max) return ErrorCode::kFrameTooLarge;
  return ErrorCode::kNone;
}

}  // namespace

ErrorCode check_client_frame(const FrameHeader& h, const FrameLimits& limits) {
  if (h.body_bytes > std::min(limits.body_bytes_max, kBodyBytesLimit)) return ErrorCode::kFrameTooLarge;
  switch (h.type) {
    case MsgType::kAuthStart:
    case MsgType::kAuthFinish: return check_text(h, kAuthBodyBytesMax);
    case MsgType::kEvents: return check_records(h, kEventRecordBytes, 1, limits.events_per_frame_max);
    case MsgType::kHistory:
    case MsgType::kLookup:
    case MsgType::kStatement: return check_records(h, kQueryRecordBytes, 1, 1);
    case MsgType::kStats: return check_records(h, 1, 0, 0);  // empty
    case MsgType::kInfo: return check_records(h, 1, 0, 0);   // empty
    case MsgType::kSubscribe: return check_records(h, kSubscribeRecordBytes, 1, 1);
    case MsgType::kAck: return check_records(h, kAckRecordBytes, 1, 1);
    case MsgType::kPing:
    case MsgType::kPong: return check_text(h, kPingBodyBytesMax);
    default: return ErrorCode::kUnknownType;
  }
}

ErrorCode check_server_frame(const FrameHeader& h, const FrameLimits&) {
  if (h.body_bytes > kBodyBytesLimit) return ErrorCode::kFrameTooLarge;
  switch (h.type) {
    case MsgType::kAuthChallenge: return check_text(h, kAuthBodyBytesMax);
    case MsgType::kAuthOk:
      if (h.body_bytes < kAuthOkInfoBytes) return ErrorCode::kBadRecordCount;
      return check_text(h, kAuthBodyBytesMax + kAuthOkInfoBytes);
    case MsgType::kResults: return check_records(h, kResultRecordBytes, 1, kBodyBytesLimit / kResultRecordBytes);
    case MsgType::kEntries: return check_records(h, kEntryRecordBytes, 0, kEntriesPerReplyMax);
    case MsgType::kStatsReply: return check_records(h, kStatsRecordBytes, 1, 1);
    case MsgType::kStatementReply:
      if (h.record_count > kLotsPerStatementMax) return ErrorCode::kTooManyRecords;
      if (h.body_bytes != kStatementRecordBytes + uint64_t{h.record_count} * kLotRecordBytes)
        return ErrorCode::kBadRecordCount;
      return ErrorCode::kNone;
    case MsgType::kSubscribed: return check_records(h, kSubscribedRecordBytes, 1, 1);
    case MsgType::kInfoReply: return check_text(h, kInfoBytesMax);
    case MsgType::kLogBatches:
      if (h.body_bytes < kLogBatchesPrefixBytes + 4ull * h.record_count) return ErrorCode::kBadRecordCount;
      return ErrorCode::kNone;
    case MsgType::kPing:
    case MsgType::kPong: return check_text(h, kPingBodyBytesMax);
    case MsgType::kError:
      if (h.body_bytes < kErrorFixedBytes) return ErrorCode::kBadRecordCount;
      return check_text(h, kErrorFixedBytes + kErrorMessageBytesMax);
    default: return ErrorCode::kUnknownType;
  }
}

// ---- Records ------------------------------------------------------------------------------------
// Event record (96 bytes): the offsets of docs/protocol.md, "Event record".

void encode_event(uint8_t* out, const Event& e) {
  put_ref(out, e.ref);
  put_ref(out + 16, e.target);
  put<uint64_t>(out + 32, e.account);
  put<uint64_t>(out + 40, e.counterparty);
  put<int64_t>(out + 48, e.amount);
  put<int64_t>(out + 56, e.business_time_ms);
  put<uint32_t>(out + 64, e.program);
  put<uint32_t>(out + 68, e.store);
  put<uint32_t>(out + 72, e.terminal);
  put<uint32_t>(out + 76, 0);  // key_id: the server's to set
  put<uint16_t>(out + 80, e.currency);
  put<uint16_t>(out + 82, e.code);
  out[84] = static_cast<uint8_t>(e.kind);
  out[85] = e.channel;
  std::memset(out + 86, 0, 10);
}

bool decode_event(const uint8_t* in, Event* e) {
  if (!all_zero(in + 76, 4) || !all_zero(in + 86, 10)) return false;
  *e = Event{};
  e->ref = get_ref(in);
  e->target = get_ref(in + 16);
  e->account = get<uint64_t>(in + 32);
  e->counterparty = get<uint64_t>(in + 40);
  e->amount = get<int64_t>(in + 48);
  e->business_time_ms = get<int64_t>(in + 56);
  e->program = get<uint32_t>(in + 64);
  e->store = get<uint32_t>(in + 68);
  e->terminal = get<uint32_t>(in + 72);
  e->currency = get<uint16_t>(in + 80);
  e->code = get<uint16_t>(in + 82);
  e->kind = static_cast<EventKind>(in[84]);
  e->channel = in[85];
  return true;
}

WireResult wire_result(const Effect& f) {
  WireResult r;
  r.result = f.result;
  r.flags = f.flags;
  r.tier = f.state.tier;
  r.shard = f.shard;
  r.seq = f.seq;
  r.points = f.points;
  r.available = f.state.available;
  r.held = f.state.held;
  r.lifetime_earned = f.state.lifetime_earned;
  r.lifetime_redeemed = f.state.lifetime_redeemed;
  r.qualifying = f.state.qualifying;
  r.time_ms = f.time_ms;
  return r;
}

WireResult wire_result(Result code) {
  WireResult r;
  r.result = code;
  r.flags = kEffectNoAccount;
  return r;
}

// Result record (72 bytes).
void encode_result(uint8_t* out, const WireResult& r) {
  out[0] = static_cast<uint8_t>(r.result);
  out[1] = r.flags;
  out[2] = r.tier;
  out[3] = 0;
  put<uint16_t>(out + 4, r.shard);
  put<uint16_t>(out + 6, 0);
  put<uint64_t>(out + 8, r.seq);
  put<int64_t>(out + 16, r.points);
  put<int64_t>(out + 24, r.available);
  put<int64_t>(out + 32, r.held);
  put<int64_t>(out + 40, r.lifetime_earned);
  put<int64_t>(out + 48, r.lifetime_redeemed);
  put<int64_t>(out + 56, r.qualifying);
  put<int64_t>(out + 64, r.time_ms);
}

bool decode_result(const uint8_t* in, WireResult* r) {
  if (in[0] >= kResultCount || in[3] != 0 || get<uint16_t>(in + 6) != 0) return false;
  r->result = static_cast<Result>(in[0]);
  r->flags = in[1];
  r->tier = in[2];
  r->shard = get<uint16_t>(in + 4);
  r->seq = get<uint64_t>(in + 8);
  r->points = get<int64_t>(in + 16);
  r->available = get<int64_t>(in + 24);
  r->held = get<int64_t>(in + 32);
  r->lifetime_earned = get<int64_t>(in + 40);
  r->lifetime_redeemed = get<int64_t>(in + 48);
  r->qualifying = get<int64_t>(in + 56);
  r->time_ms = get<int64_t>(in + 64);
  return true;
}

// History entry record (128 bytes).
void encode_entry(uint8_t* out, const HistoryEntry& e) {
  put<uint64_t>(out, e.at.lsn);
  put<uint32_t>(out + 8, e.at.index);
  put<uint32_t>(out + 12, e.program);
  put<uint64_t>(out + 16, e.account);
  out[24] = static_cast<uint8_t>(e.kind);
  out[25] = static_cast<uint8_t>(e.result);
  out[26] = e.flags;
  out[27] = e.tier;
  put<uint32_t>(out + 28, e.store);
  put_ref(out + 32, e.ref);
  put_ref(out + 48, e.target);
  put<int64_t>(out + 64, e.amount);
  put<int64_t>(out + 72, e.points);
  put<int64_t>(out + 80, e.time_ms);
  put<int64_t>(out + 88, e.available);
  put<int64_t>(out + 96, e.held);
  put<uint64_t>(out + 104, e.counterparty);
  std::memset(out + 112, 0, 16);
}

bool decode_entry(const uint8_t* in, HistoryEntry* e) {
  if (in[25] >= kResultCount || !all_zero(in + 112, 16)) return false;
  e->at.lsn = get<uint64_t>(in);
  e->at.index = get<uint32_t>(in + 8);
  e->program = get<uint32_t>(in + 12);
  e->account = get<uint64_t>(in + 16);
  e->kind = static_cast<EventKind>(in[24]);
  e->result = static_cast<Result>(in[25]);
  e->flags = in[26];
  e->tier = in[27];
  e->store = get<uint32_t>(in + 28);
  e->ref = get_ref(in + 32);
  e->target = get_ref(in + 48);
  e->amount = get<int64_t>(in + 64);
  e->points = get<int64_t>(in + 72);
  e->time_ms = get<int64_t>(in + 80);
  e->available = get<int64_t>(in + 88);
  e->held = get<int64_t>(in + 96);
  e->counterparty = get<uint64_t>(in + 104);
  return true;
}

// Stats record (160 bytes): docs/protocol.md, "Stats record". One list of the fields, in wire
// order, for both directions.
namespace {
struct StatsFields {
  std::array<int64_t*, 8> totals;   // offsets 0-63
  std::array<uint64_t*, 8> counts;  // 64-127
  std::array<uint64_t*, 6> small;   // 128-151, u32 on the wire
};
StatsFields stats_fields(StatsRecord& s) {
  ProgramStats& p = s.program;
  LogSummary& l = s.log;
  return {{&p.issued, &p.redeemed, &p.expired, &p.clawed_back, &p.adjusted, &p.transfer_out, &p.transfer_in,
           &p.transfer_bounced},
          {&p.members, &p.duplicates, &p.replays, &p.events, &l.durable_lsn, &l.commits, &l.records, &l.bytes},
          {&l.records_per_commit_p50, &l.records_per_commit_p99, &l.records_per_commit_max, &l.commit_us_p50,
           &l.commit_us_p99, &l.commit_us_max}};
}
}  // namespace

void encode_stats(uint8_t* out, const StatsRecord& s) {
  StatsRecord copy = s;
  StatsFields f = stats_fields(copy);
  for (size_t i = 0; i < f.totals.size(); ++i) put<int64_t>(out + 8 * i, *f.totals[i]);
  for (size_t i = 0; i < f.counts.size(); ++i) put<uint64_t>(out + 64 + 8 * i, *f.counts[i]);
  for (size_t i = 0; i < f.small.size(); ++i)
    put<uint32_t>(out + 128 + 4 * i, static_cast<uint32_t>(std::min<uint64_t>(*f.small[i], UINT32_MAX)));
  put<uint64_t>(out + 152, 0);
}

void decode_stats(const uint8_t* in, StatsRecord* s) {
  StatsFields f = stats_fields(*s);
  for (size_t i = 0; i < f.totals.size(); ++i) *f.totals[i] = get<int64_t>(in + 8 * i);
  for (size_t i = 0; i < f.counts.size(); ++i) *f.counts[i] = get<uint64_t>(in + 64 + 8 * i);
  for (size_t i = 0; i < f.small.size(); ++i) *f.small[i] = get<uint32_t>(in + 128 + 4 * i);
}

// Query records (32 bytes).
void encode_history_query(uint8_t* out, const Query& q) {
  put<uint32_t>(out, q.program);
  put<uint32_t>(out + 4, q.limit);
  put<uint64_t>(out + 8, q.account);
  put<uint64_t>(out + 16, q.before.lsn);
  put<uint32_t>(out + 24, q.before.index);
  put<uint32_t>(out + 28, 0);
}

bool decode_history_query(const uint8_t* in, Query* q) {
  if (get<uint32_t>(in + 28) != 0) return false;
  *q = Query{};
  q->program = get<uint32_t>(in);
  q->limit = get<uint32_t>(in + 4);
  q->account = get<uint64_t>(in + 8);
  q->before.lsn = get<uint64_t>(in + 16);
  q->before.index = get<uint32_t>(in + 24);
  return q->limit >= 1 && q->limit <= kEntriesPerReplyMax && q->account != 0;
}

void encode_statement_query(uint8_t* out, uint32_t program, uint64_t account) {
  std::memset(out, 0, kQueryRecordBytes);
  put<uint32_t>(out, program);
  put<uint64_t>(out + 8, account);
}

bool decode_statement_query(const uint8_t* in, uint32_t* program, uint64_t* account) {
  if (!all_zero(in + 4, 4) || !all_zero(in + 16, 16)) return false;
  *program = get<uint32_t>(in);
  *account = get<uint64_t>(in + 8);
  return *account != 0;
}

std::vector<uint8_t> encode_statement(const StatementReply& r, uint32_t* records) {
  const Statement& s = r.statement;
  const size_t n = std::min<size_t>(s.lots.size(), kLotsPerStatementMax);
  std::vector<uint8_t> b(kStatementRecordBytes + n * kLotRecordBytes, 0);
  uint8_t* o = b.data();
  o[0] = static_cast<uint8_t>(r.result);
  o[1] = s.state.tier;
  put<uint16_t>(o + 2, s.last_activity_day);
  put<uint16_t>(o + 4, s.inactivity_lapse_day);
  o[6] = static_cast<uint8_t>(((r.truncated || s.lots.size() > n) ? 1 : 0) |
                              ((s.state.flags & kAccountPaidMember) ? 2 : 0));
  put<int64_t>(o + 8, s.state.available);
  put<int64_t>(o + 16, s.state.held);
  put<int64_t>(o + 24, s.state.pending);
  put<int64_t>(o + 32, s.state.lifetime_earned);
  put<int64_t>(o + 40, s.state.lifetime_redeemed);
  put<int64_t>(o + 48, s.state.qualifying);
  put<int64_t>(o + 56, s.as_of_ms);
  put<uint16_t>(o + 64, s.state.member_until);
  put<uint16_t>(o + 66, s.tier_until_day);
  for (size_t c = 0; c < kStampCardsMax; ++c)
    o[68 + c] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp<int>(s.stamps[c], -128, 127)));
  for (size_t i = 0; i < n; ++i) {
    uint8_t* l = o + kStatementRecordBytes + i * kLotRecordBytes;
    put<uint16_t>(l, s.lots[i].expiry_day);
    put<uint16_t>(l + 2, s.lots[i].mature_day);
    put<int64_t>(l + 8, s.lots[i].points);
  }
  *records = static_cast<uint32_t>(n);
  return b;
}

bool decode_statement(std::span<const uint8_t> body, uint32_t records, StatementReply* r) {
  if (records > kLotsPerStatementMax || body.size() != kStatementRecordBytes + size_t{records} * kLotRecordBytes)
    return false;
  const uint8_t* in = body.data();
  if (in[0] >= kResultCount || in[6] > 3 || in[7] != 0) return false;
  *r = StatementReply{};
  r->result = static_cast<Result>(in[0]);
  Statement& s = r->statement;
  s.state.tier = in[1];
  s.last_activity_day = get<uint16_t>(in + 2);
  s.inactivity_lapse_day = get<uint16_t>(in + 4);
  r->truncated = (in[6] & 1) != 0;
  if (in[6] & 2) s.state.flags |= kAccountPaidMember;
  s.state.member_until = get<uint16_t>(in + 64);
  s.tier_until_day = get<uint16_t>(in + 66);
  for (size_t c = 0; c < kStampCardsMax; ++c) s.stamps[c] = static_cast<int8_t>(in[68 + c]);
  s.state.available = get<int64_t>(in + 8);
  s.state.held = get<int64_t>(in + 16);
  s.state.pending = get<int64_t>(in + 24);
  s.state.lifetime_earned = get<int64_t>(in + 32);
  s.state.lifetime_redeemed = get<int64_t>(in + 40);
  s.state.qualifying = get<int64_t>(in + 48);
  s.as_of_ms = get<int64_t>(in + 56);
  for (uint32_t i = 0; i < records; ++i) {
    const uint8_t* l = in + kStatementRecordBytes + size_t{i} * kLotRecordBytes;
    if (!all_zero(l + 4, 4)) return false;
    s.lots.push_back({get<uint16_t>(l), get<uint16_t>(l + 2), get<int64_t>(l + 8)});
  }
  return true;
}

void encode_lookup_query(uint8_t* out, const Query& q) {
  put<uint32_t>(out, q.program);
  std::memset(out + 4, 0, 12);
  put_ref(out + 16, q.ref);
}

bool decode_lookup_query(const uint8_t* in, Query* q) {
  if (!all_zero(in + 4, 12)) return false;
  *q = Query{};
  q->program = get<uint32_t>(in);
  q->ref = get_ref(in + 16);
  return !q->ref.empty();
}

void encode_session_info(uint8_t* out, const SessionInfo& s) {
  put<uint32_t>(out, s.key_id);
  put<uint32_t>(out + 4, s.program);
  out[8] = static_cast<uint8_t>(s.role);
  out[9] = static_cast<uint8_t>(s.unit);
  put<uint16_t>(out + 10, s.currency);
  put<uint32_t>(out + 12, s.events_per_frame_max);
}

bool decode_session_info(const uint8_t* in, SessionInfo* s) {
  if (in[8] < 1 || in[8] > 4 || in[9] > static_cast<uint8_t>(Unit::kCashback)) return false;
  s->key_id = get<uint32_t>(in);
  s->program = get<uint32_t>(in + 4);
  s->role = static_cast<Role>(in[8]);
  s->events_per_frame_max = get<uint32_t>(in + 12);
  s->unit = static_cast<Unit>(in[9]);
  s->currency = get<uint16_t>(in + 10);
  return true;
}

// ---- The change stream ------------------------------------------------------------------------

bool valid_consumer_name(std::string_view name) {
  if (name.empty() || name.size() > kConsumerNameBytesMax) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Subscribe record (96 bytes): from_lsn u64 @0, flags u32 @8, frame_bytes u32 @12, name length u8
// @16, reserved @17..23, name @24..87 (zero-padded), reserved @88..95.
void encode_subscribe(uint8_t* out, const SubscribeRequest& r) {
  std::memset(out, 0, kSubscribeRecordBytes);
  put<uint64_t>(out, r.from_lsn);
  put<uint32_t>(out + 8, r.flags);
  put<uint32_t>(out + 12, r.frame_bytes);
  size_t n = std::min(r.name.size(), kConsumerNameBytesMax);
  out[16] = static_cast<uint8_t>(n);
  std::memcpy(out + 24, r.name.data(), n);
}

bool decode_subscribe(const uint8_t* in, SubscribeRequest* r) {
  uint8_t n = in[16];
  if (n > kConsumerNameBytesMax || !all_zero(in + 17, 7) || !all_zero(in + 24 + n, kConsumerNameBytesMax - n) ||
      !all_zero(in + 88, 8))
    return false;
  r->from_lsn = get<uint64_t>(in);
  r->flags = get<uint32_t>(in + 8);
  if ((r->flags & ~(kSubscribeResume | kSubscribeSync)) != 0) return false;
  r->frame_bytes = get<uint32_t>(in + 12);
  r->name.assign(reinterpret_cast<const char*>(in + 24), n);
  return true;
}

std::string_view to_string(SubscribeStatus s) {
  switch (s) {
    case SubscribeStatus::kOk: return "ok";
    case SubscribeStatus::kTrimmed: return "trimmed";
    case SubscribeStatus::kAhead: return "ahead";
    case SubscribeStatus::kNameInUse: return "name_in_use";
    case SubscribeStatus::kForbidden: return "forbidden";
    case SubscribeStatus::kBadName: return "bad_name";
  }
  return "unknown";
}

// Subscribed record (48 bytes): status u8 @0, filtered u8 @1, reserved @2..7, start_lsn @8,
// oldest_lsn @16, durable_lsn @24, cursor @32, epoch @40.
void encode_subscribed(uint8_t* out, const SubscribeReply& r) {
  std::memset(out, 0, kSubscribedRecordBytes);
  out[0] = static_cast<uint8_t>(r.status);
  out[1] = r.filtered ? 1 : 0;
  put<uint64_t>(out + 8, r.start_lsn);
  put<uint64_t>(out + 16, r.oldest_lsn);
  put<uint64_t>(out + 24, r.durable_lsn);
  put<uint64_t>(out + 32, r.cursor);
  put<uint64_t>(out + 40, r.epoch);
}

bool decode_subscribed(const uint8_t* in, SubscribeReply* r) {
  if (in[0] > static_cast<uint8_t>(SubscribeStatus::kBadName) || in[1] > 1 || !all_zero(in + 2, 6)) return false;
  r->status = static_cast<SubscribeStatus>(in[0]);
  r->filtered = in[1] != 0;
  r->start_lsn = get<uint64_t>(in + 8);
  r->oldest_lsn = get<uint64_t>(in + 16);
  r->durable_lsn = get<uint64_t>(in + 24);
  r->cursor = get<uint64_t>(in + 32);
  r->epoch = get<uint64_t>(in + 40);
  return true;
}

void encode_stream_prefix(uint8_t* out, const StreamPrefix& p) {
  put<uint64_t>(out, p.durable_lsn);
  put<int64_t>(out + 8, p.server_time_ms);
}

void decode_stream_prefix(const uint8_t* in, StreamPrefix* p) {
  p->durable_lsn = get<uint64_t>(in);
  p->server_time_ms = get<int64_t>(in + 8);
}

bool split_log_batches(std::span<const uint8_t> body, uint32_t count, StreamPrefix* prefix,
                       std::vector<std::span<const uint8_t>>* batches) {
  batches->clear();
  if (body.size() < kLogBatchesPrefixBytes) return false;
  decode_stream_prefix(body.data(), prefix);
  size_t at = kLogBatchesPrefixBytes;
  while (at < body.size()) {
    if (body.size() - at < 4) return false;
    uint32_t n = get<uint32_t>(body.data() + at);
    at += 4;
    if (body.size() - at < n) return false;
    batches->push_back(body.subspan(at, n));
    at += n;
  }
  return batches->size() == count;
}

void encode_ack(uint8_t* out, uint64_t lsn) {
  put<uint64_t>(out, lsn);
  put<uint64_t>(out + 8, 0);
}

bool decode_ack(const uint8_t* in, uint64_t* lsn) {
  if (!all_zero(in + 8, 8)) return false;
  *lsn = get<uint64_t>(in);
  return true;
}

std::vector<uint8_t> error_body(ErrorCode code, std::string_view message) {
  message = message.substr(0, kErrorMessageBytesMax);
  std::vector<uint8_t> b(kErrorFixedBytes + message.size());
  put<uint16_t>(b.data(), static_cast<uint16_t>(code));
  put<uint16_t>(b.data() + 2, 0);
  put<uint32_t>(b.data() + 4, static_cast<uint32_t>(message.size()));
  std::memcpy(b.data() + kErrorFixedBytes, message.data(), message.size());
  return b;
}

bool decode_error(std::span<const uint8_t> body, ErrorCode* code, std::string* message) {
  if (body.size() < kErrorFixedBytes) return false;
  uint32_t n = get<uint32_t>(body.data() + 4);
  if (n != body.size() - kErrorFixedBytes || n > kErrorMessageBytesMax) return false;
  *code = static_cast<ErrorCode>(get<uint16_t>(body.data()));
  message->assign(reinterpret_cast<const char*>(body.data() + kErrorFixedBytes), n);
  return true;
}

// ---- FrameReader --------------------------------------------------------------------------------

bool FrameReader::frame_ready() const {
  if (error_ != ErrorCode::kNone) return true;
  size_t avail = buf_.size() - consumed_;
  if (avail < kHeaderBytes) return false;
  uint32_t body = get<uint32_t>(buf_.data() + consumed_ + 16);
  return avail >= kHeaderBytes + size_t{body} || body > limits_.body_bytes_max;
}

void FrameReader::feed(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  size_t at = buf_.size();
  buf_.resize(at + bytes.size());
  std::memcpy(buf_.data() + at, bytes.data(), bytes.size());
}

FrameReader::Status FrameReader::next(FrameHeader* h, std::span<const uint8_t>* body) {
  if (error_ != ErrorCode::kNone) return Status::kError;
  // Drop what was returned before; compact only when it is most of the buffer, so a stream of
  // small frames does not move bytes on every call.
  if (consumed_ > 0 && (consumed_ == buf_.size() || consumed_ >= (64u << 10))) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(consumed_));
    consumed_ = 0;
  }
  size_t avail = buf_.size() - consumed_;
  if (avail < kHeaderBytes) return Status::kNeedMore;
  const uint8_t* p = buf_.data() + consumed_;
  FrameHeader hdr;
  ErrorCode c = decode_header(p, &hdr);
  if (c == ErrorCode::kNone) c = check_(hdr, limits_);
  if (c != ErrorCode::kNone) {
    error_ = c;
    // The request id is only trusted from a header whose checksum held.
    if (c != ErrorCode::kBadMagic && c != ErrorCode::kBadHeaderChecksum) error_request_id_ = get<uint64_t>(p + 8);
    return Status::kError;
  }
  if (avail < kHeaderBytes + hdr.body_bytes) return Status::kNeedMore;
  std::span<const uint8_t> b(p + kHeaderBytes, hdr.body_bytes);
  if (body_hash(b) != hdr.body_hash) {
    error_ = ErrorCode::kBadBodyChecksum;
    error_request_id_ = hdr.request_id;
    return Status::kError;
  }
  consumed_ += kHeaderBytes + hdr.body_bytes;
  *h = hdr;
  *body = b;
  return Status::kFrame;
}

}  // namespace tally::net
