// tally-kafka-sink: the change stream into Kafka, exactly once towards the topics across restarts
// (docs/kafka.md).
//
// Each committed record becomes one message: value = the record as JSON (docs/events.md, schema
// 1), key = the account id (decimal), topic = the program's (--topic, with {program} replaced),
// partition = XXH3-64(key) mod the topic's partition count (so one member's records stay in order
// in one partition), headers `tally-pos` = "LSN:INDEX" and `tally-schema` = "1". The producer is
// idempotent (retries never duplicate or reorder within a partition).
//
// Exactly once across restarts and crashes:
//   - The sink acknowledges a batch to the server (its named cursor, `--name`) only after every
//     message up to it was delivered (acknowledged by all in-sync replicas: acks=all), and resumes
//     after that cursor.
//   - Between the cursor and what was delivered before a crash (produced, delivered, not yet
//     acknowledged to the server), it reads the last message of every partition of each topic it
//     writes and skips every record whose position is at or before the last one in the partition
//     it goes to. Positions grow along each partition (idempotent producer, one partition per key),
//     so that check is exact: nothing is written twice, nothing is skipped.
#include <librdkafka/rdkafka.h>
#include <xxhash.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/event_format.h"
#include "tools/log_stream.h"

namespace {

using namespace tally;

constexpr int kExitOk = 0, kExitUsage = 2, kExitConnect = 3, kExitStream = 4, kExitKafka = 5;

constexpr const char* kHelp = R"(tally-kafka-sink: a Tally server's committed events into Kafka, exactly once.

usage: tally-kafka-sink --brokers HOST:PORT[,...] [options]

Follows the server's change stream (a replica key: every program; a reader key: its own) and
writes each record as a JSON message (docs/events.md) keyed by account, to its program's topic.
Restart it at any time, or after a crash: it resumes exactly (docs/kafka.md).

  --brokers LIST      Kafka bootstrap servers
  --topic T           topic name; {program} is replaced by the program id
                      (default tally.program.{program})
  --property K=V      any librdkafka producer property (security.protocol, sasl.*, ssl.*, ...);
                      repeatable
  --name CONSUMER     the sink's cursor on the server (default kafka-sink)
  --from LSN          where to start when the server has no cursor of that name (default: the
                      oldest the server holds)
  --to LSN            stop after this batch (default: follow until SIGINT or SIGTERM)
  --flush-ms N        deliver and acknowledge at least every N ms (default 500)
  --host H --port N   the Tally server (default 127.0.0.1:7411)
  --key ID            API key id (default $TALLY_KEY); secret from $TALLY_SECRET
  -h, --help          this text

exit status: 0 done; 2 usage; 3 cannot reach or subscribe to the server; 4 the stream failed a
check; 5 Kafka refused a message for good (nothing after it is acknowledged to the server).
)";

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Pos {
  uint64_t lsn = 0;
  uint32_t index = 0;
  bool operator<=(const Pos& o) const { return lsn != o.lsn ? lsn < o.lsn : index <= o.index; }
};

std::optional<Pos> parse_pos(std::string_view s) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  Pos p;
  p.lsn = std::strtoull(std::string(s.substr(0, colon)).c_str(), nullptr, 10);
  p.index = static_cast<uint32_t>(std::strtoul(std::string(s.substr(colon + 1)).c_str(), nullptr, 10));
  return p;
}

struct Topic {
  rd_kafka_topic_t* handle = nullptr;
  int partitions = 0;
  std::vector<std::optional<Pos>> last;  // per partition: the last record already in it
};

struct Sink {
  rd_kafka_t* producer = nullptr;
  std::map<std::string, std::string> properties;
  std::map<std::string, Topic> topics;
  std::string failure;  // a message Kafka refused for good
  uint64_t delivered = 0;

  ~Sink() {
    for (auto& [name, t] : topics) rd_kafka_topic_destroy(t.handle);
    if (producer) rd_kafka_destroy(producer);
  }
};

void delivery_report(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* sink = static_cast<Sink*>(opaque);
  if (m->err) {
    if (sink->failure.empty())
      sink->failure = std::string("delivery to ") + rd_kafka_topic_name(m->rkt) + " failed: " + rd_kafka_err2str(m->err);
  } else {
    ++sink->delivered;
  }
}

rd_kafka_conf_t* make_conf(const std::map<std::string, std::string>& props, std::string* error) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      *error = k + ": " + errstr;
      rd_kafka_conf_destroy(conf);
      return nullptr;
    }
  }
  return conf;
}

// The last message of each partition of `name`: its tally-pos header (a consumer of its own,
// reading one message per partition).
bool read_last_positions(const std::map<std::string, std::string>& props, const std::string& name, Topic* t,
                         std::string* error) {
  std::map<std::string, std::string> cprops;
  for (const auto& [k, v] : props)
    if (k == "bootstrap.servers" || k.rfind("security.", 0) == 0 || k.rfind("sasl.", 0) == 0 || k.rfind("ssl.", 0) == 0)
      cprops[k] = v;
  cprops["group.id"] = "tally-kafka-sink-resume";
  cprops["enable.auto.commit"] = "false";
  cprops["enable.partition.eof"] = "true";
  rd_kafka_conf_t* conf = make_conf(cprops, error);
  if (!conf) return false;
  char errstr[512];
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (!c) {
    *error = errstr;
    return false;
  }
  bool ok = true;
  t->last.assign(static_cast<size_t>(t->partitions), std::nullopt);
  rd_kafka_topic_partition_list_t* assign = rd_kafka_topic_partition_list_new(t->partitions);
  int wanted = 0;
  for (int p = 0; p < t->partitions && ok; ++p) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(c, name.c_str(), p, &low, &high, 10'000);
    if (err) {
      *error = "watermarks of " + name + "/" + std::to_string(p) + ": " + rd_kafka_err2str(err);
      ok = false;
    } else if (high > low) {
      rd_kafka_topic_partition_list_add(assign, name.c_str(), p)->offset = high - 1;
      ++wanted;
    }
  }
  if (ok && wanted > 0) {
    rd_kafka_assign(c, assign);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int found = 0;
    while (found < wanted && std::chrono::steady_clock::now() < deadline) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 500);
      if (!m) continue;
      if (!m->err) {
        rd_kafka_headers_t* hdrs = nullptr;
        const void* v = nullptr;
        size_t n = 0;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, "tally-pos", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          auto& slot = t->last[static_cast<size_t>(m->partition)];
          std::optional<Pos> pos = parse_pos(std::string_view(static_cast<const char*>(v), n));
          if (pos && (!slot || !(*pos <= *slot))) slot = pos;
        }
        ++found;
      } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        *error = std::string("reading the last messages of ") + name + ": " + rd_kafka_message_errstr(m);
        ok = false;
      }
      rd_kafka_message_destroy(m);
      if (!ok) break;
    }
    if (ok && found < wanted) {
      *error = "reading the last messages of " + name + ": timed out";
      ok = false;
    }
  }
  rd_kafka_topic_partition_list_destroy(assign);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  return ok;
}

Topic* topic_for(Sink& s, const std::string& name, std::string* error) {
  auto it = s.topics.find(name);
  if (it != s.topics.end()) return &it->second;
  Topic t;
  t.handle = rd_kafka_topic_new(s.producer, name.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(s.producer, 0, t.handle, &md, 10'000);
  if (err || md->topic_cnt != 1 || md->topics[0].err) {
    *error = "metadata of topic " + name + ": " +
             rd_kafka_err2str(err ? err : (md && md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN));
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t.handle);
    return nullptr;
  }
  t.partitions = md->topics[0].partition_cnt;
  rd_kafka_metadata_destroy(md);
  if (t.partitions <= 0 || !read_last_positions(s.properties, name, &t, error)) {
    if (error->empty()) *error = "topic " + name + " has no partitions";
    rd_kafka_topic_destroy(t.handle);
    return nullptr;
  }
  return &s.topics.emplace(name, t).first->second;
}

int usage_error(const std::string& m) {
  std::fprintf(stderr, "tally-kafka-sink: %s (see --help)\n", m.c_str());
  return kExitUsage;
}

int run(int argc, char** argv) {
  LogStreamOptions so;
  so.client.host = "127.0.0.1";
  so.client.port = 7411;
  std::string topic_template = "tally.program.{program}", name = "kafka-sink";
  std::map<std::string, std::string> props;
  std::optional<uint64_t> from, to;
  int64_t flush_ms = 500;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return kExitOk;
    }
    if (i + 1 >= argc) return usage_error(std::string(a) + " needs a value, or is not an option");
    std::string v = argv[++i];
    if (a == "--brokers") props["bootstrap.servers"] = v;
    else if (a == "--topic") topic_template = v;
    else if (a == "--property") {
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) return usage_error("--property needs KEY=VALUE");
      props[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (a == "--name") name = v;
    else if (a == "--from") from = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--to") to = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--flush-ms") flush_ms = std::strtoll(v.c_str(), nullptr, 10);
    else if (a == "--host") so.client.host = v;
    else if (a == "--port") so.client.port = static_cast<uint16_t>(std::strtoul(v.c_str(), nullptr, 10));
    else if (a == "--key") so.client.key_id = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    else return usage_error("unknown option " + std::string(a));
  }
  if (!props.count("bootstrap.servers")) return usage_error("--brokers is needed");
  if (!net::valid_consumer_name(name)) return usage_error("--name: 1 to 64 of A-Z a-z 0-9 . _ -");
  if (so.client.key_id == 0 && std::getenv("TALLY_KEY")) so.client.key_id = static_cast<uint32_t>(std::atoi(std::getenv("TALLY_KEY")));
  if (const char* s = std::getenv("TALLY_SECRET")) so.client.secret = s;
  if (so.client.key_id == 0 || so.client.secret.empty()) return usage_error("a key: --key ID (or TALLY_KEY) and TALLY_SECRET");
  // The producer's guarantees: idempotent (no duplicates, order kept per partition on retries),
  // every in-sync replica has a message before it counts as delivered.
  props["enable.idempotence"] = "true";
  props["acks"] = "all";

  Sink sink;
  sink.properties = props;
  std::string error;
  rd_kafka_conf_t* conf = make_conf(props, &error);
  if (!conf) return usage_error("--property " + error);
  rd_kafka_conf_set_dr_msg_cb(conf, delivery_report);
  rd_kafka_conf_set_opaque(conf, &sink);
  char errstr[512];
  sink.producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!sink.producer) {
    std::fprintf(stderr, "tally-kafka-sink: %s\n", errstr);
    return kExitKafka;
  }

  so.request.name = name;
  so.request.flags = net::kSubscribeResume;
  so.request.from_lsn = from.value_or(0);
  LogStream st;
  if (net::ClientError e = st.open(so)) {
    std::fprintf(stderr, "tally-kafka-sink: %s:%u: %s\n", so.client.host.c_str(), so.client.port, e.message.c_str());
    return kExitConnect;
  }
  std::fprintf(stderr, "tally-kafka-sink: from LSN %lu (cursor %s: %lu)\n", st.reply().start_lsn, name.c_str(),
               st.reply().cursor);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const char* crash_after_flush = std::getenv("TALLY_KAFKA_SINK_TEST_CRASH_AFTER_FLUSH");  // tests only

  uint64_t produced_through = 0, skipped = 0, produced = 0;
  auto last_flush = std::chrono::steady_clock::now();
  std::string value, topic_name, key, pos;
  StreamBatch b;
  // Everything produced so far delivered, then the server's cursor moved to it.
  auto flush = [&]() -> int {
    while (rd_kafka_outq_len(sink.producer) > 0 && sink.failure.empty() && !g_stop) rd_kafka_flush(sink.producer, 1000);
    last_flush = std::chrono::steady_clock::now();
    // Stopped while Kafka is unreachable: nothing undelivered is acknowledged; the restart resumes.
    if (rd_kafka_outq_len(sink.producer) > 0 && sink.failure.empty()) return kExitOk;
    if (!sink.failure.empty()) {
      std::fprintf(stderr, "tally-kafka-sink: %s; nothing after it is acknowledged\n", sink.failure.c_str());
      return kExitKafka;
    }
    if (produced_through == 0) return kExitOk;
    if (crash_after_flush && produced >= std::strtoull(crash_after_flush, nullptr, 10)) std::_Exit(137);
    (void)st.ack(produced_through);
    return kExitOk;
  };
  while (!g_stop && (!to || st.next_lsn() <= *to)) {
    bool got = false;
    if (net::ClientError e = st.next(&b, 100, &got)) {
      int rc = flush();
      std::fprintf(stderr, "tally-kafka-sink: %s\n", e.message.c_str());
      return rc != kExitOk ? rc : kExitStream;
    }
    if (got) {
      for (uint32_t i = 0; i < b.records.size(); ++i) {
        const Effect& f = b.records[i];
        topic_name = topic_template;
        for (size_t at; (at = topic_name.find("{program}")) != std::string::npos;)
          topic_name.replace(at, 9, std::to_string(f.event.program));
        Topic* t = topic_for(sink, topic_name, &error);
        if (!t) {
          std::fprintf(stderr, "tally-kafka-sink: %s\n", error.c_str());
          return kExitKafka;
        }
        key = std::to_string(f.event.account);
        auto partition = static_cast<int32_t>(XXH3_64bits(key.data(), key.size()) % static_cast<uint64_t>(t->partitions));
        Pos here{b.header.lsn, i};
        const std::optional<Pos>& last = t->last[static_cast<size_t>(partition)];
        if (last && here <= *last) {
          ++skipped;  // delivered before the last crash or stop: already in the partition
          continue;
        }
        value.clear();
        append_json(value, f, RecordPos{b.header.lsn, i, b.header.epoch});
        pos = std::to_string(b.header.lsn) + ":" + std::to_string(i);
        for (;;) {
          rd_kafka_resp_err_t err = rd_kafka_producev(
              sink.producer, RD_KAFKA_V_RKT(t->handle), RD_KAFKA_V_PARTITION(partition),
              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.data(), key.size()),
              RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_HEADER("tally-pos", pos.data(), pos.size()),
              RD_KAFKA_V_HEADER("tally-schema", "1", 1), RD_KAFKA_V_END);
          if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(sink.producer, 100);  // the producer's queue is full: wait for deliveries
            continue;
          }
          if (err) {
            std::fprintf(stderr, "tally-kafka-sink: producing to %s: %s\n", topic_name.c_str(), rd_kafka_err2str(err));
            return kExitKafka;
          }
          break;
        }
        ++produced;
      }
      produced_through = b.header.lsn;
    }
    rd_kafka_poll(sink.producer, 0);
    if (std::chrono::steady_clock::now() - last_flush >= std::chrono::milliseconds(flush_ms) || (!got && produced_through)) {
      if (int rc = flush()) return rc;
    }
  }
  if (int rc = flush()) return rc;
  std::fprintf(stderr, "tally-kafka-sink: %lu messages produced, %lu skipped (already in their partition), through LSN %lu\n",
               produced, skipped, produced_through);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally-kafka-sink: %s\n", e.what());
    return kExitStream;
  }
}
