// Tally tools: a subscriber to a server's change stream (docs/protocol.md, "Subscribe").
//
// Connects, authenticates, subscribes, then hands out the log's batches one at a time, each
// checked before it is returned: a whole batch's hash, and for every batch the chain — LSNs
// consecutive from the start, and each batch's previous-batch hash equal to the hash of the one
// before it (the first one too, when the caller knows the hash it should follow). A batch that
// fails a check ends the stream with an error naming its LSN; nothing after it is returned.
//
// Used by tally-export, the follower and the Kafka sink. One thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/types.h"
#include "net/client.h"
#include "storage/log_codec.h"

namespace tally {

struct LogStreamOptions {
  net::ClientOptions client;
  net::SubscribeRequest request;
  // The hash the first batch must name as its previous batch's (a resume); nullopt: unchecked.
  std::optional<uint64_t> prev_hash;
  // No frame (not even a heartbeat, sent each second) for this long: the connection is dead.
  int64_t silence_timeout_ms = 10'000;
};

struct StreamBatch {
  storage::BatchHeader header;
  std::vector<Effect> records;
  std::vector<uint8_t> bytes;  // the batch as received (whole batches: as stored)
  bool filtered() const { return (header.flags & storage::kBatchFiltered) != 0; }
};

class LogStream {
 public:
  // Connects and subscribes. A refused subscription is an error of kind kServer whose message
  // names the status (and, when trimmed, the oldest LSN the log holds); reply() tells the rest.
  [[nodiscard]] net::ClientError open(const LogStreamOptions& options);
  const net::SubscribeReply& reply() const { return reply_; }

  // The next batch, waiting up to `timeout_ms`; *got = false when none came in time (the stream
  // is still good). Errors end the stream.
  [[nodiscard]] net::ClientError next(StreamBatch* out, int64_t timeout_ms, bool* got);
  // A named consumer's cursor on the server: everything through `lsn` is processed.
  [[nodiscard]] net::ClientError ack(uint64_t lsn);

  uint64_t next_lsn() const { return next_lsn_; }
  uint64_t last_hash() const { return last_hash_; }
  // The server's durable LSN and clock as of the last frame (for lag).
  uint64_t server_durable_lsn() const { return prefix_.durable_lsn; }
  int64_t server_time_ms() const { return prefix_.server_time_ms; }
  void close();

 private:
  LogStreamOptions options_;
  std::optional<net::Connection> conn_;
  net::SubscribeReply reply_;
  net::StreamPrefix prefix_;
  uint64_t next_lsn_ = 0;
  std::optional<uint64_t> expect_prev_;
  uint64_t last_hash_ = 0;
  net::Reply frame_;
  std::vector<std::span<const uint8_t>> pending_;  // batches of frame_ not yet handed out
  size_t pending_at_ = 0;
  int64_t last_frame_ms_ = 0;
};

}  // namespace tally
