// The change stream end to end over 127.0.0.1, on both back ends (docs/protocol.md, "Subscribe"):
// catch-up from LMDB then the live tail, byte for byte the batches the log holds, in order, once;
// a program-limited key sees its program only and can still follow the chain; a trimmed position
// is refused naming the oldest LSN; named cursors are durable, resume, hold trimming back and are
// held by one connection at a time; a subscriber that reads nothing costs the server a bounded
// window; roles and message order are enforced.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "engine/program.h"
#include "net/backend.h"
#include "net/client.h"
#include "storage/log_codec.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/log_stream.h"

using namespace tally;
using namespace tally::net;
using namespace tally::testing::two_programs;

namespace {



class StreamTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kUring) {
      std::string why;
      if (!uring_available(&why)) GTEST_SKIP() << "io_uring back end cannot run here: " << why;
    }
  }
  std::unique_ptr<tally::testing::ServerStack> start(bool history_index = true) {
    tally::testing::StackOptions o;
    o.backend = GetParam();
    o.keys = keys();
    o.programs = programs();
    // The index holds trimming back to what it covers; these tests trim by checkpoint and cursor.
    o.configure = [history_index](storage::LedgerOptions& lo) { lo.history.enabled = history_index; };
    return std::make_unique<tally::testing::ServerStack>(dir_.sub("data"), std::move(o));
  }
  // `frames` frames of `per` earns (after enrolling the accounts), for program `program`.
  static void load(tally::testing::ServerStack& s, uint32_t key, uint32_t program, int frames, int per,
                   const std::string& tag) {
    Client c(s.client(key));
    std::vector<Event> events;
    std::vector<WireResult> results;
    for (int a = 1; a <= per; ++a)
      events.push_back(tally::testing::event(EventKind::kEnroll, a, 0, tag + "-enroll-" + std::to_string(a), program));
    ASSERT_FALSE(c.submit(events, &results).kind != ClientError::Kind::kNone);
    for (int f = 0; f < frames; ++f) {
      events.clear();
      for (int a = 1; a <= per; ++a)
        events.push_back(tally::testing::event(EventKind::kEarn, a, 100 + f,
                                               tag + "-" + std::to_string(f) + "-" + std::to_string(a), program));
      ClientError e = c.submit(events, &results);
      ASSERT_FALSE(e) << e.message;
    }
  }
  LogStreamOptions stream_options(const tally::testing::ServerStack& s, uint32_t key, uint64_t from,
                                  const std::string& name = {}, uint32_t flags = 0) {
    LogStreamOptions o;
    o.client = s.client(key);
    o.request.from_lsn = from;
    o.request.name = name;
    o.request.flags = flags;
    return o;
  }
  // Reads batches until the stream's next LSN passes `through`; fails the test on an error or
  // when nothing arrives for 20 s.
  static std::vector<StreamBatch> read_through(LogStream& st, uint64_t through) {
    std::vector<StreamBatch> got;
    while (st.next_lsn() <= through) {
      StreamBatch b;
      bool have = false;
      ClientError e = st.next(&b, 20'000, &have);
      if (e || !have) {
        ADD_FAILURE() << "stream stopped at LSN " << st.next_lsn() << ": " << e.message;
        break;
      }
      got.push_back(std::move(b));
    }
    return got;
  }
  tally::testing::TempDir dir_{"tally-stream-test"};
};

std::string backend_name(const ::testing::TestParamInfo<BackendKind>& info) {
  return info.param == BackendKind::kAsio ? "Asio" : "IoUring";
}

}  // namespace

TEST_P(StreamTest, CatchUpThenLiveTailIsTheLogByteForByteInOrderOnce) {
  auto s = start();
  load(*s, kPosKey, kProgram, 20, 200, "before");
  uint64_t before = s->service->log_range().durable_lsn;
  ASSERT_GT(before, 20u);

  LogStream st;
  ClientError e = st.open(stream_options(*s, kReplicaKey, 0));
  ASSERT_FALSE(e) << e.message;
  EXPECT_EQ(st.reply().start_lsn, 1u);
  EXPECT_FALSE(st.reply().filtered);
  std::vector<StreamBatch> got = read_through(st, before);

  // Live: written after the subscriber caught up.
  load(*s, kOtherPosKey, kOtherProgram, 10, 100, "after");
  uint64_t after = s->service->log_range().durable_lsn;
  ASSERT_GT(after, before);
  for (StreamBatch& b : read_through(st, after)) got.push_back(std::move(b));

  ASSERT_EQ(got.size(), after);
  for (uint64_t lsn = 1; lsn <= after; ++lsn) {
    const StreamBatch& b = got[lsn - 1];
    EXPECT_EQ(b.header.lsn, lsn);
    EXPECT_EQ(b.bytes, s->service->ledger().store().batch(lsn)) << "LSN " << lsn << " differs from the log";
  }
}

TEST_P(StreamTest, AProgramKeySeesOnlyItsProgramAndStillFollowsTheChain) {
  auto s = start();
  load(*s, kPosKey, kProgram, 5, 100, "mine");
  load(*s, kOtherPosKey, kOtherProgram, 5, 100, "theirs");
  load(*s, kPosKey, kProgram, 5, 100, "mine-again");
  uint64_t end = s->service->log_range().durable_lsn;
  std::map<uint32_t, uint64_t> in_log;
  s->service->ledger().store().scan(1, [&](uint64_t, std::span<const uint8_t> bytes) {
    std::vector<Effect> fx;
    storage::BatchHeader h;
    EXPECT_EQ(storage::decode_batch(bytes, &h, &fx), storage::DecodeError::kOk);
    for (const Effect& f : fx) ++in_log[f.event.program];
    return true;
  });
  ASSERT_GT(in_log[kOtherProgram], 0u);

  LogStream st;
  ClientError e = st.open(stream_options(*s, kReaderKey, 1));
  ASSERT_FALSE(e) << e.message;
  EXPECT_TRUE(st.reply().filtered);
  uint64_t records = 0, empty_batches = 0;
  for (const StreamBatch& b : read_through(st, end)) {
    EXPECT_TRUE(b.filtered());
    empty_batches += b.records.empty();
    for (const Effect& f : b.records) {
      EXPECT_EQ(f.event.program, kProgram);
      ++records;
    }
  }
  EXPECT_EQ(records, in_log[kProgram]);
  EXPECT_GT(empty_batches, 0u) << "the other program's batches arrive empty, so the chain has no gap";
}

TEST_P(StreamTest, ATrimmedPositionIsRefusedNamingTheOldestAndTheRestIsServed) {
  auto s = start(/*history_index=*/false);
  load(*s, kPosKey, kProgram, 20, 200, "x");
  s->service->ledger().committer().request_checkpoint();
  ASSERT_TRUE(s->service->ledger().committer().wait_checkpoint(1));
  load(*s, kPosKey, kProgram, 5, 200, "y");  // batches after the trim point
  uint64_t oldest = s->service->log_range().oldest_lsn;
  ASSERT_GT(oldest, 1u) << "nothing was trimmed";
  EXPECT_EQ(oldest, s->service->ledger().store().first_lsn());

  LogStream st;
  ClientError e = st.open(stream_options(*s, kReplicaKey, 1));
  ASSERT_TRUE(e);
  EXPECT_EQ(st.reply().status, SubscribeStatus::kTrimmed);
  EXPECT_EQ(st.reply().oldest_lsn, oldest);
  EXPECT_NE(e.message.find("the oldest the log holds is " + std::to_string(oldest)), std::string::npos) << e.message;

  // From the oldest on, every batch there is.
  ClientError e2 = st.open(stream_options(*s, kReplicaKey, oldest));
  ASSERT_FALSE(e2) << e2.message;
  uint64_t end = s->service->log_range().durable_lsn;
  EXPECT_EQ(read_through(st, end).size(), end - oldest + 1);
}

TEST_P(StreamTest, ANamedCursorIsDurableResumesAndHoldsTrimmingBack) {
  uint64_t acked = 0;
  {
    auto s = start(/*history_index=*/false);
    load(*s, kPosKey, kProgram, 20, 200, "x");
    LogStream st;
    ClientError e = st.open(stream_options(*s, kReplicaKey, 1, "warehouse"));
    ASSERT_FALSE(e) << e.message;
    std::vector<StreamBatch> got = read_through(st, 10);
    acked = got.back().header.lsn;
    ASSERT_FALSE(st.ack(acked));

    // One connection per name.
    LogStream twin;
    ClientError t = twin.open(stream_options(*s, kReplicaKey, 1, "warehouse"));
    ASSERT_TRUE(t);
    EXPECT_EQ(twin.reply().status, SubscribeStatus::kNameInUse);

    // The ack is written with the next commit; a load makes one.
    load(*s, kPosKey, kProgram, 1, 10, "y");
    s->service->ledger().committer().request_checkpoint();
    ASSERT_TRUE(s->service->ledger().committer().wait_checkpoint(1));
    EXPECT_EQ(s->service->cursor("warehouse"), acked);
    EXPECT_LE(s->service->ledger().committer().checkpoint_stats().trim_lsn, acked)
        << "trimming went past the consumer's cursor";
  }
  // After a restart the cursor is there, and a resume starts right after it.
  auto s = start(/*history_index=*/false);
  EXPECT_EQ(s->service->cursor("warehouse"), acked);
  LogStream st;
  ClientError e = st.open(stream_options(*s, kReplicaKey, 1, "warehouse", kSubscribeResume));
  ASSERT_FALSE(e) << e.message;
  EXPECT_EQ(st.reply().cursor, acked);
  EXPECT_EQ(st.reply().start_lsn, acked + 1);
  std::vector<StreamBatch> got = read_through(st, acked + 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].header.lsn, acked + 1);
}

TEST_P(StreamTest, ASubscriberThatReadsNothingCostsABoundedWindow) {
  auto s = start();
  ClientError e;
  std::optional<Connection> idle = Connection::open(s->client(kReplicaKey), &e);
  ASSERT_TRUE(idle) << e.message;
  int small = 64 << 10;  // no autotuning of the receive buffer: the kernel holds little of the stream
  ASSERT_EQ(setsockopt(idle->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  SubscribeRequest r;
  r.from_lsn = 1;
  r.frame_bytes = 16 << 10;
  uint64_t id = 0;
  ASSERT_FALSE(idle->send_subscribe(r, &id));
  load(*s, kPosKey, kProgram, 400, 500, "x");  // about 10 MB of log
  // More than the kernel's buffers can hold (the server's send buffer grows to 4 MiB at most).
  ASSERT_GT(s->service->ledger().store().stats().log_bytes, 8u << 20);
  // The window: four frames queued or being written, plus one more frame.
  EXPECT_LE(s->server->memory_used(), 4 * (16 << 10) + (64 << 10)) << "the server buffered the stream";

  // And it is all there once the subscriber reads.
  Reply rep;
  ASSERT_FALSE(idle->receive(&rep, 20'000));
  ASSERT_EQ(rep.type, MsgType::kSubscribed);
  uint64_t batches = 0;
  uint64_t end = s->service->log_range().durable_lsn;
  while (batches < end) {
    ClientError re = idle->receive(&rep, 20'000);
    ASSERT_FALSE(re) << re.message;
    if (rep.type == MsgType::kLogBatches) batches += rep.batch_count;
  }
  EXPECT_EQ(batches, end);
}

TEST_P(StreamTest, ASubscriberThatVanishesMidStreamReleasesItsName) {
  auto s = start();
  load(*s, kPosKey, kProgram, 200, 500, "x");  // several MB: the server is still writing at the reset
  for (int round = 0; round < 3; ++round) {
    // The previous round's last holder of the name closed normally; the server may not have seen
    // that yet: name_in_use until it has (a condition, with a deadline).
    std::optional<Connection> c;
    Reply rep;
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);;) {
      ClientError e;
      c = Connection::open(s->client(kReplicaKey), &e);
      ASSERT_TRUE(c) << e.message;
      int small = 64 << 10;
      ASSERT_EQ(setsockopt(c->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
      SubscribeRequest r;
      r.name = "vanishing";
      uint64_t id = 0;
      ASSERT_FALSE(c->send_subscribe(r, &id));
      ASSERT_FALSE(c->receive(&rep, 20'000));
      ASSERT_EQ(rep.type, MsgType::kSubscribed);
      if (rep.subscribed.status == SubscribeStatus::kOk) break;
      ASSERT_EQ(rep.subscribed.status, SubscribeStatus::kNameInUse);
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the name was never released";
      c.reset();
      std::this_thread::yield();
    }
    ASSERT_FALSE(c->receive(&rep, 20'000));  // the stream flows
    // As a killed process leaves it: unread data, so the kernel resets the connection.
    linger lg{1, 0};
    ASSERT_EQ(setsockopt(c->fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    c->close();
    // The name is free again once the server has seen the reset (a condition, with a deadline).
    LogStream again;
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);;) {
      ClientError ae = again.open(stream_options(*s, kReplicaKey, 1, "vanishing"));
      if (!ae) break;
      ASSERT_EQ(again.reply().status, SubscribeStatus::kNameInUse) << ae.message;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the server never noticed the subscriber was gone";
      std::this_thread::yield();
    }
    again.close();
  }
}

TEST_P(StreamTest, RolesAndMessageOrderAreEnforced) {
  auto s = start();
  load(*s, kPosKey, kProgram, 1, 10, "x");
  LogStream pos;
  ClientError e = pos.open(stream_options(*s, kPosKey, 1));
  ASSERT_TRUE(e);
  EXPECT_EQ(pos.reply().status, SubscribeStatus::kForbidden);

  LogStream ahead;
  e = ahead.open(stream_options(*s, kReplicaKey, s->service->log_range().durable_lsn + 2));
  ASSERT_TRUE(e);
  EXPECT_EQ(ahead.reply().status, SubscribeStatus::kAhead);

  // A replica key sends no events; a subscribed connection takes only acks and pings.
  Client replica(s->client(kReplicaKey));
  WireResult w = tally::testing::submit_one(replica, tally::testing::event(EventKind::kEarn, 1, 5, "r-1"));
  EXPECT_EQ(w.result, Result::kForbidden);

  std::optional<Connection> c = Connection::open(s->client(kReplicaKey), &e);
  ASSERT_TRUE(c) << e.message;
  uint64_t id = 0;
  ASSERT_FALSE(c->send_ack(1));
  Reply rep;
  e = c->receive(&rep, 20'000);
  EXPECT_EQ(e.server_code, ErrorCode::kUnexpectedMessage) << e.message;

  c = Connection::open(s->client(kReplicaKey), &e);
  ASSERT_TRUE(c) << e.message;
  SubscribeRequest r;
  ASSERT_FALSE(c->send_subscribe(r, &id));
  Event ev = tally::testing::event(EventKind::kBalance, 1, 0, "");
  ASSERT_FALSE(c->send_events(std::span(&ev, 1), &id));
  do {
    e = c->receive(&rep, 20'000);
  } while (!e);
  EXPECT_EQ(e.server_code, ErrorCode::kUnexpectedMessage) << e.message;
  // An unnamed subscription has no cursor to ack.
  c = Connection::open(s->client(kReplicaKey), &e);
  ASSERT_TRUE(c) << e.message;
  ASSERT_FALSE(c->send_subscribe(r, &id));
  ASSERT_FALSE(c->receive(&rep, 20'000));
  ASSERT_FALSE(c->send_ack(1));
  do {
    e = c->receive(&rep, 20'000);
  } while (!e);
  EXPECT_EQ(e.server_code, ErrorCode::kUnexpectedMessage) << e.message;
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamTest, ::testing::Values(BackendKind::kAsio, BackendKind::kUring),
                         backend_name);
