// tally-kafka-sink against librdkafka's built-in mock cluster (3 brokers on 127.0.0.1, in this
// process), fed by a Tally server on 127.0.0.1: every committed record once, keyed by account, in
// its program's topic, one member's records in one partition and in log order; a sink killed
// between Kafka's delivery and its cursor on the server, and one SIGKILLed while brokers refuse
// produce requests, then restarted, still leave every record exactly once.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <sys/wait.h>
#include <xxhash.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/program.h"
#include "storage/log_codec.h"
#include "tests/run_binary.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/event_format.h"

using namespace tally;
using namespace tally::net;
using namespace tally::testing::two_programs;

namespace {

constexpr int kPartitions = 4;


struct Message {
  std::string topic, key, value, pos;
  int32_t partition = 0;
  int64_t offset = 0;
};

class KafkaSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    ASSERT_NE(rk_, nullptr) << errstr;
    mock_ = rd_kafka_mock_cluster_new(rk_, 3);
    ASSERT_NE(mock_, nullptr);
    brokers_ = rd_kafka_mock_cluster_bootstraps(mock_);
    for (const char* t : {"tally.program.1", "tally.program.2"})
      ASSERT_EQ(rd_kafka_mock_topic_create(mock_, t, kPartitions, 3), RD_KAFKA_RESP_ERR_NO_ERROR);
    tally::testing::StackOptions o;
    o.keys = keys();
    o.programs = programs();
    stack_ = std::make_unique<tally::testing::ServerStack>(dir_.sub("data"), std::move(o));
  }
  void TearDown() override {
    stack_.reset();
    if (mock_) rd_kafka_mock_cluster_destroy(mock_);
    if (rk_) rd_kafka_destroy(rk_);
  }
  void load(uint32_t key, uint32_t program, int frames, const std::string& tag) {
    Client c(stack_->client(key));
    std::vector<Event> events;
    std::vector<WireResult> results;
    for (int a = 1; a <= 200; ++a)
      events.push_back(tally::testing::event(EventKind::kEnroll, a, 0, "enroll-" + std::to_string(a), program));
    ASSERT_FALSE(c.submit(events, &results));
    for (int f = 0; f < frames; ++f) {
      events.clear();
      for (int a = 1; a <= 200; ++a)
        events.push_back(tally::testing::event(EventKind::kEarn, a, 100 + f,
                                               tag + "-" + std::to_string(f) + "-" + std::to_string(a), program));
      ASSERT_FALSE(c.submit(events, &results));
    }
  }
  std::vector<std::string> sink_args(std::vector<std::string> extra) {
    std::vector<std::string> a = {"--brokers", brokers_, "--port", std::to_string(stack_->server->port()),
                                  "--key", std::to_string(kReplicaKey)};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::vector<std::string> env(std::vector<std::string> extra = {}) {
    extra.push_back("TALLY_SECRET=" + tally::testing::test_secret(kReplicaKey));
    return extra;
  }
  tally::testing::BinaryRun run_sink(std::vector<std::string> extra, std::vector<std::string> more_env = {}) {
    return tally::testing::run_binary(TALLY_KAFKA_SINK, sink_args(std::move(extra)), env(std::move(more_env)));
  }
  // Every message of `topic`, partition by partition, from the beginning.
  std::vector<Message> consume(const std::string& topic) {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers_.c_str(), errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "kafka-test", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    EXPECT_NE(c, nullptr) << errstr;
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(kPartitions);
    for (int p = 0; p < kPartitions; ++p)
      rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(c, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    std::vector<Message> out;
    std::set<int32_t> at_end;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (at_end.size() < kPartitions && std::chrono::steady_clock::now() < deadline) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 500);
      if (!m) continue;
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        at_end.insert(m->partition);
      } else if (!m->err) {
        Message msg;
        msg.topic = topic;
        msg.partition = m->partition;
        msg.offset = m->offset;
        msg.key.assign(static_cast<const char*>(m->key), m->key_len);
        msg.value.assign(static_cast<const char*>(m->payload), m->len);
        rd_kafka_headers_t* h = nullptr;
        const void* v = nullptr;
        size_t n = 0;
        if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(h, "tally-pos", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
          msg.pos.assign(static_cast<const char*>(v), n);
        out.push_back(std::move(msg));
      } else {
        ADD_FAILURE() << rd_kafka_message_errstr(m);
      }
      rd_kafka_message_destroy(m);
    }
    EXPECT_EQ(at_end.size(), static_cast<size_t>(kPartitions)) << "did not reach the end of " << topic;
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
  }
  // The topics hold every record of the log exactly once, each as the log has it, keyed and
  // partitioned by account, in log order within each partition.
  void expect_exactly_once() {
    std::map<std::string, std::string> want;  // "topic|lsn:index" -> JSON
    std::map<std::string, std::string> want_key;
    stack_->service->ledger().store().scan(1, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
      std::vector<Effect> fx;
      storage::BatchHeader h;
      EXPECT_EQ(storage::decode_batch(bytes, &h, &fx), storage::DecodeError::kOk);
      for (uint32_t i = 0; i < fx.size(); ++i) {
        std::string id = "tally.program." + std::to_string(fx[i].event.program) + "|" + std::to_string(lsn) + ":" +
                         std::to_string(i);
        std::string json;
        append_json(json, fx[i], RecordPos{lsn, i, h.epoch});
        want[id] = json;
        want_key[id] = std::to_string(fx[i].event.account);
      }
      return true;
    });
    size_t seen = 0;
    for (const char* topic : {"tally.program.1", "tally.program.2"}) {
      std::map<int32_t, std::pair<uint64_t, uint32_t>> last_in_partition;
      for (const Message& m : consume(topic)) {
        std::string id = std::string(topic) + "|" + m.pos;
        auto it = want.find(id);
        ASSERT_NE(it, want.end()) << "a message no record explains, or a duplicate: " << id;
        EXPECT_EQ(m.value, it->second) << id;
        EXPECT_EQ(m.key, want_key[id]) << id;
        EXPECT_EQ(m.partition, static_cast<int32_t>(XXH3_64bits(m.key.data(), m.key.size()) % kPartitions)) << id;
        uint64_t lsn = std::stoull(m.pos.substr(0, m.pos.find(':')));
        uint32_t index = static_cast<uint32_t>(std::stoul(m.pos.substr(m.pos.find(':') + 1)));
        auto& last = last_in_partition[m.partition];
        EXPECT_TRUE(std::make_pair(lsn, index) > last) << "out of order in partition " << m.partition << ": " << id;
        last = {lsn, index};
        want.erase(it);
        ++seen;
      }
    }
    EXPECT_TRUE(want.empty()) << want.size() << " records never reached Kafka, e.g. " << want.begin()->first;
    EXPECT_GT(seen, 1000u);
  }
  std::string end_lsn() { return std::to_string(stack_->service->log_range().durable_lsn); }

  rd_kafka_t* rk_ = nullptr;
  rd_kafka_mock_cluster_t* mock_ = nullptr;
  std::string brokers_;
  tally::testing::TempDir dir_{"tally-kafka-test"};
  std::unique_ptr<tally::testing::ServerStack> stack_;
};

}  // namespace

TEST_F(KafkaSinkTest, EveryRecordOnceKeyedByAccountInItsProgramsTopic) {
  load(kPosKey, kProgram, 5, "a");
  load(kOtherPosKey, kOtherProgram, 3, "b");
  tally::testing::BinaryRun r = run_sink({"--to", end_lsn()});
  ASSERT_EQ(r.status, 0) << r.err;
  expect_exactly_once();
}

TEST_F(KafkaSinkTest, KilledBetweenDeliveryAndItsCursorThenRestartedEveryRecordOnce) {
  load(kPosKey, kProgram, 10, "a");
  // Dies right after Kafka confirmed delivery and before the server heard of it: the restart
  // must find those messages in the partitions and not write them again.
  tally::testing::BinaryRun r =
      run_sink({"--to", end_lsn(), "--flush-ms", "0"}, {"TALLY_KAFKA_SINK_TEST_CRASH_AFTER_FLUSH=300"});
  ASSERT_EQ(r.status, 137) << r.err;
  r = run_sink({"--to", end_lsn()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("skipped (already in their partition)"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(" 0 skipped"), std::string::npos) << "the restart found nothing to skip: " << r.err;
  expect_exactly_once();
}

TEST_F(KafkaSinkTest, SigkilledWhileBrokersRefuseProducesThenRestartedEveryRecordOnce) {
  load(kPosKey, kProgram, 4, "a");
  for (int round = 0; round < 3; ++round) {
    // Leadership errors on produce requests: the idempotent producer retries them.
    rd_kafka_mock_push_request_errors(mock_, 0 /* Produce */, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    pid_t pid = tally::testing::start_binary(TALLY_KAFKA_SINK, sink_args({"--flush-ms", "20"}), env());
    ASSERT_GT(pid, 0);
    load(kPosKey, kProgram, 3 + round, "r" + std::to_string(round));  // live, while it follows
    // Killed once its cursor on the server has moved this round (a condition, with a deadline).
    uint64_t before = stack_->service->cursor("kafka-sink").value_or(0);
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);;) {
      if (stack_->service->cursor("kafka-sink").value_or(0) > before) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the sink made no progress";
      std::this_thread::yield();
    }
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
  }
  tally::testing::BinaryRun r = run_sink({"--to", end_lsn()});
  ASSERT_EQ(r.status, 0) << r.err;
  expect_exactly_once();
}
