// The wire protocol against docs/protocol.md: byte layouts written out here by offset (not with
// the codec under test), every malformed-frame case, and round trips of random valid frames.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>
#include <vector>

#include "net/protocol.h"

using namespace tally;
using namespace tally::net;

namespace {

// The document's little-endian writer, independent of protocol.cpp's.
void le(std::vector<uint8_t>& b, size_t off, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

std::vector<uint8_t> doc_header(uint8_t type, uint64_t request_id, std::span<const uint8_t> body,
                                uint32_t count) {
  std::vector<uint8_t> h(48, 0);
  h[0] = 'T', h[1] = 'L', h[2] = 'Y', h[3] = 'P';
  h[4] = 1;
  h[5] = type;
  le(h, 8, request_id, 8);
  le(h, 16, body.size(), 4);
  le(h, 20, count, 4);
  le(h, 24, XXH3_64bits(body.data(), body.size()), 8);
  le(h, 40, XXH3_64bits(h.data(), 40), 8);
  return h;
}

Event sample_event() {
  Event e;
  e.ref = {0x0102030405060708, 0x1112131415161718};
  e.target = {0x2122232425262728, 0x3132333435363738};
  e.account = 0x4142434445464748;
  e.counterparty = 77;
  e.amount = -12345;
  e.business_time_ms = 1'700'000'000'123;
  e.program = 7;
  e.store = 8;
  e.terminal = 9;
  e.currency = 978;
  e.code = 3;
  e.kind = EventKind::kEarn;
  e.channel = 2;
  return e;
}

std::vector<uint8_t> frame(MsgType type, uint64_t id, std::span<const uint8_t> body, uint32_t count) {
  std::vector<uint8_t> out;
  append_frame(out, type, id, body, count);
  return out;
}

// Feeds `bytes` to a server-side reader; returns the first error (kNone if frames only).
ErrorCode server_reads(const std::vector<uint8_t>& bytes, FrameLimits limits = {}) {
  FrameReader r(check_client_frame, limits);
  r.feed(bytes);
  FrameHeader h;
  std::span<const uint8_t> body;
  for (;;) {
    auto s = r.next(&h, &body);
    if (s == FrameReader::Status::kError) return r.error();
    if (s == FrameReader::Status::kNeedMore) return ErrorCode::kNone;
  }
}

}  // namespace

TEST(ProtocolTest, HeaderBytesAreThoseOfTheDocument) {
  std::vector<uint8_t> body = {1, 2, 3};
  std::vector<uint8_t> f = frame(MsgType::kPing, 0xA1B2C3D4E5F60718, body, 0);
  std::vector<uint8_t> want = doc_header(0x20, 0xA1B2C3D4E5F60718, body, 0);
  want.insert(want.end(), body.begin(), body.end());
  EXPECT_EQ(f, want);
}

TEST(ProtocolTest, EventRecordBytesAreThoseOfTheDocument) {
  Event e = sample_event();
  e.key_id = 99;  // server-filled: never on the wire
  e.tag = 1234;   // likewise
  std::vector<uint8_t> want(96, 0);
  le(want, 0, e.ref.lo, 8), le(want, 8, e.ref.hi, 8);
  le(want, 16, e.target.lo, 8), le(want, 24, e.target.hi, 8);
  le(want, 32, e.account, 8), le(want, 40, e.counterparty, 8);
  le(want, 48, static_cast<uint64_t>(e.amount), 8), le(want, 56, static_cast<uint64_t>(e.business_time_ms), 8);
  le(want, 64, e.program, 4), le(want, 68, e.store, 4), le(want, 72, e.terminal, 4);
  le(want, 80, e.currency, 2), le(want, 82, e.code, 2);
  want[84] = 2, want[85] = 2;
  std::vector<uint8_t> got(96, 0xEE);
  encode_event(got.data(), e);
  EXPECT_EQ(got, want);

  Event back;
  ASSERT_TRUE(decode_event(got.data(), &back));
  Event expect = e;
  expect.key_id = 0;
  expect.tag = 0;
  EXPECT_EQ(std::memcmp(&back, &expect, sizeof(Event)), 0);
}

TEST(ProtocolTest, ResultRecordBytesAreThoseOfTheDocument) {
  WireResult r;
  r.result = Result::kDuplicateOrder;
  r.flags = kEffectReplay | kEffectCapped;
  r.tier = 2;
  r.shard = 3;
  r.seq = 0x0102030405060708;
  r.points = -5;
  r.available = 100, r.held = 20, r.lifetime_earned = 300, r.lifetime_redeemed = 40;
  r.qualifying = 250, r.time_ms = 1'700'000'000'000;
  std::vector<uint8_t> want(72, 0);
  want[0] = 26, want[1] = 5, want[2] = 2;
  le(want, 4, 3, 2), le(want, 8, r.seq, 8), le(want, 16, static_cast<uint64_t>(-5), 8);
  le(want, 24, 100, 8), le(want, 32, 20, 8), le(want, 40, 300, 8), le(want, 48, 40, 8);
  le(want, 56, 250, 8), le(want, 64, static_cast<uint64_t>(r.time_ms), 8);
  std::vector<uint8_t> got(72, 0xEE);
  encode_result(got.data(), r);
  EXPECT_EQ(got, want);
  WireResult back;
  ASSERT_TRUE(decode_result(got.data(), &back));
  EXPECT_EQ(back, r);
  got[0] = kResultCount;  // no such result
  EXPECT_FALSE(decode_result(got.data(), &back));
}

TEST(ProtocolTest, QueryAndEntryRecordsRoundTrip) {
  Query q;
  q.program = 4, q.limit = 50, q.account = 9, q.before = {123, 4};
  uint8_t b[32];
  encode_history_query(b, q);
  std::vector<uint8_t> want(32, 0);
  le(want, 0, 4, 4), le(want, 4, 50, 4), le(want, 8, 9, 8), le(want, 16, 123, 8), le(want, 24, 4, 4);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 32), want);
  Query back;
  ASSERT_TRUE(decode_history_query(b, &back));
  EXPECT_EQ(back.before, q.before);
  EXPECT_EQ(back.limit, 50u);
  b[4] = 0, b[5] = 0;  // limit 0
  EXPECT_FALSE(decode_history_query(b, &back));

  q.ref = {5, 6};
  encode_lookup_query(b, q);
  ASSERT_TRUE(decode_lookup_query(b, &back));
  EXPECT_EQ(back.ref, q.ref);
  b[8] = 1;  // reserved
  EXPECT_FALSE(decode_lookup_query(b, &back));

  HistoryEntry e;
  e.at = {77, 3}, e.program = 1, e.account = 42, e.kind = EventKind::kTransferIn;
  e.result = Result::kOk, e.flags = 2, e.tier = 1, e.store = 5, e.ref = {1, 2}, e.target = {3, 4};
  e.amount = 10, e.points = -10, e.time_ms = 99, e.available = 5, e.held = 6, e.counterparty = 43;
  uint8_t eb[128];
  encode_entry(eb, e);
  HistoryEntry eback;
  ASSERT_TRUE(decode_entry(eb, &eback));
  EXPECT_EQ(std::memcmp(&eback, &e, sizeof e), 0);
}

TEST(ProtocolTest, StatementRecordsAreLaidOutAsDocumented) {
  uint8_t q[32];
  encode_statement_query(q, 3, 42);
  std::vector<uint8_t> want_q(32, 0);
  le(want_q, 0, 3, 4), le(want_q, 8, 42, 8);
  EXPECT_EQ(std::vector<uint8_t>(q, q + 32), want_q);
  uint32_t program = 0;
  uint64_t account = 0;
  ASSERT_TRUE(decode_statement_query(q, &program, &account));
  EXPECT_EQ(program, 3u);
  EXPECT_EQ(account, 42u);
  q[20] = 1;
  EXPECT_FALSE(decode_statement_query(q, &program, &account)) << "reserved bytes must be zero";

  StatementReply r;
  r.statement.state.tier = 2, r.statement.state.available = 150, r.statement.state.held = 7;
  r.statement.state.pending = 100, r.statement.state.lifetime_earned = 300, r.statement.state.lifetime_redeemed = 43;
  r.statement.state.qualifying = 250, r.statement.as_of_ms = 1'767'225'600'123;
  r.statement.last_activity_day = 20454, r.statement.inactivity_lapse_day = 20819;
  r.statement.state.member_until = 20500, r.statement.state.flags = kAccountPaidMember;
  r.statement.tier_until_day = 20818;
  r.statement.stamps = {3, 0, -1, 200};  // the last is clamped to 127 on the wire
  r.statement.lots = {{20484, 20460, 100}, {kNeverDay, 0, 150}};
  uint32_t records = 0;
  std::vector<uint8_t> body = encode_statement(r, &records);
  EXPECT_EQ(records, 2u);
  std::vector<uint8_t> want(72 + 2 * 16, 0);
  le(want, 0, 0, 1), le(want, 1, 2, 1), le(want, 2, 20454, 2), le(want, 4, 20819, 2), le(want, 6, 2, 1);
  le(want, 8, 150, 8), le(want, 16, 7, 8), le(want, 24, 100, 8), le(want, 32, 300, 8), le(want, 40, 43, 8);
  le(want, 48, 250, 8), le(want, 56, 1'767'225'600'123, 8), le(want, 64, 20500, 2), le(want, 66, 20818, 2);
  le(want, 68, 3, 1), le(want, 70, 0xFF, 1), le(want, 71, 127, 1);
  le(want, 72, 20484, 2), le(want, 74, 20460, 2), le(want, 80, 100, 8);
  le(want, 88, 0xFFFF, 2), le(want, 96, 150, 8);
  EXPECT_EQ(body, want);
  StatementReply back;
  ASSERT_TRUE(decode_statement(body, records, &back));
  EXPECT_EQ(back.statement.state.pending, 100);
  EXPECT_EQ(back.statement.state.member_until, 20500);
  EXPECT_EQ(back.statement.tier_until_day, 20818);
  EXPECT_EQ(back.statement.stamps, (std::array<int16_t, kStampCardsMax>{3, 0, -1, 127}));
  EXPECT_TRUE(back.statement.state.flags & kAccountPaidMember);
  EXPECT_FALSE(back.truncated);
  ASSERT_EQ(back.statement.lots.size(), 2u);
  EXPECT_EQ(back.statement.lots[1].expiry_day, kNeverDay);
  EXPECT_FALSE(decode_statement(body, 1, &back)) << "the count must match the body";
  body[0] = kResultCount;
  EXPECT_FALSE(decode_statement(body, records, &back));
}

TEST(ProtocolTest, SessionInfoIsLaidOutAsDocumented) {
  SessionInfo info;
  info.key_id = 7, info.program = 3, info.role = Role::kPos, info.events_per_frame_max = 512;
  info.unit = Unit::kCashback, info.currency = 978;
  uint8_t b[kAuthOkInfoBytes] = {};
  encode_session_info(b, info);
  std::vector<uint8_t> want(16, 0);
  le(want, 0, 7, 4), le(want, 4, 3, 4), le(want, 8, 1, 1), le(want, 9, 1, 1), le(want, 10, 978, 2), le(want, 12, 512, 4);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 16), want);
  SessionInfo back;
  ASSERT_TRUE(decode_session_info(b, &back));
  EXPECT_EQ(back.unit, Unit::kCashback);
  EXPECT_EQ(back.currency, 978);
  EXPECT_EQ(back.events_per_frame_max, 512u);
  b[9] = 2;
  EXPECT_FALSE(decode_session_info(b, &back)) << "an unknown unit";
}

TEST(ProtocolTest, StatsRecordIsLaidOutAsDocumented) {
  StatsRecord st;
  st.program.issued = 1000, st.program.redeemed = 200, st.program.expired = 3, st.program.clawed_back = 4;
  st.program.adjusted = -5, st.program.transfer_out = 6, st.program.transfer_in = 7, st.program.transfer_bounced = 8;
  st.program.members = 9, st.program.duplicates = 10, st.program.replays = 11, st.program.events = 12;
  st.log.durable_lsn = 13, st.log.commits = 14, st.log.records = 15, st.log.bytes = 16;
  st.log.records_per_commit_p50 = 17, st.log.records_per_commit_p99 = 18, st.log.records_per_commit_max = 19;
  st.log.commit_us_p50 = 20, st.log.commit_us_p99 = 21, st.log.commit_us_max = uint64_t{1} << 40;  // saturates
  uint8_t b[160];
  encode_stats(b, st);
  std::vector<uint8_t> want(160, 0);
  le(want, 0, 1000, 8), le(want, 8, 200, 8), le(want, 16, 3, 8), le(want, 24, 4, 8);
  le(want, 32, static_cast<uint64_t>(-5), 8), le(want, 40, 6, 8), le(want, 48, 7, 8), le(want, 56, 8, 8);
  le(want, 64, 9, 8), le(want, 72, 10, 8), le(want, 80, 11, 8), le(want, 88, 12, 8);
  le(want, 96, 13, 8), le(want, 104, 14, 8), le(want, 112, 15, 8), le(want, 120, 16, 8);
  le(want, 128, 17, 4), le(want, 132, 18, 4), le(want, 136, 19, 4);
  le(want, 140, 20, 4), le(want, 144, 21, 4), le(want, 148, 0xFFFFFFFF, 4);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 160), want);
  StatsRecord back;
  decode_stats(b, &back);
  EXPECT_EQ(back.program.adjusted, -5);
  EXPECT_EQ(back.program.events, 12u);
  EXPECT_EQ(back.log.bytes, 16u);
  EXPECT_EQ(back.log.commit_us_max, 0xFFFFFFFFu);

  // A stats request has an empty body; a reply exactly one record.
  EXPECT_EQ(server_reads(frame(MsgType::kStats, 1, {}, 0)), ErrorCode::kNone);
  uint8_t one[1] = {0};
  EXPECT_EQ(server_reads(frame(MsgType::kStats, 1, one, 0)), ErrorCode::kBadRecordCount);
  EXPECT_EQ(server_reads(frame(MsgType::kStats, 1, {}, 1)), ErrorCode::kTooManyRecords);
}

TEST(ProtocolTest, ReferenceOfStringIsXxh3_128OfItsBytes) {
  // xxHash's published value for the empty input (XXH3_128bits, seed 0).
  Ref128 empty = reference_from_string("");
  EXPECT_EQ(empty.hi, 0x99AA06D3014798D8u);
  EXPECT_EQ(empty.lo, 0x6001C324468D497Fu);
  // The example of docs/protocol.md, so the document cannot drift from the code.
  Ref128 order = reference_from_string("order-1");
  EXPECT_EQ(order.lo, 0xAF63A0F835CA6746u);
  EXPECT_EQ(order.hi, 0x5A8A409613F90AD0u);
}

TEST(ProtocolTest, EveryMalformedHeaderIsNamed) {
  std::vector<uint8_t> ev(96, 0);
  Event e = sample_event();
  encode_event(ev.data(), e);
  std::vector<uint8_t> good = frame(MsgType::kEvents, 5, ev, 1);
  EXPECT_EQ(server_reads(good), ErrorCode::kNone);

  auto bad = good;
  bad[0] ^= 1;
  EXPECT_EQ(server_reads(bad), ErrorCode::kBadMagic);

  bad = good;
  bad[9] ^= 1;  // request id, under the header checksum
  EXPECT_EQ(server_reads(bad), ErrorCode::kBadHeaderChecksum);

  // A peer of another version with a correct checksum: unsupported, not corrupt.
  bad = good;
  bad[4] = 2;
  le(bad, 40, XXH3_64bits(bad.data(), 40), 8);
  EXPECT_EQ(server_reads(bad), ErrorCode::kUnsupportedVersion);

  bad = good;
  bad[6] = 1;
  le(bad, 40, XXH3_64bits(bad.data(), 40), 8);
  EXPECT_EQ(server_reads(bad), ErrorCode::kBadFlags);

  bad = good;
  bad[100] ^= 0x40;  // in the body
  EXPECT_EQ(server_reads(bad), ErrorCode::kBadBodyChecksum);

  std::vector<uint8_t> two(192, 0);
  encode_event(two.data(), e);
  encode_event(two.data() + 96, e);
  EXPECT_EQ(server_reads(frame(MsgType::kEvents, 1, two, 1)), ErrorCode::kBadRecordCount);
  EXPECT_EQ(server_reads(frame(MsgType::kEvents, 1, two, 2), {.body_bytes_max = 1 << 20, .events_per_frame_max = 1}),
            ErrorCode::kTooManyRecords);
  EXPECT_EQ(server_reads(frame(MsgType::kEvents, 1, {}, 0)), ErrorCode::kBadRecordCount);
  EXPECT_EQ(server_reads(frame(MsgType::kEvents, 1, two, 2), {.body_bytes_max = 100, .events_per_frame_max = 10}),
            ErrorCode::kFrameTooLarge);
  EXPECT_EQ(server_reads(frame(static_cast<MsgType>(0x55), 1, {}, 0)), ErrorCode::kUnknownType);
  EXPECT_EQ(server_reads(frame(MsgType::kResults, 1, {}, 0)), ErrorCode::kUnknownType);  // server-only type
}

TEST(ProtocolTest, OversizedFrameIsRefusedFromItsHeaderAlone) {
  // A header announcing 1 GiB: refused without any of the body having arrived.
  std::vector<uint8_t> h = doc_header(0x10, 1, {}, 0);
  le(h, 16, 1u << 30, 4);
  le(h, 20, (1u << 30) / 96, 4);
  le(h, 40, XXH3_64bits(h.data(), 40), 8);
  FrameReader r(check_client_frame, {});
  r.feed(h);
  FrameHeader fh;
  std::span<const uint8_t> body;
  ASSERT_EQ(r.next(&fh, &body), FrameReader::Status::kError);
  EXPECT_EQ(r.error(), ErrorCode::kFrameTooLarge);
  EXPECT_EQ(r.error_request_id(), 1u);
}

TEST(ProtocolTest, FramesSplitAtEveryByteAreReassembled) {
  std::vector<uint8_t> stream;
  std::vector<uint8_t> ev(96 * 3, 0);
  for (int i = 0; i < 3; ++i) {
    Event e = sample_event();
    e.account = static_cast<uint64_t>(i + 1);
    encode_event(ev.data() + 96 * i, e);
  }
  append_frame(stream, MsgType::kEvents, 1, ev, 3);
  append_frame(stream, MsgType::kPing, 2, std::vector<uint8_t>{9, 9}, 0);
  append_frame(stream, MsgType::kEvents, 3, std::span(ev).first(96), 1);
  for (size_t cut = 1; cut < stream.size(); ++cut) {
    FrameReader r(check_client_frame, {});
    std::vector<uint64_t> ids;
    FrameHeader h;
    std::span<const uint8_t> body;
    for (size_t at : {size_t{0}, cut}) {
      r.feed(std::span(stream).subspan(at, at == 0 ? cut : stream.size() - cut));
      while (r.next(&h, &body) == FrameReader::Status::kFrame) ids.push_back(h.request_id);
    }
    ASSERT_EQ(ids, (std::vector<uint64_t>{1, 2, 3})) << "cut at " << cut;
    EXPECT_FALSE(r.mid_frame());
  }
  FrameReader r(check_client_frame, {});
  r.feed(std::span(stream).first(60));
  FrameHeader h;
  std::span<const uint8_t> body;
  EXPECT_EQ(r.next(&h, &body), FrameReader::Status::kNeedMore);
  EXPECT_TRUE(r.mid_frame());  // the stream must not end here: `truncated`
}

TEST(ProtocolTest, ReservedBytesOfAnEventMustBeZero) {
  std::vector<uint8_t> b(96);
  encode_event(b.data(), sample_event());
  Event e;
  for (size_t off : {76, 79, 86, 95}) {
    auto bad = b;
    bad[off] = 1;
    EXPECT_FALSE(decode_event(bad.data(), &e)) << off;
  }
  EXPECT_TRUE(decode_event(b.data(), &e));
}

TEST(ProtocolTest, ErrorBodyRoundTripsAndIsBounded) {
  std::string long_text(5000, 'x');
  auto b = error_body(ErrorCode::kAuthFailed, long_text);
  ErrorCode c;
  std::string m;
  ASSERT_TRUE(decode_error(b, &c, &m));
  EXPECT_EQ(c, ErrorCode::kAuthFailed);
  EXPECT_EQ(m.size(), kErrorMessageBytesMax);
  b.pop_back();
  EXPECT_FALSE(decode_error(b, &c, &m));
}

TEST(ProtocolTest, RoleRules) {
  EXPECT_TRUE(role_allows(Role::kPos, EventKind::kEarn));
  EXPECT_FALSE(role_allows(Role::kPos, EventKind::kAdjust));
  EXPECT_TRUE(role_allows(Role::kOperator, EventKind::kAdjust));
  EXPECT_TRUE(role_allows(Role::kReader, EventKind::kBalance));
  EXPECT_FALSE(role_allows(Role::kReader, EventKind::kEarn));
  for (Role r : {Role::kPos, Role::kOperator, Role::kReader}) {
    EXPECT_FALSE(role_allows(r, EventKind::kTransferIn));
    EXPECT_FALSE(role_allows(r, EventKind::kTick));
    EXPECT_FALSE(role_allows(r, EventKind::kInvalid));
  }
}

// Property: for random valid frames, decode then encode gives the same bytes.
TEST(ProtocolTest, RandomValidFramesRoundTrip) {
  uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 500; ++round) {
    uint32_t n = 1 + static_cast<uint32_t>(rng() % 64);
    std::vector<uint8_t> body(96 * n);
    for (uint32_t i = 0; i < n; ++i) {
      Event e;
      e.ref = {rng(), rng()}, e.target = {rng(), rng()};
      e.account = rng(), e.counterparty = rng();
      e.amount = static_cast<int64_t>(rng()), e.business_time_ms = static_cast<int64_t>(rng());
      e.program = static_cast<uint32_t>(rng()), e.store = static_cast<uint32_t>(rng());
      e.terminal = static_cast<uint32_t>(rng()), e.currency = static_cast<uint16_t>(rng());
      e.code = static_cast<uint16_t>(rng()), e.kind = static_cast<EventKind>(rng());
      e.channel = static_cast<uint8_t>(rng());
      encode_event(body.data() + 96 * i, e);
    }
    std::vector<uint8_t> f = frame(MsgType::kEvents, rng(), body, n);
    FrameReader r(check_client_frame, {});
    r.feed(f);
    FrameHeader h;
    std::span<const uint8_t> got;
    ASSERT_EQ(r.next(&h, &got), FrameReader::Status::kFrame);
    std::vector<uint8_t> re(got.size());
    for (uint32_t i = 0; i < h.record_count; ++i) {
      Event e;
      ASSERT_TRUE(decode_event(got.data() + 96 * i, &e));
      encode_event(re.data() + 96 * i, e);
    }
    std::vector<uint8_t> again = frame(h.type, h.request_id, re, h.record_count);
    ASSERT_EQ(again, f);
  }
}

TEST(ProtocolTest, StreamRecordsAreLaidOutAsDocumentedAndRefuseJunk) {
  SubscribeRequest r{123456789, kSubscribeResume, 65536, "warehouse.eu-1"};
  uint8_t b[kSubscribeRecordBytes];
  encode_subscribe(b, r);
  std::vector<uint8_t> want(kSubscribeRecordBytes, 0);
  le(want, 0, 123456789, 8), le(want, 8, 1, 4), le(want, 12, 65536, 4), le(want, 16, 14, 1);
  std::memcpy(want.data() + 24, "warehouse.eu-1", 14);
  EXPECT_EQ(std::vector<uint8_t>(b, b + sizeof b), want);
  SubscribeRequest back;
  ASSERT_TRUE(decode_subscribe(b, &back));
  EXPECT_EQ(back.from_lsn, r.from_lsn);
  EXPECT_EQ(back.flags, r.flags);
  EXPECT_EQ(back.name, r.name);
  for (size_t at : {17u, 24u + 14u, 90u}) {  // reserved bytes, and the name's padding
    uint8_t junk[kSubscribeRecordBytes];
    std::memcpy(junk, b, sizeof junk);
    junk[at] = 1;
    EXPECT_FALSE(decode_subscribe(junk, &back)) << "byte " << at;
  }
  b[8] = 4;  // an unknown flag
  EXPECT_FALSE(decode_subscribe(b, &back));
  EXPECT_TRUE(valid_consumer_name("a-b_c.9"));
  EXPECT_FALSE(valid_consumer_name(""));
  EXPECT_FALSE(valid_consumer_name("has space"));
  EXPECT_FALSE(valid_consumer_name(std::string(65, 'a')));

  SubscribeReply rep{SubscribeStatus::kTrimmed, true, 5, 6, 7, 8, 9};
  uint8_t s[kSubscribedRecordBytes];
  encode_subscribed(s, rep);
  std::vector<uint8_t> want2(kSubscribedRecordBytes, 0);
  le(want2, 0, 1, 1), le(want2, 1, 1, 1), le(want2, 8, 5, 8), le(want2, 16, 6, 8), le(want2, 24, 7, 8);
  le(want2, 32, 8, 8), le(want2, 40, 9, 8);
  EXPECT_EQ(std::vector<uint8_t>(s, s + sizeof s), want2);
  SubscribeReply rb;
  ASSERT_TRUE(decode_subscribed(s, &rb));
  EXPECT_EQ(rb.status, SubscribeStatus::kTrimmed);
  EXPECT_EQ(rb.oldest_lsn, 6u);
  s[0] = 99;
  EXPECT_FALSE(decode_subscribed(s, &rb));

  // log_batches: prefix, then (length, bytes) pairs that must add up to the body.
  std::vector<uint8_t> body(kLogBatchesPrefixBytes);
  encode_stream_prefix(body.data(), StreamPrefix{77, 1234});
  for (std::string one : {"abc", "defgh"}) {
    uint32_t n = static_cast<uint32_t>(one.size());
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<uint8_t>(n >> (8 * i)));
    body.insert(body.end(), one.begin(), one.end());
  }
  StreamPrefix p;
  std::vector<std::span<const uint8_t>> parts;
  ASSERT_TRUE(split_log_batches(body, 2, &p, &parts));
  EXPECT_EQ(p.durable_lsn, 77u);
  EXPECT_EQ(p.server_time_ms, 1234);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(std::string(parts[1].begin(), parts[1].end()), "defgh");
  EXPECT_FALSE(split_log_batches(body, 3, &p, &parts));  // the count lies
  body.pop_back();
  EXPECT_FALSE(split_log_batches(body, 2, &p, &parts));  // a batch runs past the body

  uint8_t a[kAckRecordBytes];
  encode_ack(a, 42);
  uint64_t lsn = 0;
  ASSERT_TRUE(decode_ack(a, &lsn));
  EXPECT_EQ(lsn, 42u);
  a[12] = 1;
  EXPECT_FALSE(decode_ack(a, &lsn));
  EXPECT_EQ(server_reads(frame(MsgType::kSubscribe, 1, std::vector<uint8_t>(kSubscribeRecordBytes), 1)), ErrorCode::kNone);
  EXPECT_EQ(server_reads(frame(MsgType::kAck, 1, std::vector<uint8_t>(8), 1)), ErrorCode::kBadRecordCount);
}
